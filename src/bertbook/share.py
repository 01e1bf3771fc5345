"""Trained models shared instead of trained again: the cache's checkpoints packed with a manifest,
unpacked into another cache, or fetched stage by stage when a stage is missing.

`pack(out)` writes every checkpoint of the cache (`<root>/checkpoints/<stage>-<key>.safetensors`)
into the folder `out`, or into one tar archive when `out` ends in .tar, .tar.gz or .tgz, with
`manifest.json`: for each file its stage, key, name, sha256 and size in bytes, and `trained_on`,
the torch version and CPU flags that the checkpoint recorded when it was trained (null where it
recorded none); once for the whole pack, the package version and `packed_on`, the torch version
and CPU flags of the machine that packed it.

`unpack(src)` fills the cache from such a folder, archive or http(s) URL. Each file is written to
a temporary file in the cache's folder and renamed into place only once its size and sha256 are
the manifest's, so a damaged or tampered file is refused, by name, and nothing of it remains.
Files already in the cache and identical are skipped. An archive with a member whose path is
absolute or climbs out with '..' is refused before anything is written.

`fetch_checkpoint`, which the pipeline calls for a stage missing from the cache before it trains
anything, does the same from `$BERTBOOK_CHECKPOINTS` (a pack's folder, archive or URL): the manifest
is read once per process and source, and if it lists the stage's file (same stage, same key) the
file is downloaded, checked and placed. A source that cannot be reached is one line on stderr, a
download that fails the check a CorruptCheckpointWarning; either way the stage is then trained, as
without a source.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import re
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Tuple, Union

from . import distributed as dist
from .cache import (CORRUPTION_ERRORS, CorruptCheckpointWarning, cache_root, checkpoint_path, package_version,
                    replacing, verify_checkpoint)
from .device import machine_record

ENV = "BERTBOOK_CHECKPOINTS"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1  # bump when the manifest's fields change meaning
ARCHIVE_SUFFIXES = {".tar.gz": "gz", ".tgz": "gz", ".tar": ""}  # name ending -> tarfile compression
TIMEOUT = 30  # seconds a web server may stay silent before it counts as unreachable
_CHUNK = 1 << 20
# A checkpoint's file name: the stage, then its key after the last hyphen (stages have hyphens, keys none).
_FILE_NAME = re.compile(r"(?P<stage>[A-Za-z0-9][A-Za-z0-9_-]*)-(?P<key>[0-9a-f]{8,64})\.safetensors")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MANIFESTS: Dict[str, Optional[Dict[str, Any]]] = {}  # a source's manifest (None: unreachable), per process


class PackError(ValueError):
    """A pack of checkpoints, its manifest or a file in it is not what it should be."""


class ChecksumMismatch(PackError):
    """A file's size or sha256 is not the one its manifest lists: it was refused, and nothing of it kept."""


class UnsafeArchiveError(PackError):
    """An archive holds a member whose path is absolute or climbs out with '..', or that is a link."""


# --------------------------------------------------------------------------- files and manifests


def _digest(src: BinaryIO, limit: Optional[int] = None, sink: Optional[BinaryIO] = None,
            bar: Any = None) -> Tuple[str, int]:
    """(sha256, bytes) of what `src` gives, read to its end or to `limit` bytes; written on to
    `sink` and counted on the progress `bar` when they are given."""
    h, n = hashlib.sha256(), 0
    while limit is None or n < limit:
        chunk = src.read(_CHUNK if limit is None else min(_CHUNK, limit - n))
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
        if sink is not None:
            sink.write(chunk)
        if bar is not None:
            bar.update(len(chunk))
    return h.hexdigest(), n


def _identical(path: str, entry: Dict[str, Any]) -> bool:
    """Whether the file at `path` is the manifest entry's, byte for byte (size and sha256)."""
    try:
        if os.path.getsize(path) != entry["bytes"]:
            return False
        with open(path, "rb") as f:
            return _digest(f)[0] == entry["sha256"]
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return False


