"""Vocal/accompaniment separation: UVR5 VR files (.pth) and MDX-Net ONNX files, built here with random
weights in the real formats; the engine, the API, the CLI and the asset names."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import REPO_ROOT

from infer_pack.errors import AssetMissingError, CancelledError, ModelFileError, UnsafeFileError
from infer_pack.progress import CancelToken
from infer_pack.separation import bands, load_separator, load_stereo
from infer_pack.separation.bands import Band, BandParams
from infer_pack.separation.mdx import MdxParams, load_mdx_separator
from infer_pack.separation.vr import load_vr_separator
from infer_pack.separation.vr_nets import CascadedASPPNet
from tools import assets
from tools.api.separate import model_choices, separate_audio, stem_paths

SR = 44100
# One small 8 kHz band: the network's weights do not depend on the bands, so a file in the real layout
# runs over 33 rows instead of 673 and the tests stay fast. The real 4band_v2 is tested on its own below.
SMALL_RATE = 8000
SMALL = BandParams("test-1band", (Band(SMALL_RATE, 32, 64, 0, 32),), bins=32, pre_filter_start=0, pre_filter_stop=0)
SMALL_WINDOW = 320  # 64 frames of output per network call plus 2 * 128 of context


def stereo_tone(seconds: float, rate: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.sin(2 * np.pi * 3300 * t)
    right = 0.2 * np.sin(2 * np.pi * 330 * t) + 0.01 * rng.standard_normal(t.size)
    return np.stack([left, right]).astype(np.float32)


def write_vr_file(path: Path, *, seed: int = 0, zero_output: bool = False) -> Path:
    """A random-weight VR model saved as RVC's uvr5_weights files are: a bare fp16 state dict."""
    torch.manual_seed(seed)
    net = CascadedASPPNet(bands.PARAMS_4BAND_V2.n_fft)
    for module in net.modules():  # non-trivial BN statistics, as a trained file has
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    if zero_output:
        torch.nn.init.zeros_(net.out.weight)  # sigmoid(0): a mask of exactly 0.5 everywhere
    state = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


class _Mask(torch.nn.Module):
    def __init__(self, identity: bool) -> None:
        super().__init__()
        self.identity = identity
        self.conv = torch.nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0 if self.identity else torch.sigmoid(self.conv(x)) * x


def write_mdx_file(path: Path, *, identity: bool = False, shape: tuple[int, ...] = (1, 4, 3072, 512)) -> Path:
    """An MDX-Net-shaped ONNX graph (one input [N, 4, dim_f, dim_t] named "input", same-shape output)."""
    torch.manual_seed(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        _Mask(identity).eval(), (torch.zeros(shape),), str(path), input_names=["input"], output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=17, dynamo=False,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("separation_models")


@pytest.fixture(scope="module")
def mdx_file(model_dir: Path) -> Path:
    return write_mdx_file(model_dir / "mdx" / "vocals.onnx")


@pytest.fixture(scope="module")
def vr_file(model_dir: Path) -> Path:
    return write_vr_file(model_dir / "HP5_only_main_vocal.pth")


# --- VR (.pth) ------------------------------------------------------------------------------------


def test_vr_layout_is_the_61968kb_network() -> None:
    """UVR names this network after its fp16 file size; the layout built here has exactly that size."""
    with torch.device("meta"):
        state = CascadedASPPNet(1344).state_dict()
    fp16_kib = sum(v.numel() * (2 if v.is_floating_point() else v.element_size()) for v in state.values()) / 1024
    assert 61_700 < fp16_kib < 61_968
    assert len(state) == 459
    assert tuple(state["stg1_low_band_net.enc1.conv1.conv.0.weight"].shape) == (32, 2, 3, 3)
    assert tuple(state["stg3_full_band_net.aspp.conv3.conv.0.weight"].shape) == (512, 1, 3, 3)  # depthwise
    assert tuple(state["stg3_full_band_net.aspp.bottleneck.0.conv.0.weight"].shape) == (1024, 2560, 1, 1)
    assert tuple(state["out.weight"].shape) == (2, 64, 1, 1)


def test_vr_file_separates_with_input_length_and_rate(vr_file: Path) -> None:
    separator = load_vr_separator(vr_file, params=SMALL, window_frames=SMALL_WINDOW, aggressiveness=0.1)
    mix = stereo_tone(0.5, SMALL_RATE)
    seen: list[tuple[int, int]] = []
    stems = separator.separate(mix, lambda done, total, _: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)]  # 126 frames, 64 per window
    assert stems.sample_rate == SMALL_RATE
    for stem in (stems.vocals, stems.instrumental):
        assert stem.shape == mix.shape and stem.dtype == np.float32 and np.all(np.isfinite(stem))
        assert 0.001 < np.abs(stem).max() < 2.0
    assert not np.allclose(stems.vocals, stems.instrumental, atol=1e-3)
    # vocals = X - accompaniment in the spectrogram; the inversion is linear, so the waves add up to
    # the mixture as the bands carry it (here: one band without its Nyquist row)
    carried = bands.to_wave(bands.combine(bands.band_spectrograms(mix, SMALL), SMALL), SMALL)
    n = carried.shape[1]
    assert mix.shape[1] - 32 < n <= mix.shape[1]
    np.testing.assert_allclose((stems.vocals + stems.instrumental)[:, :n], carried, atol=1e-5)
    assert np.abs(carried - mix[:, :n]).max() < 0.02  # and that is the mixture but for its Nyquist row


