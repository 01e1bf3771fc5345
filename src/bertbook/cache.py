"""The checkpoint cache: train a model once, then every chapter loads it.

A checkpoint is one safetensors file, `<root>/checkpoints/<name>-<key>.safetensors`. What its key
covers (`bertbook.pipeline` builds it with `cache_key`):

* the stage's name and the version of its recipe, the code that trains it (`bertbook.recipes`; a
  test fails when that code changes and the version does not);
* every setting of the stage that can change its weights (its dataclass of `bertbook.configs`,
  less the fields it never reads), and its seed;
* the data: a fingerprint of the corpus or data set's content and of how it is cut, and of the
  tokenizer by its content (`tokenizer.tokenizer_digest`; chapter 4's also by `TOKENIZER_VERSION`);
* the key of every stage it starts from (a teacher, a copied model), so a retrained upstream model
  retrains what was built on it; and the Hugging Face name of MiniLM where MiniLM's weights are read;
* `FORMAT_VERSION`, the layout of what is stored.

Not covered: the versions of torch and of the other libraries, the CPU and its thread count. They
change the last bits of a training run (float sums in another order), not what it is; the file
records the torch version and CPU flags that made it (below) so that a reader can see them.

Writes go to a temporary file in the same folder, then `os.replace` renames it into place (atomic
on POSIX), so a run killed mid-write leaves the previous state; temporary files that a killed
writer left are removed once they are older than `STALE_SECONDS`. A checksum of the tensor bytes
is stored in the file's metadata, with the torch version and CPU flags of the machine that wrote
it (`device.machine_record`, read back by `verify_checkpoint`; no key covers them); a file that
fails to parse or to match the checksum is reported, deleted and treated as missing, so the
caller retrains. Deleting it is safe when several processes share the cache: the file is first
renamed aside and deleted only if it is still the one that was checked; a good file that another
process wrote meanwhile is put back and read.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Type, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .device import machine_record

T = TypeVar("T")
FORMAT_VERSION = 1  # bump when what we store changes: it invalidates every key
TMP_PREFIX = ".tmp-"  # temporary files in the cache's folders start so
# Older than this, a temporary file's writer is dead: a checkpoint is written in seconds.
STALE_SECONDS = 6 * 3600
# The metadata entry that records the machine a checkpoint was written on: the pipeline writes a
# checkpoint right after training it, so this is the machine that trained it.
MACHINE_FIELD = "machine"


class CorruptCheckpointWarning(UserWarning):
    """A cached checkpoint (or the cached tokenizer) could not be read back intact; it was deleted
    and will be built again."""


class CacheWriteWarning(UserWarning):
    """A trained model could not be written to the cache: it is returned, but not cached."""


# What an error about the cache's folder, or an export's, suggests.
CACHE_HINT = ": set cache_dir (--cache-dir) or $BERTBOOK_CACHE to a folder that can be written"
OUTPUT_HINT = ": choose another output folder"


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
    together with the format version. The package's version is not in it: a release that leaves a
    stage's recipe unchanged keeps its models (`bertbook.recipes` versions each recipe)."""
    try:
        blob = json.dumps([FORMAT_VERSION, *parts], sort_keys=True, default=_jsonable)
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