def _place(src: BinaryIO, entry: Dict[str, Any], dest: str, where: str, progress: bool = False) -> None:
    """Copy `src` to `dest` through a temporary file beside it, renamed into place only once its size
    and sha256 are the manifest `entry`'s. Otherwise the temporary file is deleted and
    ChecksumMismatch names `where`, the file's origin; `dest` is then as it was."""
    from tqdm.auto import tqdm

    with replacing(dest, ".part") as tmp:
        with open(tmp, "wb") as out, tqdm(total=entry["bytes"], desc=entry["file"], unit="B", unit_scale=True,
                                          unit_divisor=1024, leave=False, disable=not progress) as bar:
            # one byte more than listed, so that a longer file is seen to be longer
            digest, size = _digest(src, limit=entry["bytes"] + 1, sink=out, bar=bar)
            out.flush()
            os.fsync(out.fileno())  # the bytes are on disk before the rename makes them visible
        if size != entry["bytes"]:
            found = "longer than the" if size > entry["bytes"] else f"{size} bytes, not the"
            raise ChecksumMismatch(f"{where} does not match the manifest ({found} {entry['bytes']} bytes listed): "
                                   "refused, nothing of it kept")
        if digest != entry["sha256"]:
            raise ChecksumMismatch(f"{where} does not match the manifest (sha256 {digest}, listed "
                                   f"{entry['sha256']}): refused, nothing of it kept")


def read_manifest(data: Union[str, bytes], where: str) -> Dict[str, Any]:
    """The manifest in `data` (read from `where`, which errors name), checked: every entry has a
    checkpoint's file name, the stage and key that name holds, a sha256 and a size in bytes."""
    try:
        manifest = json.loads(data)
    except ValueError as e:
        raise PackError(f"{where} is not JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or \
            not isinstance(manifest.get("files"), list):
        raise PackError(f"{where} is not a checkpoint manifest of format {MANIFEST_FORMAT}")
    for i, entry in enumerate(manifest["files"]):
        name = entry.get("file") if isinstance(entry, dict) else None
        match = _FILE_NAME.fullmatch(name) if isinstance(name, str) else None
        if not (match and (entry.get("stage"), entry.get("key")) == (match["stage"], match["key"])
                and isinstance(entry.get("bytes"), int) and entry["bytes"] >= 0
                and isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])):
            raise PackError(f"{where}: entry {i} ({name!r}) needs stage, key, file named <stage>-<key>.safetensors, "
                            "sha256 and bytes")
    return manifest


# --------------------------------------------------------------------------- where a pack is read from


class _Folder:
    """A pack written to a folder."""

    def __init__(self, path: str) -> None:
        self.path = path

    def where(self, name: str) -> str:
        return os.path.join(self.path, name)

    def open(self, name: str) -> BinaryIO:
        return open(self.where(name), "rb")


class _Archive:
    """A pack in a tar archive (compressed or not), its members checked when it is opened."""

    def __init__(self, path: str, tar: tarfile.TarFile) -> None:
        self.path, self.tar = path, tar
        members = tar.getmembers()
        for m in members:
            parts = m.name.replace("\\", "/").split("/")
            if m.name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", m.name):
                raise UnsafeArchiveError(f"{path}: member {m.name!r} is an absolute path: refused, nothing unpacked")
            if ".." in parts:
                raise UnsafeArchiveError(f"{path}: member {m.name!r} climbs out with '..': refused, nothing unpacked")
            if not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(f"{path}: member {m.name!r} is a link or a device, not a file: refused, "
                                         "nothing unpacked")
        self.files = {posixpath.normpath(m.name): m for m in members if m.isfile()}
        # a pack archived from its folder (`tar czf pack.tgz pack/`) has its files one folder down
        manifests = [n for n in self.files if posixpath.basename(n) == MANIFEST]
        if len(manifests) != 1:
            raise PackError(f"{path} holds {len(manifests)} files named {MANIFEST}; a pack holds one")
        self.prefix = posixpath.dirname(manifests[0])

    def where(self, name: str) -> str:
        return f"{name} in {self.path}"

    def open(self, name: str) -> BinaryIO:
        member = self.files.get(posixpath.join(self.prefix, name))
        if member is None:
            raise FileNotFoundError(f"{name} is not in {self.path}")
        return self.tar.extractfile(member)