def test_vr_half_mask_splits_evenly_and_aggressiveness_pushes(model_dir: Path) -> None:
    path = write_vr_file(model_dir / "half" / "HP2_all_vocals.pth", zero_output=True)
    mix = stereo_tone(0.25, SMALL_RATE)
    even = load_vr_separator(path, params=SMALL, window_frames=SMALL_WINDOW, aggressiveness=0.0).separate(mix)
    np.testing.assert_allclose(even.vocals, even.instrumental, atol=1e-5)
    hard = load_vr_separator(path, params=SMALL, window_frames=SMALL_WINDOW, aggressiveness=1.0).separate(mix)
    # every row of this one band lies below the split row: the mask becomes 0.5 ** (1 + 1/3)
    np.testing.assert_allclose(hard.instrumental, even.instrumental * 0.5 ** (1 / 3), atol=1e-5)
    body = slice(0, mix.shape[1] - 32)  # the bands invert up to the last whole hop; the rest is padding
    np.testing.assert_allclose(hard.vocals[:, body], (mix - hard.instrumental)[:, body], atol=0.02)


def test_hp3_files_predict_the_vocals(model_dir: Path, vr_file: Path) -> None:
    hp3 = model_dir / "HP3_all_vocals.pth"
    hp3.write_bytes(vr_file.read_bytes())
    mix = stereo_tone(0.25, SMALL_RATE)
    a = load_vr_separator(vr_file, params=SMALL, window_frames=SMALL_WINDOW).separate(mix)
    b = load_vr_separator(hp3, params=SMALL, window_frames=SMALL_WINDOW).separate(mix)
    np.testing.assert_array_equal(a.vocals, b.instrumental)
    np.testing.assert_array_equal(a.instrumental, b.vocals)


