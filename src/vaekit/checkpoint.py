"""Files that must never be half-written: atomic writes, safetensors weights, JSON metadata.

Nothing here unpickles: tensors are stored with safetensors and metadata as JSON,
so loading a file from someone else cannot run code.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

__all__ = ["CheckpointError", "atomic_write", "atomic_write_bytes", "atomic_write_text", "save_weights", "load_weights", "read_json"]


class CheckpointError(ValueError):
    """A checkpoint or run file is missing, unreadable or not what vaekit wrote."""


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` so that readers of ``path`` see the old file or the new one, never a mix.

    The content goes to a temporary file in the same folder, is fsynced, made readable
    (0644, like a normally created file) and renamed over ``path``; if anything fails
    (a full disk, say), the temporary file is removed and the previous file is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_write``)."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_weights(path: str | os.PathLike, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors (e.g. a state_dict) to a safetensors file, atomically."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(flat, metadata=metadata))


def load_weights(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Load a safetensors file onto the CPU: (tensors, metadata). Never unpickles."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"weights file {path} does not exist") from None
    except OSError as e:
        raise CheckpointError(f"cannot read weights file {path}: {e.strerror or e}") from None
    try:
        tensors = st_load(data)
        metadata = _safetensors_metadata(data)
    except (SafetensorError, ValueError, RuntimeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file ({len(data)} bytes): {e}") from None
    return tensors, metadata


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    return dict(header.get("__metadata__", {}) or {})


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON object from ``path`` with a clear CheckpointError on any problem."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(obj).__name__}")
    return obj

