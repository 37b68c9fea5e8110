"""Files that must never be half-written or silently wrong: atomic writes, safetensors
weights with a SHA-256 of their tensor bytes, JSON metadata, the training checkpoint's
format, and the lock that keeps one writer per run folder.

Nothing here unpickles: tensors are stored with safetensors and metadata as JSON,
so loading a file from someone else cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sys
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO, Callable, Collection

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

__all__ = [
    "CheckpointError", "atomic_write", "atomic_write_bytes", "atomic_write_text", "save_weights", "load_weights", "read_json",
    "Position", "TrainState", "capture_rng", "restore_rng", "state_to_tensors", "state_from_tensors",
    "save_checkpoint", "load_checkpoint", "CHECKPOINT", "CHECKPOINT_FORMAT", "RunLock", "RunLockedError", "DIGEST_KEY",
    "remove_stale_temp_files",
]

#: metadata key of the SHA-256 (hex) of a safetensors file's tensor bytes
DIGEST_KEY = "vaekit.sha256"


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


#: the temporary name ``atomic_write`` gives ``.NAME.XXXXXXXX.tmp`` (``tempfile.mkstemp``: 8 of [a-z0-9_])
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


def remove_stale_temp_files(folder: str | os.PathLike, names: Collection[str]) -> list[Path]:
    """Remove the temporary files that ``atomic_write`` of a file in ``names`` left in ``folder`` when a
    kill interrupted it (``.NAME.XXXXXXXX.tmp``); returns their paths, sorted. Nothing else is touched.

    Call it only while no other process can be writing those files (under the folder's ``RunLock``).
    """
    removed = []
    for path in sorted(Path(folder).iterdir()):
        match = _TEMP_NAME.fullmatch(path.name)
        if match and match["name"] in names and path.is_file() and not path.is_symlink():
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_write``)."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _data_section(data: bytes) -> bytes:
    """The tensor bytes of a serialized safetensors file (everything after its JSON header)."""
    return data[8 + int.from_bytes(data[:8], "little") :]


def save_weights(path: str | os.PathLike, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors (e.g. a state_dict) to a safetensors file, atomically, with the SHA-256 of
    their bytes in the metadata (``DIGEST_KEY``), which ``load_weights`` checks."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {k: v for k, v in (metadata or {}).items() if k != DIGEST_KEY}
    # the tensor bytes do not depend on the header, so the digest of a first serialization holds for the second
    digest = hashlib.sha256(_data_section(st_save(flat, metadata=meta or None))).hexdigest()
    atomic_write_bytes(path, st_save(flat, metadata={**meta, DIGEST_KEY: digest}))


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
    digest = metadata.get(DIGEST_KEY)
    if digest is None:
        print(f"vaekit: note: {path} has no SHA-256 of its tensors (written before vaekit checked them); loaded unchecked", file=sys.stderr)
    elif hashlib.sha256(_data_section(data)).hexdigest() != digest:
        raise CheckpointError(
            f"{path} is corrupted: its tensor bytes do not match the SHA-256 stored in it (the file changed after it "
            "was written); restore it from a copy or retrain"
        )
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



# ----------------------------------------------------------------------------- the training checkpoint

CHECKPOINT = "checkpoint.safetensors"
CHECKPOINT_FORMAT = "vaekit.checkpoint/1"


@dataclass
class Position:
    """Where training stands, after a completed step: the next batch to train is batch ``batch`` of
    epoch ``epoch`` (0-based) of that epoch's data order, which depends only on (seed, epoch).

    The trainer keeps one as it goes, and the checkpoint's ``TrainState`` is one (plus what else
    resuming needs), so these fields exist once.
    """

    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # batches of that epoch already consumed (trained or skipped)
    seconds: float = 0.0  # training time so far (set when a state is taken)
    skipped: int = 0  # non-finite batches skipped so far
    epoch_start_step: int = 0  # `step` when the epoch in progress began
    epoch_start_skipped: int = 0  # `skipped` when the epoch in progress began

    def next_epoch(self) -> None:
        """The epoch in progress ran to its end: move to the start of the next one."""
        self.epoch, self.batch = self.epoch + 1, 0
        self.epoch_start_step, self.epoch_start_skipped = self.step, self.skipped

    def position(self) -> "Position":
        """A copy of just the position (of a ``TrainState`` too)."""
        return Position(**{f.name: getattr(self, f.name) for f in fields(Position)})


@dataclass(kw_only=True)
class TrainState(Position):
    """Everything needed to continue training exactly where it stopped: the ``Position`` and the rest."""

    elbos: Tensor  # [step] per-step ELBO so far, CPU
    optimizer: dict[str, Any]  # optimizer.state_dict()
    rng: dict[str, Any]  # capture_rng()
    finished: bool = False
    world_size: int = 1  # data-parallel processes that trained it (batch positions count global batches)
    objective: Tensor | None = None  # [step] per-step training objective (nats per image; None: the ELBO)
    extras: dict[str, Tensor] = field(default_factory=dict)  # name -> [step] the objective's own terms per step


def capture_rng() -> dict[str, Any]:
    """The state of every random generator training touches: Python, NumPy, torch CPU and CUDA."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def state_to_tensors(state: TrainState) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Flatten a TrainState into tensors and a JSON-able dict (for safetensors: nothing pickled)."""
    tensors: dict[str, Tensor] = {"elbos": state.elbos, "rng/torch": state.rng["torch"]}
    if state.objective is not None:
        tensors["objective"] = state.objective
    for name, values in state.extras.items():
        tensors[f"extra/{name}"] = values
    for i, t in enumerate(state.rng.get("cuda", [])):
        tensors[f"rng/cuda/{i}"] = t
    np_name, np_keys, np_pos, np_has_gauss, np_cached = state.rng["numpy"]
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(np_keys, dtype=np.int64))
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in state.optimizer["state"].items():
        for key, value in pstate.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{idx}/{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    meta = {
        "step": state.step, "epoch": state.epoch, "batch": state.batch, "seconds": state.seconds,
        "skipped": state.skipped, "finished": state.finished,
        "epoch_start_step": state.epoch_start_step, "epoch_start_skipped": state.epoch_start_skipped,
        "world_size": state.world_size, "param_groups": state.optimizer["param_groups"], "optim_scalars": scalars,
        "rng_python": [state.rng["python"][0], list(state.rng["python"][1]), state.rng["python"][2]],
        "rng_numpy": [np_name, int(np_pos), int(np_has_gauss), float(np_cached)],
    }
    return tensors, meta


def state_from_tensors(tensors: dict[str, Tensor], meta: dict[str, Any]) -> TrainState:
    """Inverse of ``state_to_tensors``; raises KeyError/ValueError/TypeError on a malformed input."""
    optim_state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if name.startswith("optim/"):
            _, idx, key = name.split("/", 2)
            optim_state.setdefault(int(idx), {})[key] = t
    for idx, values in meta["optim_scalars"].items():
        optim_state.setdefault(int(idx), {}).update(values)
    py = meta["rng_python"]
    np_name, np_pos, np_has_gauss, np_cached = meta["rng_numpy"]
    rng: dict[str, Any] = {
        "python": (int(py[0]), tuple(int(v) for v in py[1]), py[2]),
        "numpy": (np_name, tensors["rng/numpy"].numpy().astype(np.uint32), np_pos, np_has_gauss, np_cached),
        "torch": tensors["rng/torch"],
    }
    cuda = sorted((int(k.rsplit("/", 1)[1]), t) for k, t in tensors.items() if k.startswith("rng/cuda/"))
    if cuda:
        rng["cuda"] = [t for _, t in cuda]
    return TrainState(
        step=int(meta["step"]), epoch=int(meta["epoch"]), batch=int(meta["batch"]), seconds=float(meta["seconds"]),
        skipped=int(meta["skipped"]), elbos=tensors["elbos"], finished=bool(meta["finished"]),
        epoch_start_step=int(meta["epoch_start_step"]), epoch_start_skipped=int(meta["epoch_start_skipped"]),
        optimizer={"state": optim_state, "param_groups": meta["param_groups"]}, rng=rng,
        world_size=int(meta.get("world_size", 1)), objective=tensors.get("objective"),
        extras={k[len("extra/") :]: t for k, t in tensors.items() if k.startswith("extra/")},  # none in older checkpoints
    )


def save_checkpoint(
    out: Path, model_state: dict[str, Tensor], state: TrainState, rows: list[dict[str, Any]], meta: dict[str, Any]
) -> None:
    """Write checkpoint.safetensors (model, optimizer, RNG, position, config, metrics), then
    the files people read (model.safetensors, metrics.jsonl), each atomically.

    The checkpoint is the source of truth: a crash between the writes is repaired on resume.
    """
    tensors, info = state_to_tensors(state)
    tensors.update({f"model/{k}": v for k, v in model_state.items()})
    info.update(format=CHECKPOINT_FORMAT, config=meta, metrics=rows)
    save_weights(out / CHECKPOINT, tensors, {"vaekit": json.dumps(info)})
    save_weights(out / "model.safetensors", model_state, {"format": "vaekit.VAE"})
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def load_checkpoint(out: Path) -> tuple[dict[str, Tensor], TrainState, list[dict[str, Any]]]:
    """Read a run's checkpoint: (model state_dict, TrainState, metrics rows); CheckpointError if unusable."""
    path = Path(out) / CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"nothing to resume: {path} does not exist (was the run started by vaekit train?)")
    tensors, header = load_weights(path)
    try:
        info = json.loads(header["vaekit"])
        if info.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format {info.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
        state = state_from_tensors(tensors, info)
        rows = list(info["metrics"])
        if not (0 <= state.epoch_start_step <= state.step == len(state.elbos)):
            raise ValueError(f"inconsistent position: step {state.step}, {len(state.elbos)} ELBO values, epoch start {state.epoch_start_step}")
        if state.objective is not None and len(state.objective) != state.step:
            raise ValueError(f"inconsistent position: step {state.step}, {len(state.objective)} objective values")
        for name, values in state.extras.items():
            if len(values) != state.step:
                raise ValueError(f"inconsistent position: step {state.step}, {len(values)} values of the term {name!r}")
        if state.rng["torch"].shape != torch.get_rng_state().shape:
            raise ValueError(f"rng/torch has shape {list(state.rng['torch'].shape)}, expected {list(torch.get_rng_state().shape)}")
    except (KeyError, ValueError, TypeError, IndexError, AttributeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a vaekit checkpoint: {type(e).__name__}: {e}") from None
    model_sd = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    return model_sd, state, rows


# ----------------------------------------------------------------------------- one writer per run folder

LOCK_FILE = ".vaekit.lock"


class RunLock:
    """An exclusive OS advisory lock (flock) on ``RUN_DIR/.vaekit.lock`` while a process writes the folder.

    The kernel releases it when the process dies, however it dies, so a later writer takes
    over from a dead one (its lock file is left behind; taking it over reuses it). A second
    writer while the holder lives gets a ``RunLockedError`` naming the folder and the PID
    holding it. ``release`` removes the lock file, so a finished run folder holds none.
    Where flock does not exist (Windows) the lock is a no-op.

    Removing the file on release races with a process that opened it just before: that
    process could lock the removed file while a third creates and locks a new one. So the
    holder removes the file while it still holds the lock, and ``acquire``, once it holds the
    lock, checks that the path still names the file it locked, and starts over if not.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                finally:
                    os.close(fd)
                raise RunLockedError(
                    f"run folder {self.path.parent} is in use by another vaekit process (PID {holder}); wait for it to "
                    "finish or stop it, or choose another --out"
                ) from None
            if self._names(fd):
                break
            os.close(fd)  # its holder removed it as we opened it: lock the path's new file instead
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def _names(self, fd: int) -> bool:
        """Whether ``self.path`` is the file open as ``fd`` (not removed, nor replaced by another)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        if self._fd is not None:
            try:
                if self._names(self._fd):
                    os.unlink(self.path)  # while still locked: whoever opened it retries on the path (see acquire)
            except OSError:
                pass  # a folder that became read-only, say: a lock file left behind is taken over next time
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


class RunLockedError(CheckpointError):
    """Another process holds the run folder's lock."""
