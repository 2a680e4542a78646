"""Safe loading of PyTorch pickles: only tensors and plain containers, never arbitrary code."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infer_pack.errors import ModelFileError, UnsafeFileError


def safe_torch_load(path: str | Path, *, allowed_globals: Sequence[Any] = ()) -> Any:
    """`torch.load(path, weights_only=True)` on CPU with errors that name the file.

    `allowed_globals` lists extra classes the weights-only unpickler may build (used for stub
    classes such as fairseq's Dictionary inside hubert_base.pt). A pickle asking for anything
    else is refused with UnsafeFileError before any of its code runs.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "file not found", "check the path")
    if path.stat().st_size == 0:
        raise ModelFileError(path, "the file is empty")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Unsupported global" in str(exc) or "Weights only load failed" in str(exc):
            detail = next((line for line in str(exc).splitlines() if "Unsupported global" in line), first_line)
            raise UnsafeFileError(path, detail.strip()) from None
        raise ModelFileError(path, f"corrupt pickle data ({first_line})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise ModelFileError(path, f"truncated or not a PyTorch file ({type(exc).__name__}: {exc})") from None