class _Web:
    """A pack's folder served over http(s)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def where(self, name: str) -> str:
        return f"{self.url}/{urllib.parse.quote(name)}"

    def open(self, name: str) -> BinaryIO:
        request = urllib.request.Request(self.where(name), headers={"User-Agent": f"bertbook/{package_version()}"})
        try:
            return urllib.request.urlopen(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise FileNotFoundError(f"{name} is not at {self.url} (HTTP 404)") from None
            raise


_Source = Union[_Folder, _Archive, _Web]


@contextlib.contextmanager
def _open_source(src: str) -> Iterator[_Source]:
    """The pack at `src`: an http(s) URL, a folder, or a tar archive."""
    if re.match(r"https?://", src, re.IGNORECASE):
        yield _Web(src)
    elif os.path.isdir(src):
        yield _Folder(src)
    elif os.path.isfile(src):
        try:
            tar = tarfile.open(src, "r:*")
        except tarfile.TarError as e:
            raise PackError(f"{src} is neither a folder nor a tar archive ({e})") from None
        with tar:
            yield _Archive(src, tar)
    else:
        raise FileNotFoundError(f"no folder or archive at {src}")


def _manifest_of(source: _Source) -> Dict[str, Any]:
    try:
        f = source.open(MANIFEST)
    except FileNotFoundError:
        raise PackError(f"no {MANIFEST} at {source.where(MANIFEST)}: not a pack of checkpoints") from None
    with f:
        return read_manifest(f.read(), source.where(MANIFEST))


# --------------------------------------------------------------------------- pack and unpack


def checkpoint_files(cache_dir: Optional[str] = None) -> List[str]:
    """The names of the checkpoints in the cache's folder (`<stage>-<key>.safetensors`), sorted;
    temporary files and anything else there are left out."""
    folder = os.path.join(cache_root(cache_dir), "checkpoints")
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if _FILE_NAME.fullmatch(n) and os.path.isfile(os.path.join(folder, n)))


def archive_compression(path: str) -> Optional[str]:
    """tarfile's compression ("gz" or "") for a name ending in .tar.gz, .tgz or .tar; None for any other name."""
    return next((c for suffix, c in ARCHIVE_SUFFIXES.items() if path.lower().endswith(suffix)), None)


def pack(out: str, cache_dir: Optional[str] = None) -> Dict[str, Any]:
    """Write every checkpoint of the cache, and `manifest.json`, into the folder `out` (created if
    needed; its other files are left alone), or into one archive if `out` ends in .tar, .tar.gz or
    .tgz. Each checkpoint is first checked against its own checksum: a damaged one is refused, by
    name, rather than shared. The folder's manifest is written last and the archive renamed into
    place whole, so an interrupted pack is never taken for a finished one. Returns the manifest."""
    folder = os.path.join(cache_root(cache_dir), "checkpoints")
    names = checkpoint_files(cache_dir)
    if not names:
        raise FileNotFoundError(f"no checkpoints in {folder}: nothing to pack")
    compression = archive_compression(out)
    if compression is None and os.path.exists(out) and not os.path.isdir(out):
        raise PackError(f"{out} is a file: give a folder, or a name ending in {', '.join(ARCHIVE_SUFFIXES)}")
    with contextlib.ExitStack() as opened:
        files, entries = [], []
        for name in names:
            path = os.path.join(folder, name)
            try:
                trained_on = verify_checkpoint(path)
            except CORRUPTION_ERRORS as e:
                raise PackError(f"{path} is damaged ({type(e).__name__}: {e}): not packed; delete it and run "
                                "its stage again") from None
            # What is hashed and what is copied is one open file: a checkpoint is replaced, never rewritten.
            f = opened.enter_context(open(path, "rb"))
            digest, size = _digest(f)
            f.seek(0)
            match = _FILE_NAME.fullmatch(name)
            entries.append({"stage": match["stage"], "key": match["key"], "file": name, "sha256": digest,
                            "bytes": size, "trained_on": trained_on})
            files.append(f)
        manifest = {"format": MANIFEST_FORMAT, "bertbook": package_version(), "packed_on": machine_record(),
                    "files": entries}
        text = (json.dumps(manifest, indent=2) + "\n").encode()
        if compression is None:
            os.makedirs(out, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):  # a former pack's: it may not list what is copied now
                os.remove(os.path.join(out, MANIFEST))
            for entry, f in zip(entries, files):
                dest = os.path.join(out, entry["file"])
                if not _identical(dest, entry):
                    _place(f, entry, dest, os.path.join(folder, entry["file"]))
            with replacing(os.path.join(out, MANIFEST)) as tmp, open(tmp, "wb") as f:
                f.write(text)
        else:
            _write_archive(out, compression, text, entries, files)
    return manifest