def write_deecho_file(path: Path, n_fft: int, nout: int = 48) -> Path:
    from infer_pack.separation.vr_nets_new import CascadedNet

    torch.manual_seed(2)
    state = {k: v.half() if v.is_floating_point() else v for k, v in CascadedNet(n_fft, nout).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def test_deecho_layout_is_read_from_the_file(tmp_path: Path) -> None:
    """VR-DeEcho files (nets_new): the LSTM sizes fix n_fft; nout 48 (DeEcho) or 64 (DeReverb) is read, not guessed."""
    from infer_pack.separation.vr_nets_new import CascadedNet, layout_of

    with torch.device("meta"):
        for nout in (48, 64):
            state = CascadedNet(1344, nout).state_dict()
            assert layout_of(state) == (1344, nout, 128) and len(state) == 689
    assert tuple(state["stg1_low_band_net.0.lstm_dec2.lstm.weight_ih_l0"].shape) == (256, 168)
    assert tuple(state["stg3_full_band_net.lstm_dec2.dense.0.weight"].shape) == (336, 128)
    small = write_deecho_file(tmp_path / "VR-DeEchoDeReverb.pth", SMALL.n_fft, nout=64)
    with pytest.raises(ModelFileError, match="sized for n_fft 64"):
        load_vr_separator(small)  # RVC's 4band bands need n_fft 1344


def test_deecho_file_separates_dry_vocals_from_the_echo(tmp_path: Path) -> None:
    path = write_deecho_file(tmp_path / "VR-DeEchoAggressive.pth", SMALL.n_fft)
    mix = stereo_tone(0.25, SMALL_RATE)
    separator = load_vr_separator(path, params=SMALL, window_frames=192, aggressiveness=0.5)
    stems = separator.separate(mix)
    assert separator.vocals_first  # the network predicts the dry voice; the echo is the rest
    assert stems.vocals.shape == stems.instrumental.shape == mix.shape and stems.sample_rate == SMALL_RATE
    body = slice(0, mix.shape[1] - 32)
    np.testing.assert_allclose((stems.vocals + stems.instrumental)[:, body], mix[:, body], atol=0.02)
    x = torch.rand(1, 2, SMALL.bins + 1, 16)
    with torch.inference_mode():  # RVC ignores the aggressiveness for this layout
        assert torch.equal(separator.net(x, 0.0, 16), separator.net(x, 1.0, 16))


@pytest.mark.parametrize("layout", ["hp", "deecho"])
def test_onnx_engine_gives_the_torch_stems(layout: str, vr_file: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The app's default on CPU: the mask in ONNX Runtime, the same stems as torch; the graph is cached."""
    monkeypatch.setenv("RVC_ONNX_CACHE", str(tmp_path / "cache"))
    path = vr_file if layout == "hp" else write_deecho_file(tmp_path / "VR-DeEchoNormal.pth", SMALL.n_fft)
    window = SMALL_WINDOW if layout == "hp" else 192
    mix = stereo_tone(0.5, SMALL_RATE)
    common = {"params": SMALL, "window_frames": window, "aggressiveness": 0.3}
    reference = load_vr_separator(path, engine="torch", **common)
    fast = load_vr_separator(path, engine="onnx", **common)
    assert (reference.engine, fast.engine) == ("torch", "onnx")
    a, b = reference.separate(mix), fast.separate(mix)
    np.testing.assert_allclose(b.vocals, a.vocals, atol=2e-5)
    np.testing.assert_allclose(b.instrumental, a.instrumental, atol=2e-5)
    graphs = list((tmp_path / "cache").glob("vr_mask_*.onnx"))
    assert len(graphs) == 1
    stamp = graphs[0].stat().st_mtime_ns
    again = load_vr_separator(path, engine="auto", **common)  # auto on CPU in float32: onnx, from the cache
    assert again.engine == "onnx"
    np.testing.assert_array_equal(again.separate(mix).vocals, b.vocals)
    assert graphs[0].stat().st_mtime_ns == stamp and len(list((tmp_path / "cache").glob("*.onnx"))) == 1
    # another aggressiveness changes the stems, not the graph (it is applied after the mask)
    sharper = load_vr_separator(path, engine="onnx", **(common | {"aggressiveness": 0.9})).separate(mix)
    assert len(list((tmp_path / "cache").glob("*.onnx"))) == 1
    if layout == "hp":
        assert not np.allclose(sharper.vocals, b.vocals, atol=1e-4)
        torch_sharper = load_vr_separator(path, engine="torch", **(common | {"aggressiveness": 0.9})).separate(mix)
        np.testing.assert_allclose(sharper.vocals, torch_sharper.vocals, atol=2e-5)


def test_onnx_engine_falls_back_to_torch_when_the_export_fails(vr_file: Path, monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:  # fmt: skip
    from infer_pack.separation import vr_onnx

    monkeypatch.setenv("RVC_ONNX_CACHE", str(tmp_path / "cache"))

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(vr_onnx, "trace_to_onnx", broken)
    separator = load_vr_separator(vr_file, params=SMALL, window_frames=SMALL_WINDOW, engine="onnx")
    stems = separator.separate(stereo_tone(0.3, SMALL_RATE))
    assert separator.engine == "torch" and np.all(np.isfinite(stems.vocals))


def test_real_4band_params_split_and_rebuild_the_wave() -> None:
    p = bands.PARAMS_4BAND_V2
    assert p.n_fft == 1344 and p.split_bin == 85 and sum(b.height for b in p.bands) == 672
    mix = stereo_tone(1.0)
    specs = bands.band_spectrograms(mix, p)
    stacked = bands.combine(specs, p)
    assert stacked.shape[:2] == (2, 673)
    whole = bands.to_wave(stacked, p)
    n = whole.shape[1]
    assert mix.shape[1] - 480 < n <= mix.shape[1]
    # tones well inside the bands come back through four STFTs, three resamplings and the crossfades
    error = mix[0, 2000 : n - 2000] - whole[0, 2000 : n - 2000]
    assert 10 * np.log10(np.sum(mix[0, 2000 : n - 2000] ** 2) / np.sum(error**2)) > 25
    part = stacked * 0.3
    np.testing.assert_allclose(bands.to_wave(part, p) + bands.to_wave(stacked - part, p), whole, atol=1e-5)
    high = bands.input_high_end(specs[-1], p)
    assert high.shape[1] == bands.high_end_rows(p) == (480 - 383) + 4
    assert bands.mirror_high_end(stacked, high, p).shape == high.shape


def test_vr_refuses_other_layouts_and_hostile_files(tmp_path: Path, vr_file: Path) -> None:
    state = torch.load(vr_file, weights_only=True)
    del state["out.weight"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(ModelFileError, match="out.weight"):
        load_vr_separator(tmp_path / "cut.pth")
    state = torch.load(vr_file, weights_only=True)
    state["aux1_out.weight"] = torch.zeros(2, 16, 1, 1)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(ModelFileError, match=r"aux1_out.weight has shape \(2, 16, 1, 1\)"):
        load_vr_separator(tmp_path / "shape.pth")
    broken = {"out.weight": torch.zeros(2, 48, 1, 1), "stg3_full_band_net.lstm_dec2.lstm.weight_ih_l0": torch.zeros(256, 336)}
    torch.save(broken, tmp_path / "VR-DeEchoNormal.pth")
    with pytest.raises(ModelFileError, match="VR-DeEcho layout: 68[0-9] key"):
        load_separator(tmp_path / "VR-DeEchoNormal.pth")

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo owned > " + str(tmp_path / "owned"),))

    torch.save({"out.weight": Payload()}, tmp_path / "evil.pth")  # zip format, as RVC's files
    with open(tmp_path / "evil_legacy.pth", "wb") as handle:
        pickle.dump({"out.weight": Payload()}, handle)  # and a bare pickle: refused too, without running it
    with pytest.raises(ModelFileError):
        load_separator(tmp_path / "evil_legacy.pth")
    with pytest.raises(UnsafeFileError):
        load_separator(tmp_path / "evil.pth")
    assert not (tmp_path / "owned").exists()
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ModelFileError, match="not a separation model"):
        load_separator(tmp_path / "model.bin")


# --- MDX (.onnx) ----------------------------------------------------------------------------------


def test_mdx_stems_sum_exactly_and_keep_length(mdx_file: Path) -> None:
    separator = load_separator(mdx_file)
    assert separator.kind == "mdx" and separator.params.dim_f == 3072 and separator.params.dim_t == 512
    mix = stereo_tone(2.0)
    stems = separator.separate(mix)
    assert stems.vocals.shape == stems.instrumental.shape == mix.shape and stems.sample_rate == SR
    np.testing.assert_allclose(stems.vocals + stems.instrumental, mix, atol=1e-6)
    assert 0.01 < np.abs(stems.instrumental).max() and 0.01 < np.abs(stems.vocals).max()


def test_mdx_identity_graph_gives_back_the_input_across_segments(model_dir: Path) -> None:
    """STFT chunking, overlap trimming and segment stitching lose nothing: an identity graph returns the mix."""
    path = write_mdx_file(model_dir / "identity" / "vocals.onnx", identity=True)
    mix = stereo_tone(2.5)
    separator = load_mdx_separator(path, params=MdxParams(segment_seconds=1.0, margin_samples=4410))
    seen: list[tuple[int, int]] = []
    stems = separator.separate(mix, lambda done, total, _: seen.append((done, total)))
    assert seen[-1] == (3, 3)  # three 1 s segments, one model window each
    # all but the Nyquist row (dim_f = 3072 of 3073) goes through: only the noise loses a trace there
    np.testing.assert_allclose(stems.instrumental, mix, atol=5e-4)
    assert np.abs(stems.vocals).max() < 5e-4


def test_mdx_cancel_stops_between_windows(mdx_file: Path) -> None:
    separator = load_mdx_separator(mdx_file, params=MdxParams(segment_seconds=1.0, margin_samples=4410))
    token = CancelToken()
    calls: list[int] = []

    def progress(done: int, total: int, message: str) -> None:
        calls.append(done)
        token.cancel()

    with pytest.raises(CancelledError):
        separator.separate(stereo_tone(3.5), progress, token)
    assert calls == [1]


def test_mdx_refuses_other_graphs_and_garbage(tmp_path: Path) -> None:
    write_mdx_file(tmp_path / "three.onnx", identity=True, shape=(1, 3, 64, 16))
    with pytest.raises(ModelFileError, match="take 4"):
        load_separator(tmp_path / "three.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x01garbage" * 10)
    with pytest.raises(ModelFileError, match="junk.onnx"):
        load_separator(tmp_path / "junk.onnx")


def test_load_stereo_upmixes_mono_and_resamples(tmp_path: Path) -> None:
    soundfile.write(tmp_path / "mono.wav", stereo_tone(1.0, 22050)[0], 22050)
    stereo = load_stereo(tmp_path / "mono.wav", SR)
    assert stereo.shape == (2, SR) and np.array_equal(stereo[0], stereo[1])


# --- BS-RoFormer (.ckpt + .yaml) ------------------------------------------------------------------

TINY_ROFORMER_YAML = """\
audio:
  chunk_size: 2048
  sample_rate: 44100
model:
  dim: 16
  depth: 1
  stereo: true
  num_stems: 1
  time_transformer_depth: 1
  freq_transformer_depth: 1
  freqs_per_bands: !!python/tuple [8, 8, 8, 9]
  dim_head: 8
  heads: 2
  stft_n_fft: 64
  stft_hop_length: 16
  stft_win_length: 64
  mask_estimator_depth: 2
  flash_attn: true
training:
  instruments: [vocals, other]
  target_instrument: vocals
inference:
  num_overlap: 4
"""


def write_roformer(folder: Path, *, yaml_text: str | None = TINY_ROFORMER_YAML, unit_mask: bool = False,
                   **sizes: object) -> Path:  # fmt: skip
    """A random-weight BS-RoFormer saved as MSST saves one (`torch.save(model.state_dict())`) plus its YAML."""
    from infer_pack.separation.roformer import BSRoformer, RoformerConfig, read_yaml_config

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model_bs_roformer_test.ckpt"
    if yaml_text is not None:
        path.with_suffix(".yaml").write_text(yaml_text)
        config = read_yaml_config(path.with_suffix(".yaml"))
    else:
        config = RoformerConfig(**sizes)  # type: ignore[arg-type]
    torch.manual_seed(3)
    net = BSRoformer(config)
    if unit_mask:  # last layer: GLU(a, b) = a * sigmoid(b) with a = (1, 0) per bin and b large: mask 1 + 0j
        for estimator in net.mask_estimators:
            for band in estimator.to_freqs:
                last = band[0][-1]
                torch.nn.init.zeros_(last.weight)
                half = last.bias.shape[0] // 2
                last.bias.data[:half] = torch.tensor([1.0, 0.0]).repeat(half // 2)
                last.bias.data[half:] = 30.0
    torch.save(net.state_dict(), path)
    return path


def test_roformer_yaml_model_separates_and_stems_sum(tmp_path: Path) -> None:
    path = write_roformer(tmp_path)
    separator = load_separator(path)
    assert separator.kind == "roformer" and separator.config.freqs_per_bands == (8, 8, 8, 9)
    mix = stereo_tone(0.2)
    seen: list[tuple[int, int]] = []
    stems = separator.separate(mix, lambda done, total, _: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] > 4  # 2048-sample chunks every 512 samples
    assert stems.vocals.shape == stems.instrumental.shape == mix.shape and stems.sample_rate == SR
    np.testing.assert_allclose(stems.vocals + stems.instrumental, mix, atol=1e-6)
    assert 0.001 < np.abs(stems.vocals).max() < 10


NO_ZERO_DC_YAML = TINY_ROFORMER_YAML.replace("  stereo: true\n", "  stereo: true\n  zero_dc: false\n")


def test_roformer_unit_mask_returns_the_input_through_chunks(tmp_path: Path) -> None:
    """With a mask of exactly 1 (and the DC bin kept) the model is STFT -> iSTFT: the overlap-add of faded
    chunks gives the mix back."""
    separator = load_separator(write_roformer(tmp_path, yaml_text=NO_ZERO_DC_YAML, unit_mask=True))
    assert separator.config.zero_dc is False  # the YAML's `zero_dc: false` is honoured
    mix = stereo_tone(0.3)
    stems = separator.separate(mix)
    np.testing.assert_allclose(stems.vocals, mix, atol=1e-4)
    assert np.abs(stems.instrumental).max() < 1e-4


def test_roformer_zeroes_the_dc_bin_by_default_as_msst_does(tmp_path: Path) -> None:
    """MSST (since 2025-09-23) zeroes the masked spectrogram's DC bin before the inverse STFT. With a unit mask
    the network is then exactly iSTFT(STFT(x) with bin 0 set to 0), written out here with torch."""
    separator = load_separator(write_roformer(tmp_path, unit_mask=True))
    config = separator.config
    assert config.zero_dc is True  # not in the YAML: MSST's default
    audio = torch.from_numpy(stereo_tone(0.1)[:, :2048] + 0.2)[None]  # [1, 2, T]: a tone on a DC offset
    with torch.no_grad():
        out = separator.net(audio)[0, 0]  # [2, T]
    window = torch.hann_window(config.stft_win_length)
    spec = torch.stft(audio[0], config.stft_n_fft, config.stft_hop_length, config.stft_win_length, window,
                      return_complex=True)  # [2, F, frames]
    spec[:, 0, :] = 0
    expected = torch.istft(spec, config.stft_n_fft, config.stft_hop_length, config.stft_win_length, window,
                           length=audio.shape[-1])
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=0)
    assert float((out - audio[0]).abs().max()) > 0.05  # the DC bin really went


def test_roformer_sizes_come_from_the_weights_without_yaml(tmp_path: Path) -> None:
    from infer_pack.separation.roformer import RoformerConfig, config_from_state

    sizes = {"dim": 16, "depth": 2, "freqs_per_bands": (256, 256, 256, 257), "heads": 2, "dim_head": 8,
             "time_transformer_depth": 2, "freq_transformer_depth": 1, "ff_mult": 2, "mlp_expansion_factor": 1}
    path = write_roformer(tmp_path, yaml_text=None, **sizes)
    state = torch.load(path, weights_only=True)
    assert config_from_state(state) == RoformerConfig(**sizes)  # MSST's usual STFT: n_fft 2048, hop 441
    assert "layers.1.0.layers.1.0.rotary_embed.freqs" in state and "layers.0.1.layers.0.1.net.4.weight" in state
    del state["layers.0.0.layers.0.0.rotary_embed.freqs"]  # some files lack the (fixed) RoPE frequencies
    torch.save(state, path)
    stems = load_separator(path).separate(stereo_tone(0.5))
    assert stems.vocals.shape == (2, SR // 2)


def test_roformer_layout_of_a_full_size_config() -> None:
    """MSST's BS-RoFormer vocal configs (dim 512, depth 12, 62 bands over 1025 bins) in the checkpoint's names."""
    from infer_pack.separation.roformer import BSRoformer, RoformerConfig

    bands = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
    assert sum(bands) == 1025 and len(bands) == 62
    with torch.device("meta"):
        state = BSRoformer(RoformerConfig(dim=512, depth=12, freqs_per_bands=bands)).state_dict()
    assert tuple(state["band_split.to_features.61.1.weight"].shape) == (512, 129 * 4)
    assert tuple(state["layers.11.1.layers.0.0.to_qkv.weight"].shape) == (3 * 8 * 64, 512)
    assert tuple(state["layers.0.0.layers.0.0.to_gates.weight"].shape) == (8, 512)
    assert tuple(state["mask_estimators.0.to_freqs.61.0.2.weight"].shape) == (129 * 8, 2048)
    assert tuple(state["layers.3.0.layers.0.0.rotary_embed.freqs"].shape) == (32,)
    assert {k.split(".")[0] for k in state} == {"layers", "final_norm", "band_split", "mask_estimators"}


def test_mel_bands_binarise_librosas_filter_bank() -> None:
    from infer_pack.separation.roformer import mel_band_membership
    from train.mel import slaney_mel_filterbank

    for rate, n_fft, band_count in ((44100, 2048, 60), (44100, 64, 4), (48000, 1024, 40)):
        expected = slaney_mel_filterbank(rate, n_fft, band_count) > 0
        expected[0, 0] = expected[-1, -1] = True
        np.testing.assert_array_equal(mel_band_membership(rate, n_fft, band_count), expected)


def test_mel_band_roformer_layout_and_unit_mask(tmp_path: Path) -> None:
    """Mel-band RoFormer: a norm per transformer, no final norm, overlapping bands whose masks are averaged."""
    from infer_pack.separation.roformer import BSRoformer, RoformerConfig, mel_band_membership

    with torch.device("meta"):  # MSST's vocal Mel-band RoFormer config: dim 384, depth 6, 60 bands
        state = BSRoformer(RoformerConfig(dim=384, depth=6, freqs_per_bands=(), num_bands=60)).state_dict()
    sizes = mel_band_membership(44100, 2048, 60).sum(1)
    assert "final_norm.gamma" not in state and tuple(state["layers.5.1.norm.gamma"].shape) == (384,)
    assert tuple(state["band_split.to_features.59.1.weight"].shape) == (384, 4 * int(sizes[59]))
    assert sizes.sum() > 1025  # the bands overlap
    mel_yaml = NO_ZERO_DC_YAML.replace("  freqs_per_bands: !!python/tuple [8, 8, 8, 9]\n", "  num_bands: 4\n")
    path = write_roformer(tmp_path, yaml_text=mel_yaml, unit_mask=True)
    separator = load_separator(path)
    assert separator.config.num_bands == 4 and "layers.0.0.norm.gamma" in torch.load(path, weights_only=True)
    mix = stereo_tone(0.3)
    stems = separator.separate(mix)
    np.testing.assert_allclose(stems.vocals, mix, atol=1e-4)  # averaged unit masks are still 1
    path.with_suffix(".yaml").unlink()
    with pytest.raises(ModelFileError, match="Mel-band RoFormer config"):  # sizes fit only its own STFT
        load_separator(path)


def test_roformer_refuses_other_files(tmp_path: Path) -> None:
    path = write_roformer(tmp_path)
    state = torch.load(path, weights_only=True)
    state["band_split.to_features.0.1.weight"] = torch.zeros(16, 31)
    torch.save(state, tmp_path / "bad.ckpt")
    with pytest.raises(ModelFileError, match="band_split"):
        load_separator(tmp_path / "bad.ckpt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.ckpt")
    with pytest.raises(ModelFileError, match="not a RoFormer checkpoint"):
        load_separator(tmp_path / "other.ckpt")
    (tmp_path / "model_bs_roformer_test.yaml").write_text("model: !!python/object/apply:os.system ['echo owned']\n")
    with pytest.raises(ModelFileError, match="not a readable model YAML"):
        load_separator(path)


# --- API, CLI, assets ---------------------------------------------------------------------------


def test_api_separates_a_folder_and_names_failures(project_root: Path, mdx_file: Path) -> None:
    target = assets.uvr5_dir(assets.Project.at(project_root)) / "onnx_dereverb_By_FoxJoy" / "vocals.onnx"
    target.parent.mkdir(parents=True)
    target.write_bytes(mdx_file.read_bytes())
    songs = project_root / "songs"
    songs.mkdir()
    soundfile.write(songs / "a.wav", stereo_tone(1.5).T, SR)
    soundfile.write(songs / "b.flac", stereo_tone(1.0, 22050)[0], 22050)  # mono, another rate
    (songs / "c.wav").write_bytes(b"RIFF....WAVEjunk")
    seen: list[str] = []
    result = separate_audio(project=project_root, model="uvr5-dereverb", input_dir=songs,
                            progress=lambda d, t, m: seen.append(m))  # fmt: skip
    assert [f.input_path.name for f in result.separated] == ["a.wav", "b.flac"]
    assert [p.name for p, _ in result.failed] == ["c.wav"] and "c.wav" in result.failed[0][1]
    assert "c.wav" in result.summary() and not result.ok
    vocals, instrumental = stem_paths(songs / "a.wav", result.output_dir, "wav")
    assert result.output_dir == project_root / "outputs" / "separated"
    v, rate = soundfile.read(vocals)
    i, _ = soundfile.read(instrumental)
    assert rate == SR and v.shape == i.shape == (int(1.5 * SR), 2)
    np.testing.assert_allclose(v + i, stereo_tone(1.5).T, atol=2 / 32768)  # 16-bit files
    b_vocals, _ = stem_paths(songs / "b.flac", result.output_dir, "wav")
    assert soundfile.info(b_vocals).frames == SR and soundfile.info(b_vocals).channels == 2
    assert any("window 1/1" in message for message in seen)
    (target.parent.parent / "my_model.pth").write_bytes(b"")
    choices = model_choices(project_root)
    assert choices[:3] == ["HP2_all_vocals.pth", "HP3_all_vocals.pth", "HP5_only_main_vocal.pth"]
    assert "my_model.pth" in choices and choices.count("onnx_dereverb_By_FoxJoy/vocals.onnx") == 1


def test_api_missing_model_names_the_download(project_root: Path, tmp_path: Path) -> None:
    soundfile.write(tmp_path / "a.wav", stereo_tone(0.2).T, SR)
    with pytest.raises(AssetMissingError, match=r"python -m tools.cli download uvr5-hp5"):
        separate_audio(project=project_root, model="uvr5-hp5", input_path=tmp_path / "a.wav")
    with pytest.raises(AssetMissingError, match="uvr5-hp2"):
        separate_audio(project=project_root, model="HP2_all_vocals.pth", input_path=tmp_path / "a.wav")


def test_separation_assets_are_named_and_not_part_of_all(project_root: Path) -> None:
    project = assets.Project.at(project_root)
    items = assets.files_for(["uvr5"])
    assert [i.group for i in items] == ["uvr5-hp2", "uvr5-hp3", "uvr5-hp5", "uvr5-deecho-normal",
                                        "uvr5-deecho-aggressive", "uvr5-deecho-dereverb", "uvr5-dereverb"]
    # RVC's published sha256 (its .env); HP2 and HP5 equal their Chinese-named twins there.
    assert all(i.size is None and re.fullmatch(r"[0-9a-f]{64}", i.sha256 or "") for i in items)
    assert items[0].sha256 == "39796caa5db18d7f9382d8ac997ac967bfd85f7761014bb807d2543cc844ef05"
    assert len({i.sha256 for i in items}) == len(items)
    assert {i.verification for i in items} == {"sha256 (size unknown)"}
    assert items[-1].local_path(project) == project_root / "uvr5_weights" / "onnx_dereverb_By_FoxJoy" / "vocals.onnx"
    assert items[2].url().endswith("/lj1995/VoiceConversionWebUI/resolve/main/uvr5_weights/HP5_only_main_vocal.pth")
    assert not set(assets.files_for(["all"])) & set(items)


def test_roformer_vocal_model_is_a_download_name_with_its_yaml(project_root: Path) -> None:
    project = assets.Project.at(project_root)
    ckpt, config = assets.files_for(["bs-roformer-vocals"])
    assert ckpt.local_path(project).suffix == ".ckpt" and config.local_path(project) == ckpt.local_path(project).with_suffix(".yaml")
    assert ckpt.local_path(project).parent == project_root / "uvr5_weights"
    assert ckpt.verification == "sha256 and size" and config.verification == "sha256 (size unknown)"
    assert ckpt.url().startswith("https://github.com/TRvlvr/model_repo/releases/download/")
    assert ckpt.url(endpoint="https://hf-mirror.example") == ckpt.url()  # not on the hub: no mirror
    assert config.url().startswith("https://raw.githubusercontent.com/TRvlvr/application_data/")
    # 640 MB: only by its own name, not in "uvr5" (RVC's set) nor "all"
    assert ckpt not in assets.files_for(["uvr5"]) and ckpt not in assets.files_for(["all"])
    assert "bs-roformer-vocals" in assets.SEPARATION_GROUP_NAMES
    # the Separate tab offers the checkpoint, never its YAML; the download name resolves to it
    choices = model_choices(project_root)
    assert ckpt.local_path(project).name in choices and config.local_path(project).name not in choices
    with pytest.raises(AssetMissingError, match="download bs-roformer-vocals"):
        separate_audio(project=project_root, model="bs-roformer-vocals", input_path=project_root / "x.wav",
                       output_dir=project_root / "out")


def test_files_outside_the_hub_get_no_hugging_face_token(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_for_test")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.host] = request.headers.get("authorization")
        return httpx.Response(200, content=b"abc")

    client = httpx.Client(transport=httpx.MockTransport(handler))
    transport = assets.HubTransport(client=client)
    ckpt = assets.files_for(["bs-roformer-vocals"])[0]
    for url in (ckpt.url(), assets.files_for(["uvr5-hp5"])[0].url()):
        stream = transport.fetch(url, 0)
        assert b"".join(stream.chunks) == b"abc"
        stream.close()
    assert seen["github.com"] is None
    assert seen["huggingface.co"] == "Bearer hf_secret_token_for_test"


def test_cli_separate(project_root: Path, mdx_file: Path, tmp_path: Path) -> None:
    soundfile.write(tmp_path / "song.wav", stereo_tone(1.0).T, SR)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "tools.cli", "--root", str(project_root), "separate", "--input", str(tmp_path / "song.wav")]
    done = subprocess.run([*command, "--model", str(mdx_file), "--format", "flac", "-o", str(tmp_path / "out")],
                          cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=240, env=env, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "song.wav -> song_vocals.flac, song_instrumental.flac" in done.stdout
    assert soundfile.info(tmp_path / "out" / "song_instrumental.flac").samplerate == SR
    missing = subprocess.run([*command, "--model", "uvr5-hp3"], cwd=str(REPO_ROOT), capture_output=True, text=True,
                             timeout=120, env=env, check=False)  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1].startswith("error:")
    assert "python -m tools.cli download uvr5-hp3" in missing.stderr


@pytest.mark.slow
def test_api_vr_model_with_the_real_bands(project_root: Path, vr_file: Path, tmp_path: Path) -> None:
    """The whole RVC path at 673 rows, one 512-frame window: about 20 s on 2 CPU cores."""
    target = assets.uvr5_dir(assets.Project.at(project_root)) / "HP5_only_main_vocal.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(vr_file.read_bytes())
    soundfile.write(tmp_path / "song.wav", stereo_tone(1.0).T, SR)
    result = separate_audio(project=project_root, model="uvr5-hp5", input_path=tmp_path / "song.wav",
                            output_dir=tmp_path / "out")  # fmt: skip
    assert result.ok and result.model == target
    v, rate = soundfile.read(result.separated[0].vocals_path)
    i, _ = soundfile.read(result.separated[0].instrumental_path)
    assert rate == SR and v.shape == i.shape == (SR, 2)
    assert np.abs(v).max() > 0.001 and np.abs(i).max() > 0.001


def test_app_separate_endpoint_runs_a_job_with_stop(project_root: Path, mdx_file: Path) -> None:
    """The Separate tab's button through gradio_client: a job with progress, downloadable stems, and Stop."""
    import re
    import time

    from gradio_client import Client
    from helpers_app import app_in_thread

    target = project_root / "uvr5_weights" / "onnx_dereverb_By_FoxJoy" / "vocals.onnx"
    target.parent.mkdir(parents=True)
    target.write_bytes(mdx_file.read_bytes())
    songs = project_root / "songs"
    songs.mkdir()
    soundfile.write(songs / "take.wav", stereo_tone(1.0).T, SR)

    def job_of(html: str) -> str:
        found = re.search(r'data-job="([^"]*)"', html)
        assert found and found.group(1), html
        return found.group(1)

    def wait(client: Client, job_id: str) -> dict[str, object]:
        deadline = time.time() + 120
        while time.time() < deadline:
            status = client.predict(job_id, api_name="/job_status")
            if status["state"] != "running":
                return status
            time.sleep(0.3)
        raise TimeoutError(job_id)

    with app_in_thread(project_root) as (url, ctx):
        client = Client(url, verbose=False)
        outputs = client.predict("onnx_dereverb_By_FoxJoy/vocals.onnx", "songs", "outputs/separated", "wav", 10, None,
                                 api_name="/separate")  # fmt: skip
        status = wait(client, job_of(outputs[1]))
        assert status["state"] == "done", status
        assert any("take.wav -> take_vocals.wav, take_instrumental.wav" in line for line in status["log"])
        assert (project_root / "outputs" / "separated" / "take_instrumental.wav").is_file()
        refused = client.predict("uvr5-hp5", "songs", "outputs/separated", "wav", 10, None, api_name="/separate")
        assert "download uvr5-hp5" in refused[1] or "download uvr5-hp5" in str(refused)
        # Stop: a long song in 1 s segments; cancelling ends the job as "cancelled" between windows.
        soundfile.write(songs / "long.wav", stereo_tone(20.0).T, SR)
        (songs / "take.wav").unlink()
        from infer_pack.cache import file_key

        slow = load_mdx_separator(target, params=MdxParams(segment_seconds=0.5, margin_samples=4410))
        device = "cuda" if torch.cuda.is_available() else "cpu"  # what device="auto" picks
        ctx.cache.get_or_load(("separator", file_key(target), device, 10), lambda: slow)
        started = client.predict(str(target), "songs", "outputs/separated", "wav", 10, None, api_name="/separate")
        job_id = job_of(started[1])
        assert client.predict(job_id, api_name="/stop_job") is True
        assert wait(client, job_id)["state"] == "cancelled"


@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium is absent (Debian: apt-get install chromium)")
def test_browser_separate_tab_offers_the_stems(project_root: Path, mdx_file: Path, tmp_path: Path) -> None:
    """Headless Chromium: pick a model in the Separate tab, type a folder, run, and find both stems offered."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    from helpers_app import CHROMIUM, CHROMIUM_ARGS, app_in_thread

    target = project_root / "uvr5_weights" / "onnx_dereverb_By_FoxJoy" / "vocals.onnx"
    target.parent.mkdir(parents=True)
    target.write_bytes(mdx_file.read_bytes())
    (project_root / "songs").mkdir()
    soundfile.write(project_root / "songs" / "tune.wav", stereo_tone(1.0).T, SR)
    with app_in_thread(project_root) as (url, _ctx), playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(url)
            page.get_by_role("tab", name="Separate").click()
            # the intro is shown whole (Markdown once swallowed "<name>_vocals ..." as an HTML tag)
            page.get_by_text("NAME_instrumental", exact=False).wait_for()
            page.locator("#separate-model input").click()
            # catalogued models not on disk say so and name their download
            page.get_by_role("option", name="HP5_only_main_vocal.pth (missing: download under Assets, tick uvr5-hp5)").wait_for()
            page.get_by_role("option", name="onnx_dereverb_By_FoxJoy/vocals.onnx").click()
            page.locator("#separate-input-dir input, #separate-input-dir textarea").first.fill("songs")
            page.locator("#separate-run").click()
            page.wait_for_selector('#separate-panel .rvc-progress[data-state="done"], '
                                   '#separate-panel .rvc-progress[data-state="failed"]')  # fmt: skip
            page.locator("#separate-results a").first.wait_for()
            page.screenshot(path=str(tmp_path / "separate.png"), full_page=True)
            log = page.locator("#separate-panel .rvc-log textarea").input_value()
            assert "tune.wav -> tune_vocals.wav, tune_instrumental.wav" in log, log
            names = sorted((a.get_attribute("href") or "").rsplit("/", 1)[-1] for a in page.locator("#separate-results a").all())
            assert names == ["tune_instrumental.wav", "tune_vocals.wav"], names
        finally:
            browser.close()


def test_api_runs_a_roformer_from_uvr5_weights(project_root: Path, tmp_path: Path) -> None:
    write_roformer(project_root / "uvr5_weights")
    assert "model_bs_roformer_test.ckpt" in model_choices(project_root)
    soundfile.write(tmp_path / "song.flac", stereo_tone(0.4).T, SR)
    result = separate_audio(project=project_root, model="model_bs_roformer_test.ckpt", input_path=tmp_path / "song.flac",
                            output_dir=tmp_path / "out", output_format="flac")  # fmt: skip
    assert result.ok, result.summary()
    v, rate = soundfile.read(result.separated[0].vocals_path)
    i, _ = soundfile.read(result.separated[0].instrumental_path)
    assert rate == SR and v.shape == (int(0.4 * SR), 2)
    np.testing.assert_allclose(v + i, stereo_tone(0.4).T, atol=2 / 32768)


def test_stems_can_be_written_as_stereo_m4a(project_root: Path, mdx_file: Path, tmp_path: Path) -> None:
    from infer_pack.audio import load_audio

    soundfile.write(tmp_path / "song.wav", stereo_tone(1.0).T, SR)
    result = separate_audio(project=project_root, model=mdx_file, input_path=tmp_path / "song.wav",
                            output_dir=tmp_path / "out", output_format="m4a")  # fmt: skip
    assert result.ok, result.summary()
    vocals = result.separated[0].vocals_path
    assert vocals.suffix == ".m4a"
    import av

    with av.open(str(vocals)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac" and stream.codec_context.channels == 2
        assert stream.codec_context.sample_rate == SR
    mono = load_audio(vocals, SR)  # decodes: about a second of sound, not silence
    assert abs(mono.shape[0] - SR) < SR // 10 and float(np.abs(mono).max()) > 1e-3
