"""Safe loading of PyTorch pickles: only tensors and plain containers, never arbitrary code."""

from __future__ import annotations

import pickle
import struct
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
        text = str(exc)
        # Any request for a global (class or function) outside the allow-list marks a pickle that
        # would build or call arbitrary objects: refuse it as unsafe, not merely corrupt.
        unsupported = [
            line.strip()
            for line in text.splitlines()
            if "unsupported global" in line.lower() or "global" in line.lower() and "blocked" in line.lower()
        ]
        if unsupported:
            raise UnsafeFileError(path, unsupported[0]) from None
        first_line = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
        raise ModelFileError(path, f"corrupt or not a PyTorch weights file ({first_line[:200]})") from None
    except MemoryError:
        raise ModelFileError(path, "the file claims an impossible size (corrupt or hostile)") from None
    except (
        RuntimeError,
        EOFError,
        OSError,
        zipfile.BadZipFile,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
        AssertionError,
        OverflowError,
        UnicodeDecodeError,
        struct.error,
    ) as exc:
        raise ModelFileError(path, f"truncated or not a PyTorch file ({type(exc).__name__}: {str(exc)[:200]})") from None


class _WriteRecorder:
    """A file-like wrapper that keeps the OSError a write raised.

    torch's archive writer turns a failed write into its own RuntimeError ("unexpected pos"), losing
    the reason; the recorded error says whether the disk was full or a size limit was reached.
    """

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return int(self._handle.write(data))
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self._handle.flush()
        except OSError as exc:
            self.error = exc
            raise


def torch_save_atomic(obj: Any, path: str | Path) -> Path:
    """`torch.save` to `path` atomically; a full disk raises DiskFullError and keeps the old file.

    A write that fails inside torch's archive writer surfaces as the OS error it was (ENOSPC, EFBIG),
    which `atomic_path` turns into DiskFullError naming the file.
    """
    import torch

    from infer_pack.fileio import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        recorder = _WriteRecorder(handle)
        try:
            torch.save(obj, recorder)  # type: ignore[arg-type]
        except RuntimeError:
            if recorder.error is not None:
                raise recorder.error from None
            raise
    return path
