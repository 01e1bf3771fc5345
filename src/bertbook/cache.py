"""The checkpoint cache: train a model once, then every chapter loads it.

A checkpoint is one safetensors file, `<root>/checkpoints/<name>-<key>.safetensors`, where `key`
hashes everything that determines the weights: the training config, the data fingerprint, the
checkpoints it was built from and the package version. Change any of them and the key changes,
so a stale model is never loaded by mistake.

Writes go to a temporary file in the same folder, then `os.replace` renames it into place (atomic
on POSIX), so a run killed mid-write leaves the previous state. A checksum of the tensor bytes
is stored in the file's metadata; a file that fails to parse or to match it is reported, deleted
and treated as missing, so the caller retrains.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from typing import Any, Dict, Optional, Tuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

FORMAT_VERSION = 1  # bump when what we store changes: it invalidates every key


class CorruptCheckpointWarning(UserWarning):
    """A cached checkpoint could not be read back intact; it was deleted and will be retrained."""


class _ChecksumError(ValueError):
    """The tensors read back do not match the checksum stored with them (or there is none)."""


# What a damaged file raises: safetensors' header errors (truncated, garbage, bad JSON), our checksum,
# our metadata's JSON. Anything else (PermissionError, MemoryError, a folder in the way, ...) is not
# the file's fault: it propagates, and the checkpoint is kept.
CORRUPTION_ERRORS = (SafetensorError, _ChecksumError, json.JSONDecodeError)


def cache_root(cache_dir: Optional[str] = None) -> str:
    """`cache_dir`, else `$BERTBOOK_CACHE`, else `~/.cache/bertbook` (the tokenizer uses the same)."""
    return cache_dir or os.environ.get("BERTBOOK_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "bertbook")


def package_version() -> str:
    from . import __version__
    return __version__


def cache_key(*parts: Any, length: int = 16) -> str:
    """A short sha256 of `parts` (JSON-serialisable: configs as dicts, fingerprints, other keys)
    together with the package and format versions."""
    try:
        blob = json.dumps([package_version(), FORMAT_VERSION, *parts], sort_keys=True, default=_jsonable)
    except TypeError as e:
        raise TypeError(f"cache_key parts must be JSON-serialisable: {e}") from None
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _jsonable(x: Any) -> Any:
    if hasattr(x, "to_dict"):
        return x.to_dict()
    if hasattr(x, "__dataclass_fields__"):
        from dataclasses import asdict
        return asdict(x)
    if isinstance(x, (tuple, set)):
        return list(x)
    raise TypeError(f"cannot hash object of type {type(x).__name__}")


def checkpoint_path(name: str, key: str, cache_dir: Optional[str] = None) -> str:
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"checkpoint name must be a plain file-name stem, got {name!r}")
    return os.path.join(cache_root(cache_dir), "checkpoints", f"{name}-{key}.safetensors")


def _checksum(tensors: Dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: str, state_dict: Dict[str, torch.Tensor], metadata: Optional[Dict[str, Any]] = None) -> str:
    """Write `state_dict` (+ JSON-serialisable `metadata`) atomically to `path`; returns `path`."""
    if not state_dict:
        raise ValueError("refusing to save an empty state dict")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    meta = {"bertbook": json.dumps(metadata or {}, default=_jsonable), "checksum": _checksum(tensors)}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=folder)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_checkpoint(path: str) -> Optional[Tuple[Dict[str, torch.Tensor], Dict[str, Any]]]:
    """(state_dict, metadata), or None if there is no file. A corrupt file (not safetensors,
    truncated, or whose tensors do not match the stored checksum: `CORRUPTION_ERRORS`) triggers a
    CorruptCheckpointWarning, is deleted, and gives None, so the caller retrains. Any other error
    while reading (no permission, out of memory, ...) is raised, and the file is left alone."""
    if not os.path.exists(path):
        return None
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if "checksum" not in meta or _checksum(tensors) != meta["checksum"]:
            raise _ChecksumError("checksum mismatch")
        metadata = json.loads(meta.get("bertbook", "{}"))
    except CORRUPTION_ERRORS as e:
        warnings.warn(f"corrupt checkpoint {path} ({type(e).__name__}: {e}); deleting it and retraining",
                      CorruptCheckpointWarning, stacklevel=2)
        try:
            os.remove(path)
        except OSError:
            pass
        return None
    return tensors, metadata
