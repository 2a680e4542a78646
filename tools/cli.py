"""Command line: `python -m tools.cli SUBCOMMAND ...` (run `--help` for the list).

Each subcommand parses its flags, calls one function of `tools.api` and prints the result.
Progress goes to stderr as tqdm bars; an error prints one line (what went wrong and how to fix it)
and exits non-zero. Heavy modules are imported only inside the handlers, so `--help` is fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

from infer_pack.errors import CancelledError, RVCError, UserInputError

# Mirrors of the API's choices, kept here so --help needs no heavy import (a test checks they agree).
F0_METHODS = ("rmvpe", "pm", "harvest", "dio", "swift")
PITCH_GAPS = ("keep", "interpolate")  # infer_pack.pipeline's PITCH_GAP_MODES (not imported: --help stays fast)
F0_DEFAULT_HELP = "pitch method for the training data (default: rmvpe when rmvpe.pt is present, else swift)"
OUTPUT_FORMATS = ("wav", "flac", "mp3", "m4a")
SAMPLE_RATES = ("32k", "40k", "48k")
VERSIONS = ("v1", "v2")
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_READER_GONE = 141  # 128 + SIGPIPE: what a shell reports for a tool cut off by `| head`


class TqdmProgress:
    """A ProgressCallback drawing one tqdm bar per step on stderr (a new bar when the total changes)."""

    def __init__(self, enabled: bool = True, unit: str = "it") -> None:
        self._enabled = enabled
        self._unit = unit
        self._bar: Any = None
        self._total: int | None = None
        self._label: str | None = None

    def __call__(self, done: int, total: int, message: str) -> None:
        if not self._enabled:
            return
        from tqdm import tqdm

        step = _step_label(message)
        if self._bar is None or total != self._total or (step != self._label and done == 0):
            self.close()
            self._bar = tqdm(
                total=total or None, file=sys.stderr, dynamic_ncols=True, leave=True, unit=self._unit,
                unit_scale=self._unit == "B", unit_divisor=1024,
            )
            self._total, self._label = total, step
        self._bar.n = done
        self._bar.set_description_str(message[:60], refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _step_label(message: str) -> str:
    """The message without a trailing 'k/n' counter, so per-item updates stay on one bar."""
    head, _, tail = message.rpartition(" ")
    return head if "/" in tail and tail.replace("/", "").isdigit() else message


def _project(args: argparse.Namespace) -> Any:
    from tools.project import Project

    return Project.at(args.root)


def _print_result(result: Any) -> None:
    """Print a result: its `summary()` when it has one, else its fields one per line."""
    from dataclasses import fields, is_dataclass

    if result is None:
        return
    summary = getattr(result, "summary", None)
    if callable(summary):
        print(summary())
    elif is_dataclass(result) and not isinstance(result, type):
        for item in fields(result):
            value = getattr(result, item.name)
            if hasattr(value, "shape") and getattr(value, "size", 0) > 16:
                value = f"<array {tuple(value.shape)}>"
            print(f"{item.name}: {value}")
    else:
        print(result)


# --- argument groups shared by several subcommands -------------------------------------------------


def _add_conversion_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per conversion parameter, made from its spec (name, default, range, help: ConversionParams)."""
    from tools.api import conversion_param_specs
    from tools.api.specs import add_spec_flags

    group = parser.add_argument_group("conversion parameters (RVC's defaults)")
    group.add_argument("--index", default=None, help="feature index (.index); default: none")
    # f0 method None: rmvpe if rmvpe.pt is there, else swift
    add_spec_flags(group, conversion_param_specs(), defaults={"f0_method": None},
                   shown_defaults={"f0_method": "rmvpe when rmvpe.pt is present, else swift"})
    group.add_argument("--f0-file", default=None, help="pitch curve replacing the extracted pitch: RVC's 'time_s,hz' "
                       "text, or the JSON the Convert tab's pitch editor saves")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")


