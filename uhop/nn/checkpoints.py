"""Checkpoint files of :class:`uhop.nn.BilevelTrainer` (and of anything else that saves tensors): an atomic
write, a loader that refuses anything but tensors and plain Python data, and the global RNG states a resumed
run needs to continue bit for bit (dropout draws from torch's global generator)."""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "global_rng_state", "set_global_rng_state"]


def global_rng_state() -> dict:
    """Every global RNG state as tensors and plain Python types (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                         int(has_gauss), float(cached)),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict) -> None:
    """Restore what :func:`global_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.numpy().astype(np.uint32) if isinstance(keys, torch.Tensor) else np.asarray(keys, dtype=np.uint32)
    np.random.set_state((name, keys, pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """``torch.save`` through a temporary file and a rename: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike, map_location=None) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` with ``torch.load(..., weights_only=True)``: only
    tensors and plain Python containers and scalars are accepted, so a checkpoint received from someone else
    cannot run code when it is loaded (a full unpickle can).  Anything else raises ``ValueError`` naming the
    file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} holds objects other than tensors and plain Python types, which uhop does not "
                         f"load (unpickling them could run code); re-create the checkpoint with this version of "
                         f"uhop. Details: {str(err).splitlines()[0]}") from None
