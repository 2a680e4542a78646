"""One function per user action; the CLI and the web app call these and only render the results.

Names are re-exported lazily (PEP 562) so `import tools.api` stays cheap: the module holding a
function (and torch, faiss, ... behind it) is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "show_voice_info": "models",
    "change_voice_info": "models",
    "merge_voices": "models",
    "extract_small_model": "models",
    "export_onnx": "models",
    "preprocess_dataset": "dataset",
    "extract_features": "dataset",
    "import_dataset_files": "dataset",
    "train_model": "training",
    "one_click": "training",
    "train_index": "index",
    "convert_voice": "convert",
    "convert_batch": "convert",
    "asset_status": "assets",
    "download_assets": "assets",
    "separate_audio": "separate",
    "list_audio_devices": "realtime",
    "run_realtime": "realtime",
    "stream_file": "realtime",
    "start_chunk_stream": "realtime",
}

__all__ = [
    "asset_status", "change_voice_info", "convert_batch", "convert_voice", "download_assets", "export_onnx",
    "extract_features", "extract_small_model", "merge_voices", "one_click", "preprocess_dataset", "show_voice_info",
    "separate_audio", "train_index", "train_model", "list_audio_devices", "run_realtime", "stream_file",
    "start_chunk_stream", "import_dataset_files",
]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'tools.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tools.api.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