def _add_experiment_flags(parser: argparse.ArgumentParser, *, sample_rate: bool = True, prepared: bool = True) -> None:
    """Experiment settings; with `prepared`, omitted values mean 'what the experiment was prepared for'."""
    parser.add_argument("--experiment", "-e", required=True, help="experiment name (folder under logs/)")
    as_prepared = "default: as the experiment was prepared"
    if sample_rate:
        parser.add_argument("--sample-rate", choices=SAMPLE_RATES, default=None if prepared else "40k",
                            help=as_prepared if prepared else "default: 40k")
    parser.add_argument("--version", choices=VERSIONS, default=None if prepared else "v2",
                        help=f"{as_prepared} (v2 for a new one)" if prepared else "default: v2")
    parser.add_argument("--no-f0", dest="use_f0", action="store_const", const=False, default=None if prepared else True,
                        help="without pitch guidance (speech-only voices)")


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per training setting, made from its spec (tools.api.training.TrainRequest)."""
    from tools.api import training_param_specs
    from tools.api.specs import add_spec_flags

    add_spec_flags(parser.add_argument_group("training settings"), training_param_specs())


def build_parser() -> argparse.ArgumentParser:
    from tools.api.specs import add_spec_flags, conversion_param_specs, separation_param_specs, stream_param_specs

    parser = argparse.ArgumentParser(prog="python -m tools.cli", description="RVC Workbench command line")
    parser.add_argument("--root", default=".", help="project folder holding logs/, weights/ and assets (default: .)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], Any], help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    p = add("convert", _cmd_convert, "convert one audio file with a voice")
    p.add_argument("--model", "-m", required=True, help="voice name in weights/ or a .pth path")
    p.add_argument("--input", "-i", required=True, help="audio file to convert")
    p.add_argument("--output", "-o", required=True, help="file to write; its extension picks the format (.wav, .flac, .mp3, .m4a)")
    _add_conversion_flags(p)

    p = add("batch", _cmd_batch, "convert every audio file in a folder")
    p.add_argument("--model", "-m", required=True, help="voice name in weights/ or a .pth path")
    p.add_argument("--input-dir", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--format", default="wav", choices=OUTPUT_FORMATS, help="default: wav")
    p.add_argument("--zip", action="store_true", help="also put the results in <output-dir>/<voice>-converted.zip")
    _add_conversion_flags(p)

    p = add("preprocess", _cmd_preprocess, "slice and resample a dataset into an experiment")
    p.add_argument("--experiment", "-e", required=True)
    p.add_argument("--dataset", "-d", required=True, help="folder of audio files")
    p.add_argument("--sample-rate", choices=SAMPLE_RATES, default="40k")
    p.add_argument("--speaker-id", type=int, default=0)
    p.add_argument("--processes", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    add_spec_flags(p, {"decoder": conversion_param_specs()["decoder"]})  # the same choice conversions have
    p.add_argument("--held-out", type=float, default=3.0, metavar="PERCENT",
                   help="share of the clips set aside for validation (whole files where there are several, at "
                   "least 10 s; never trained on nor indexed); 0: none (default: 3)")

    p = add("extract", _cmd_extract, "extract pitch and content features of a preprocessed experiment")
    _add_experiment_flags(p, sample_rate=False)
    p.add_argument("--f0-method", choices=F0_METHODS, default=None, help=F0_DEFAULT_HELP)
    p.add_argument("--pitch-gaps", choices=PITCH_GAPS, default="interpolate",
                   help="unvoiced frames of the training pitch: fill them (current RVC) or keep them at 0 "
                        "(RVC up to 2024) (default: interpolate)")
    p.add_argument("--processes", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")

    p = add("train", _cmd_train, "train a voice on an extracted experiment")
    _add_experiment_flags(p)
    _add_training_flags(p)

    p = add("index", _cmd_index, "build the feature index of an experiment")
    p.add_argument("--experiment", "-e", required=True)
    p.add_argument("--version", choices=VERSIONS, default=None, help="default: as the experiment was prepared")
    p.add_argument("--kind", default="ivf_flat",
                   help="index type (default: ivf_flat, RVC's; ivf_pqfs is the recommendation measured by "
                   "`bench --only index`; the README's index section lists every kind)")

    p = add("one-click", _cmd_one_click, "preprocess, extract, train and index in one go")
    _add_experiment_flags(p, prepared=False)
    p.add_argument("--dataset", "-d", required=True, help="folder of audio files")
    p.add_argument("--f0-method", choices=F0_METHODS, default=None, help=F0_DEFAULT_HELP)
    p.add_argument("--processes", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    _add_training_flags(p)

    p = add("info", _cmd_info, "show a voice model's metadata")
    p.add_argument("--model", "-m", required=True)

    p = add("change-info", _cmd_change_info, "change the info text stored in a voice model")
    p.add_argument("--model", "-m", required=True)
    p.add_argument("--info", required=True)
    p.add_argument("--save-as", default=None, help="voice name to write instead of overwriting")

    p = add("merge", _cmd_merge, "blend two voices of the same architecture")
    p.add_argument("--model-a", required=True)
    p.add_argument("--model-b", required=True)
    p.add_argument("--ratio", type=float, default=0.5, help="weight of model A, 0..1 (default: 0.5)")
    p.add_argument("--name", required=True, help="name of the merged voice (written to weights/)")
    p.add_argument("--info", default="", help="info text for the merged voice")

    p = add("extract-model", _cmd_extract_model, "extract a small voice from a training checkpoint")
    p.add_argument("--checkpoint", required=True, help="logs/<experiment>/G_*.pth")
    p.add_argument("--name", required=True, help="voice name to write into weights/")
    p.add_argument("--sample-rate", choices=SAMPLE_RATES, default=None, help="default: read from the weights")
    p.add_argument("--version", choices=VERSIONS, default=None, help="default: read from the weights")
    pitch = p.add_mutually_exclusive_group()
    pitch.add_argument("--f0", dest="use_f0", action="store_const", const=True, default=None)
    pitch.add_argument("--no-f0", dest="use_f0", action="store_const", const=False)
    p.add_argument("--info", default="")

    p = add("export-onnx", _cmd_export_onnx, "export a voice to ONNX")
    p.add_argument("--model", "-m", required=True)
    p.add_argument("--output", "-o", default=None, help="ONNX file (default: next to the voice)")

    p = add("separate", _cmd_separate, "split songs into vocals and accompaniment (UVR5 / MDX models)")
    p.add_argument("--model", "-m", required=True,
                   help="file under uvr5_weights/, a path, or a download name (uvr5-hp5, ...: see `download --help`)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", "-i", help="one audio file")
    source.add_argument("--input-dir", help="every audio file of this folder")
    p.add_argument("--output-dir", "-o", default=None, help="default: <root>/outputs/separated")
    add_spec_flags(p, separation_param_specs())
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")

    p = add("download", _cmd_download, "download missing assets (hubert_base.pt, rmvpe.pt, pretrained G/D)")
    p.add_argument("assets", nargs="*", help="asset names (default: every missing one)")

    add("assets", _cmd_assets, "list which assets are present")

    p = add("realtime", _cmd_realtime, "live voice conversion between sound devices (or a file streamed block by block)")
    p.add_argument("--list-devices", action="store_true", help="list the sound devices and exit")
    p.add_argument("--model", "-m", default=None, help="voice name in weights/ or a .pth path")
    p.add_argument("--input-device", default=None, help="index or name part (default: the system's input)")
    p.add_argument("--output-device", default=None, help="index or name part (default: the system's output)")
    p.add_argument("--input-file", default=None, help="stream this file instead of a microphone (no sound card needed)")
    p.add_argument("--output-file", default=None, help="with --input-file: the WAV to write")
    p.add_argument("--sample-rate", type=int, default=None, help="device rate in Hz (default: the input device's)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument("--index", default=None, help="feature index (.index); default: none")
    group = p.add_argument_group("stream settings (RVC realtime defaults)")
    add_spec_flags(group, stream_param_specs(), defaults={"f0_method": None},
                   shown_defaults={"f0_method": "rmvpe when rmvpe.pt is present, else swift"})
    group.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, one per core; fewer leave room for other programs)")
    group.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    return parser


# --- handlers ------------------------------------------------------------------------------------

def _progress(args: argparse.Namespace, unit: str = "it") -> TqdmProgress:
    return TqdmProgress(enabled=not args.quiet, unit=unit)


def _run(args: argparse.Namespace, call: Callable[[TqdmProgress], Any], unit: str = "it") -> Any:
    """Call an API function with a progress bar; print its result."""
    bar = _progress(args, unit)
    try:
        result = call(bar)
    finally:
        bar.close()
    _print_result(result)
    return result


def _conversion_fields(args: argparse.Namespace) -> dict[str, Any]:
    from tools.api import conversion_param_specs
    from tools.api.specs import spec_values

    fields = spec_values(args, conversion_param_specs())
    return {**fields, "index_path": args.index, "device": args.device}


def _cmd_convert(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from tools import api
    from tools.api.convert import OUTPUT_FORMATS, OutputFormat

    model = _voice(args, args.model)
    output = Path(args.output)
    fmt = output.suffix.lstrip(".").lower() or "wav"
    if fmt not in OUTPUT_FORMATS:
        raise UserInputError(f"--output {str(output)!r}: cannot write .{fmt}; end the name with "
                             + ", ".join(f".{f}" for f in OUTPUT_FORMATS))
    return _run(args, lambda bar: api.convert_voice(
        project=args.root, model=model, input_path=args.input, output_path=output, f0_file=args.f0_file,
        output_format=cast("OutputFormat", fmt), progress=bar, **_conversion_fields(args),
    ))


def _cmd_batch(args: argparse.Namespace) -> int:
    from tools import api

    model = _voice(args, args.model)
    fields = _conversion_fields(args)
    if args.f0_file:
        raise UserInputError("--f0-file applies to one input; use `convert` for it")
    result = _run(args, lambda bar: api.convert_batch(
        project=args.root, model=model, input_dir=args.input_dir, output_dir=args.output_dir,
        output_format=args.format, zip_results=args.zip, progress=bar, **fields,
    ))
    return EXIT_ERROR if result.failed else 0


def _cmd_separate(args: argparse.Namespace) -> int:
    from tools import api
    from tools.api.specs import separation_param_specs, spec_values

    result = _run(args, lambda bar: api.separate_audio(
        project=args.root, model=args.model, input_path=args.input, input_dir=args.input_dir,
        output_dir=args.output_dir, **spec_values(args, separation_param_specs()), device=args.device, progress=bar,
    ))
    return EXIT_ERROR if result.failed else 0


def _cmd_preprocess(args: argparse.Namespace) -> Any:
    from tools import api

    return _run(args, lambda bar: api.preprocess_dataset(
        project=args.root, experiment=args.experiment, dataset_dir=args.dataset, sample_rate_tag=args.sample_rate,
        speaker_id=args.speaker_id, n_processes=args.processes, decoder=args.decoder, held_out_percent=args.held_out,
        progress=bar,
    ))


def _cmd_extract(args: argparse.Namespace) -> Any:
    from tools import api

    return _run(args, lambda bar: api.extract_features(
        project=args.root, experiment=args.experiment, version=args.version, use_f0=args.use_f0,
        f0_method=args.f0_method, interpolate_unvoiced=args.pitch_gaps == "interpolate", n_processes=args.processes,
        device=args.device, progress=bar,
    ))


@contextlib.contextmanager
def _stop_on_ctrl_c(cancel: Any) -> Iterator[None]:
    """First Ctrl-C asks the step to stop cleanly (training saves a checkpoint); a second one aborts."""
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        print("\nstopping after the current step (Ctrl-C again to abort)", file=sys.stderr)
        cancel.cancel()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _training_fields(args: argparse.Namespace) -> dict[str, Any]:
    from tools.api import training_param_specs
    from tools.api.specs import spec_values

    experiment = {"experiment": args.experiment, "version": args.version, "sample_rate_tag": args.sample_rate,
                  "use_f0": args.use_f0}
    return {**experiment, **spec_values(args, training_param_specs())}


def _cmd_train(args: argparse.Namespace) -> int:
    from infer_pack.progress import CancelToken
    from tools import api

    cancel = CancelToken()
    with _stop_on_ctrl_c(cancel):
        _run(args, lambda bar: api.train_model(args.root, bar, cancel, **_training_fields(args)))
    return 0


def _cmd_index(args: argparse.Namespace) -> Any:
    from tools import api

    return _run(args, lambda bar: api.train_index(
        project=args.root, experiment=args.experiment, version=args.version, kind=args.kind, progress=bar,
    ))


def _cmd_one_click(args: argparse.Namespace) -> int:
    from infer_pack.progress import CancelToken
    from tools import api

    fields = _training_fields(args)
    cancel = CancelToken()
    with _stop_on_ctrl_c(cancel):
        _run(args, lambda bar: api.one_click(
            project=args.root, dataset_dir=args.dataset, f0_method=args.f0_method, n_processes=args.processes,
            progress=bar, cancel=cancel, **fields,
        ))
    return 0


def _voice(args: argparse.Namespace, value: str) -> Any:
    """A voice given as a name in weights/ (no separator) or as a path."""
    return _project(args).resolve_voice(value, "--model", confined=False)


def _cmd_info(args: argparse.Namespace) -> Any:
    from tools import api

    path = _voice(args, args.model)
    return _run(args, lambda bar: api.show_voice_info(path=path))


def _cmd_change_info(args: argparse.Namespace) -> Any:
    from tools import api

    path = _voice(args, args.model)
    target = _project(args).voice_path(args.save_as) if args.save_as else None
    return _run(args, lambda bar: api.change_voice_info(path=path, info=args.info, output_path=target))


def _cmd_merge(args: argparse.Namespace) -> Any:
    from tools import api

    path_a, path_b = _voice(args, args.model_a), _voice(args, args.model_b)
    target = _project(args).voice_path(args.name)
    return _run(args, lambda bar: api.merge_voices(
        path_a=path_a, path_b=path_b, ratio_a=args.ratio, output_path=target, info=args.info, progress=bar,
    ))


def _cmd_extract_model(args: argparse.Namespace) -> Any:
    from tools import api

    target = _project(args).voice_path(args.name)
    return _run(args, lambda bar: api.extract_small_model(
        checkpoint_path=args.checkpoint, output_path=target, sample_rate_tag=args.sample_rate,
        version=args.version, use_f0=args.use_f0, info=args.info,
    ))


def _cmd_export_onnx(args: argparse.Namespace) -> Any:
    from tools import api

    path = _voice(args, args.model)
    return _run(args, lambda bar: api.export_onnx(path=path, output_path=args.output))


def _cmd_download(args: argparse.Namespace) -> int:
    from tools import api

    # the summary printed names each failed file and why (e.g. the hub is unreachable)
    result = _run(args, lambda bar: api.download_assets(args.assets or None, args.root, progress=bar), unit="B")
    return 0 if result.ok else EXIT_ERROR


def _cmd_assets(args: argparse.Namespace) -> int:
    from tools import api

    status = api.asset_status(args.root)
    for state in status.assets:
        if state.present:
            mark = "ok"
        elif state.size_bytes is not None:
            mark = "unpublished"  # present, not the published file: a custom one or a cut-short copy (used as it is)
        else:
            mark = "partial" if state.partial_bytes else "missing"
        print(f"{mark:>8}  {state.group:<18} {state.path}")
    print(status.summary())
    return 0


def _cmd_realtime(args: argparse.Namespace) -> Any:
    from tools import api
    from tools.api.assets import default_f0_method
    from tools.api.realtime import stream_settings
    from tools.api.specs import spec_values, stream_param_specs

    if args.list_devices:
        return _run(args, lambda bar: api.list_audio_devices())
    if args.model is None:
        raise UserInputError("give --model (a voice), or --list-devices")
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    values = spec_values(args, stream_param_specs())
    settings = stream_settings(**{**values, "f0_method": values["f0_method"] or default_f0_method(args.root)})
    common = {"project": args.root, "model": _voice(args, args.model), "settings": settings, "index_path": args.index,
              "device": args.device}  # fmt: skip
    if args.input_file:
        if not args.output_file:
            raise UserInputError("--input-file needs --output-file (the WAV to write)")
        return _run(args, lambda bar: api.stream_file(input_path=args.input_file, output_path=args.output_file,
                                                      sample_rate=args.sample_rate or 48000, progress=bar, **common))  # fmt: skip
    return _run(args, lambda bar: api.run_realtime(input_device=args.input_device, output_device=args.output_device,
                                                   sample_rate=args.sample_rate, duration_s=args.duration, progress=bar,
                                                   **common))  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # here, not at interpreter exit, so a closed pipe is caught below
    except BrokenPipeError:
        return _reader_gone()


def _reader_gone() -> int:
    """The reader of stdout left (`... | head -1`): stop quietly. Later writes (Python's own flush at
    exit) go to /dev/null so no 'Exception ignored ... BrokenPipeError' follows."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_READER_GONE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except BrokenPipeError:
        raise
    except ModuleNotFoundError as exc:
        print(
            f"error: {exc} in {sys.executable}: run the command line with the project's Python, "
            '`.venv/bin/python -m tools.cli ...` or `make cli ARGS="..."` (`make setup` installs the packages)',
            file=sys.stderr,
        )
        return EXIT_ERROR
    except CancelledError as exc:
        if exc.result is not None:  # what the step saved at the stop (training's checkpoint and voice)
            _print_result(exc.result)
        print(f"stopped: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted; finished items are kept and a rerun resumes", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RVCError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: one line by default, the traceback on request
        if os.environ.get("RVC_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (set RVC_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_ERROR
    if isinstance(result, int):
        return result
    return 0


if __name__ == "__main__":
    sys.exit(main())
