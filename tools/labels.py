"""English text for the web app, looked up by a stable key.

Behaviour never depends on these strings: widgets carry values (keys, numbers, file names) and the
text shown next to them comes from here, so a translation only swaps this table.
"""

from __future__ import annotations

LABELS: dict[str, str] = {
    # shell
    "app.title": "RVC Workbench",
    "app.subtitle": "Retrieval-based Voice Conversion: convert voices, train your own, manage models.",
    "assets.heading": "Assets",
    "assets.refresh": "Refresh",
    "assets.download": "Download missing assets",
    "assets.present": "present",
    "assets.missing": "missing",
    "tab.convert": "Convert",
    "tab.batch": "Batch",
    "tab.single": "Single file",
    "tab.train": "Train",
    "tab.model_tools": "Model tools",
    "tab.assets": "Assets",
    # convert
    "convert.audio": "Input audio (upload or record)",
    "convert.voice": "Voice",
    "convert.refresh": "Refresh voices and indexes",
    "convert.index": "Feature index (auto-matched to the voice)",
    "convert.no_index": "(no index)",
    "convert.speaker_id": "Speaker id",
    "convert.transpose": "Transpose (semitones)",
    "convert.f0_method": "Pitch extraction method",
    "convert.index_rate": "Index rate",
    "convert.filter_radius": "Median filter radius",
    "convert.resample": "Output sample rate (Hz, 0 = the voice's)",
    "convert.rms_mix": "Volume envelope mix",
    "convert.protect": "Protect consonants",
    "convert.f0_file": "Pitch curve file (optional, replaces the extracted pitch)",
    "convert.run": "Convert",
    "convert.output": "Converted audio",
    "convert.download": "Download",
    "convert.info": "Result",
    "batch.input_dir": "Input folder (inside the project or an allowed folder)",
    "batch.output_dir": "Output folder",
    "batch.files": "...or upload several files",
    "batch.format": "Output format",
    "batch.run": "Convert all",
    # jobs
    "job.stop": "Stop",
    "job.progress": "Progress",
    "job.log": "Log",
    "job.idle": "idle",
    # train
    "train.experiment": "Experiment name",
    "train.sample_rate": "Target sample rate",
    "train.version": "Model version",
    "train.use_f0": "Pitch guidance (needed for singing; say no only for speech-only voices)",
    "train.processes": "CPU processes for data preparation",
    "train.dataset": "Dataset folder (audio files; inside the project or an allowed folder)",
    "train.speaker_id": "Speaker id",
    "train.f0_method": "Pitch extraction method for training data",
    "train.save_every": "Save a checkpoint every N epochs",
    "train.epochs": "Total epochs",
    "train.batch_size": "Batch size",
    "train.save_latest_only": "Keep only the latest checkpoint (saves disk space)",
    "train.save_small_each": "Export a small voice model to weights/ at every save",
    "train.pretrained_g": "Pretrained generator (G)",
    "train.pretrained_d": "Pretrained discriminator (D)",
    "train.step1": "1. Process data",
    "train.step2": "2. Extract pitch and features",
    "train.step3": "3. Train model",
    "train.step4": "4. Train index",
    "train.one_click": "One-click: all four steps",
    "train.loss": "Loss curve",
    "train.health": "Dataset health report",
    # model tools
    "tools.info_heading": "Show or change a voice's info",
    "tools.model_path": "Voice model (.pth in weights/ or a path)",
    "tools.show_info": "Show info",
    "tools.new_info": "New info text",
    "tools.save_name": "Save as (voice name; empty = overwrite)",
    "tools.change_info": "Change info",
    "tools.merge_heading": "Merge two voices",
    "tools.model_a": "Voice A",
    "tools.model_b": "Voice B",
    "tools.ratio": "Weight of A (0..1)",
    "tools.merge_name": "Name of the merged voice",
    "tools.merge_info": "Info text for the merged voice",
    "tools.merge": "Merge",
    "tools.extract_heading": "Extract a small voice model from a training checkpoint",
    "tools.checkpoint": "Training checkpoint (logs/<experiment>/G_*.pth)",
    "tools.extract_name": "Name of the voice to write into weights/",
    "tools.extract": "Extract",
    "tools.use_f0": "Pitch guidance",
    "tools.onnx_heading": "Export a voice to ONNX",
    "tools.onnx_output": "ONNX file to write (empty = next to the voice)",
    "tools.export": "Export ONNX",
    "tools.result": "Result",
}


def label(key: str) -> str:
    """The text for `key`; an unknown key shows itself so a missing entry is visible, not fatal."""
    return LABELS.get(key, key)