def _write_archive(out: str, compression: str, manifest: bytes, entries: List[Dict[str, Any]],
                   files: List[BinaryIO]) -> None:
    """The manifest, then the files, in a tar archive written beside `out` and renamed to it."""
    def member(name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)  # owner and group left empty: they mean nothing on a reader's machine
        info.size, info.mode, info.mtime = size, 0o644, int(time.time())
        return info

    # Trained weights barely compress, at any level (MiniLM's: to 91.3% at level 1, 90.8% at 9): the fastest.
    level = {"compresslevel": 1} if compression else {}
    with replacing(out) as tmp, tarfile.open(tmp, f"w:{compression}", **level) as tar:
        tar.addfile(member(MANIFEST, len(manifest)), io.BytesIO(manifest))
        for entry, f in zip(entries, files):
            tar.addfile(member(entry["file"], entry["bytes"]), f)


def unpack(src: str, cache_dir: Optional[str] = None, progress: bool = False) -> Dict[str, List[str]]:
    """Fill the cache from the pack at `src` (a folder, a tar archive or an http(s) URL): every file
    its manifest lists is checked against it (size, sha256) before it is placed; one already in the
    cache and identical is skipped. A file that is missing or does not match is named in the
    PackError raised at the end, after the good files are placed; nothing of it is left in the cache.
    Returns the names `placed` and `skipped`."""
    placed: List[str] = []
    skipped: List[str] = []
    problems: List[str] = []
    with _open_source(src) as source:
        manifest = _manifest_of(source)
        for entry in manifest["files"]:
            dest = checkpoint_path(entry["stage"], entry["key"], cache_dir)
            if _identical(dest, entry):
                skipped.append(entry["file"])
                continue
            try:
                f = source.open(entry["file"])
            except FileNotFoundError:
                problems.append(f"{entry['file']} is listed in the manifest but missing from {src}")
                continue
            try:
                with f:
                    _place(f, entry, dest, source.where(entry["file"]), progress)
            except ChecksumMismatch as e:
                problems.append(str(e))
            else:
                placed.append(entry["file"])
    if problems:
        raise PackError("; ".join(problems) + f" ({len(placed)} other files placed, {len(skipped)} already there)")
    return {"placed": placed, "skipped": skipped}


# --------------------------------------------------------------------------- a missing stage, fetched


def _note(message: str) -> None:
    """One line on stderr (once, under torchrun: rank 0's)."""
    if dist.is_main():
        print(f"bertbook: {message}", file=sys.stderr, flush=True)


def _reason(e: BaseException) -> str:
    reason = getattr(e, "reason", None) or e  # URLError keeps the cause in `reason`
    return " ".join(str(reason).split()) or type(e).__name__


def source_manifest(src: str) -> Optional[Dict[str, Any]]:
    """The manifest of the pack at `src`, read once per process; None (after one line on stderr
    that says so) where it cannot be read: offline, no such folder, no manifest there."""
    if src not in _MANIFESTS:
        try:
            with _open_source(src) as source:
                _MANIFESTS[src] = _manifest_of(source)
        except (OSError, ValueError, tarfile.TarError) as e:
            _MANIFESTS[src] = None
            _note(f"no checkpoints from {ENV}={src} ({_reason(e)}): the stages missing from the cache are trained here")
    return _MANIFESTS[src]


def fetch_checkpoint(stage: str, key: str, dest: str, progress: bool = True) -> bool:
    """Place the checkpoint `<stage>-<key>` at `dest` from `$BERTBOOK_CHECKPOINTS` if that is set
    and its manifest lists it: downloaded (with a progress bar when `progress`), checked against
    the manifest and renamed into place. True if it was placed; False, and the caller trains, when
    there is no source, the stage is not in it (one line when `progress`), the source cannot be
    reached (one line) or the download does not match (CorruptCheckpointWarning; it is deleted)."""
    src = os.environ.get(ENV, "").strip()
    if not src:
        return False
    manifest = source_manifest(src)
    if manifest is None:
        return False
    entry = next((e for e in manifest["files"] if (e["stage"], e["key"]) == (stage, key)), None)
    if entry is None:
        if progress:
            _note(f"{stage}-{key} is not among the checkpoints of {src}: training it here")
        return False
    try:
        with _open_source(src) as source, source.open(entry["file"]) as f:
            _place(f, entry, dest, source.where(entry["file"]), progress and dist.is_main())
    except ChecksumMismatch as e:
        warnings.warn(f"{e}; {stage} will be trained here", CorruptCheckpointWarning, stacklevel=3)
        return False
    except (OSError, ValueError, tarfile.TarError) as e:
        _note(f"could not fetch {entry['file']} from {src} ({_reason(e)}): training {stage} here")
        return False
    return True