def remove_stale_temporaries(folder: str, prefix: str = TMP_PREFIX, max_age: float = STALE_SECONDS) -> None:
    """Delete the files and folders in `folder` named `prefix...` whose last change is more than
    `max_age` seconds ago: what killed writers left. A younger one may be a live writer's: kept."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix)]
    except OSError:
        return
    now = time.time()
    for name in names:
        p = os.path.join(folder, name)
        try:
            if now - os.lstat(p).st_mtime <= max_age:
                continue
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.remove(p)
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            pass


def check_writable(path: str, hint: str = "") -> None:
    """Raise now, naming `path`, if a file could not be written there: before a long computation
    whose result goes there, rather than after it. Creates the folder; a directory standing where
    the file goes is an error. `hint` is added to the message (what to do instead)."""
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{path} is a directory, where a file is to be written: "
                                f"move it away{hint}")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path} ({e.strerror or e}){hint}") from e


def save_checkpoint(path: str, state_dict: Dict[str, torch.Tensor], metadata: Optional[Dict[str, Any]] = None) -> str:
    """Write `state_dict` (+ JSON-serialisable `metadata`) atomically to `path`; returns `path`."""
    if not state_dict:
        raise ValueError("refusing to save an empty state dict")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    meta = {"bertbook": json.dumps(metadata or {}, default=_jsonable), "checksum": _checksum(tensors),
            MACHINE_FIELD: json.dumps(machine_record())}
    remove_stale_temporaries(os.path.dirname(os.path.abspath(path)))
    with replacing(path, ".safetensors") as tmp:
        save_file(tensors, tmp, metadata=meta)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
    return path


@contextlib.contextmanager
def replacing(path: str, suffix: str = "") -> Iterator[str]:
    """The path of a new temporary file beside `path` (its folder created if need be) for the block
    to write: renamed to `path` when the block ends, deleted if it raises, so that `path` is only
    ever the old file or the whole new one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def load_checkpoint(path: str) -> Optional[Tuple[Dict[str, torch.Tensor], Dict[str, Any]]]:
    """(state_dict, metadata), or None if there is no file. A corrupt file (not safetensors,
    truncated, or whose tensors do not match the stored checksum: `CORRUPTION_ERRORS`) triggers a
    CorruptCheckpointWarning, is deleted, and gives None, so the caller retrains; if another
    process replaced it meanwhile, the new file is read instead. A directory at `path` is an
    IsADirectoryError; any other error while reading (no permission, out of memory, ...) is
    raised, and the file is left alone."""
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{path} is a directory, where a checkpoint file should be: "
                                "move it away")
    return read_or_discard(path, _read_checkpoint, CORRUPTION_ERRORS, "checkpoint")


def _read_verified(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """The tensors and the raw metadata of the file at `path`, the tensors checked against the checksum."""
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if "checksum" not in meta or _checksum(tensors) != meta["checksum"]:
        raise _ChecksumError("checksum mismatch")
    return tensors, meta


def _read_checkpoint(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    tensors, meta = _read_verified(path)
    return tensors, json.loads(meta.get("bertbook", "{}"))


def verify_checkpoint(path: str) -> Optional[Dict[str, Any]]:
    """Read the checkpoint at `path` and check its tensors against its checksum, raising one of
    `CORRUPTION_ERRORS` if it is damaged (the file is left alone). Returns the machine that wrote
    it, as `device.machine_record` gives it, or None for a file that does not record one."""
    _, meta = _read_verified(path)
    return json.loads(meta[MACHINE_FIELD]) if MACHINE_FIELD in meta else None


def read_or_discard(path: str, read: Callable[[str], T], corrupt: Tuple[Type[BaseException], ...],
                    what: str) -> Optional[T]:
    """`read(path)`, or None if nothing is there. If `read` raises one of `corrupt`, what is at `path`
    is reported (CorruptCheckpointWarning, naming `what` and the path), deleted and None returned, so
    the caller builds it again; if another process replaced it meanwhile, the new one is read."""
    for _ in range(3):  # again only when another process replaced a corrupt one meanwhile
        try:
            checked = os.stat(path)
            return read(path)
        except (FileNotFoundError, NotADirectoryError):  # nothing there, or a file where a folder should be
            return None
        except corrupt as e:
            if remove_if_unchanged(path, checked):
                warnings.warn(f"corrupt {what} {path} ({type(e).__name__}: {e}); deleting it and building it again",
                              CorruptCheckpointWarning, stacklevel=3)
                return None
    return None


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns)


def remove_if_unchanged(path: str, checked: os.stat_result) -> bool:
    """Delete `path` (a file or a folder) if it is still the one whose `os.stat` was `checked`.
    It is renamed aside first (atomic), so that what another process put there after the check is
    never what is deleted: that is put back, and the answer is False. True otherwise (deleted,
    already gone, or not ours to delete)."""
    aside = os.path.join(os.path.dirname(os.path.abspath(path)), f"{TMP_PREFIX}removed-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True
    except OSError:  # cannot be removed (no permission): leave it
        return True
    if _same_file(os.lstat(aside), checked):
        remove = shutil.rmtree if os.path.isdir(aside) else os.remove
        remove(aside)
        return True
    os.replace(aside, path)
    return False

