"""One function per user action; the CLI and the web app call these and only render the results.

Names are re-exported lazily (PEP 562) so `import tools.api` stays cheap: the module holding a
function (and torch, faiss, ... behind it) is imported on first use. The same names are imported
statically for type checkers, so every `api.x(...)` call is checked against the function it reaches.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tools.api.assets import asset_status as asset_status
    from tools.api.assets import download_assets as download_assets
    from tools.api.convert import convert_batch as convert_batch
    from tools.api.convert import convert_voice as convert_voice
    from tools.api.dataset import dataset_health as dataset_health
    from tools.api.dataset import extract_features as extract_features
    from tools.api.dataset import import_dataset_files as import_dataset_files
    from tools.api.dataset import preprocess_dataset as preprocess_dataset
    from tools.api.index import train_index as train_index
    from tools.api.models import change_voice_info as change_voice_info
    from tools.api.models import export_onnx as export_onnx
    from tools.api.models import extract_small_model as extract_small_model
    from tools.api.models import merge_voices as merge_voices
    from tools.api.models import show_voice_info as show_voice_info
    from tools.api.pitch import extract_pitch_curve as extract_pitch_curve
    from tools.api.pitch import save_pitch_curve as save_pitch_curve
    from tools.api.realtime import list_audio_devices as list_audio_devices
    from tools.api.realtime import run_realtime as run_realtime
    from tools.api.realtime import start_chunk_stream as start_chunk_stream
    from tools.api.realtime import stream_file as stream_file
    from tools.api.realtime_background import start_background_chunk_stream as start_background_chunk_stream
    from tools.api.separate import separate_audio as separate_audio
    from tools.api.specs import conversion_param_specs as conversion_param_specs
    from tools.api.train_request import training_param_specs as training_param_specs
    from tools.api.training import loss_curve_figure as loss_curve_figure
    from tools.api.training import loss_series as loss_series
    from tools.api.training import one_click as one_click
    from tools.api.training import train_model as train_model
    from tools.api.training import training_losses as training_losses
    from tools.api.training import validation_summary as validation_summary

_EXPORTS: dict[str, str] = {
    "show_voice_info": "models",
    "change_voice_info": "models",
    "merge_voices": "models",
    "extract_small_model": "models",
    "export_onnx": "models",
    "preprocess_dataset": "dataset",
    "extract_features": "dataset",
    "import_dataset_files": "dataset",
    "dataset_health": "dataset",
    "train_model": "training",
    "one_click": "training",
    "training_losses": "training",
    "loss_series": "training",
    "loss_curve_figure": "training",
    "validation_summary": "training",
    "train_index": "index",
    "convert_voice": "convert",
    "convert_batch": "convert",
    "extract_pitch_curve": "pitch",
    "save_pitch_curve": "pitch",
    "conversion_param_specs": "specs",
    "training_param_specs": "train_request",
    "asset_status": "assets",
    "download_assets": "assets",
    "separate_audio": "separate",
    "list_audio_devices": "realtime",
    "run_realtime": "realtime",
    "stream_file": "realtime",
    "start_chunk_stream": "realtime",
    "start_background_chunk_stream": "realtime_background",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'tools.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tools.api.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
