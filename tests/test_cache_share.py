"""Trained models shared, not retrained: `cache pack` / `cache unpack` and $BERTBOOK_CHECKPOINTS, on the
tiny chain, in temporary caches. Files are checked against the manifest before they are placed; a
tampered file, a corrupt download and an archive that climbs out are refused; an unreachable
source is one line, then the stage trains as without one."""
import contextlib
import glob
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import tarfile
import threading

import pytest
import torch
from safetensors.torch import save_file

import bertbook
from bertbook import cache, device, pipeline, report, share
from bertbook.__main__ import main

SCALE = "tiny"
FAST_REPORT = {"progress": False, "latency_min_run_time": 0.01, "latency_rounds": 1}


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _refuse_training(monkeypatch):
    """Every way the pipeline trains or computes a stage fails the test if it is called."""
    def refuse(*args, **kwargs):
        raise AssertionError("a stage was computed instead of loaded")

    for name in ("pretrain", "distill", "finetune", "predict_logits"):
        monkeypatch.setattr(pipeline, name, refuse)


def _fresh_cache(trained_dir, path):
    """An empty cache but for the tokenizer (not a checkpoint, so in no pack), copied from
    `trained_dir` so that the stage is all that is missing."""
    tokenizers = glob.glob(os.path.join(trained_dir, "tokenizer-*"))
    assert tokenizers, f"no tokenizer in {trained_dir}"
    for tok in tokenizers:
        shutil.copytree(tok, os.path.join(path, os.path.basename(tok)))
    return str(path)


def _damage(path, how):
    data = bytearray(open(path, "rb").read())
    if how == "flip":
        data[len(data) // 2] ^= 0xFF
    elif how == "append":
        data += b"\x00"
    else:
        data = data[:-1]
    open(path, "wb").write(bytes(data))


def _leftovers(cache_dir):
    """What is in the cache's checkpoint folder: file names, temporary files included."""
    folder = os.path.join(cache_dir, "checkpoints")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@contextlib.contextmanager
def _serving(folder):
    """An HTTP server on 127.0.0.1 (a free port) serving `folder` from a thread, stopped on exit;
    yields its URL and the list of the paths it was asked for."""
    requested = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=folder, **kwargs)

        def do_GET(self):
            requested.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # the test's output stays the pipeline's
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def source(monkeypatch):
    """Sets $BERTBOOK_CHECKPOINTS, with the manifests already read in this process forgotten."""
    monkeypatch.setattr(share, "_MANIFESTS", {})
    return lambda src: monkeypatch.setenv(share.ENV, src)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cache holding the whole tiny chain, trained here, its report, and its pack (a folder)."""
    root = tmp_path_factory.mktemp("trained")
    cache_dir, pack_dir = str(root / "cache"), str(root / "pack")
    results = report.report(SCALE, cache_dir, **FAST_REPORT)
    assert main(["cache", "pack", pack_dir, "--cache-dir", cache_dir]) == 0
    return cache_dir, pack_dir, results


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A cache holding the pretraining stage alone (a small file, trained here), its pack, and
    that file's entry."""
    root = tmp_path_factory.mktemp("small")
    cache_dir, pack_dir = str(root / "cache"), str(root / "pack")
    pipeline.pretrained_teacher(SCALE, cache_dir, progress=False)
    (entry,) = share.pack(pack_dir, cache_dir)["files"]
    return cache_dir, pack_dir, entry


def test_pack_then_unpack_loads_every_stage_without_training(trained, tmp_path, monkeypatch, capsys):
    cache_dir, pack_dir, results = trained
    manifest = json.load(open(os.path.join(pack_dir, "manifest.json")))
    names = share.checkpoint_files(cache_dir)
    assert len(names) == 14 and [e["file"] for e in manifest["files"]] == names  # 13 models, the teacher's logits
    for e in manifest["files"]:
        path = os.path.join(cache_dir, "checkpoints", e["file"])
        assert e["file"] == f"{e['stage']}-{e['key']}.safetensors"
        assert (e["bytes"], e["sha256"]) == (os.path.getsize(path), _sha256(path))
        assert _sha256(os.path.join(pack_dir, e["file"])) == e["sha256"]
        assert e["trained_on"] == device.machine_record()  # trained here, just now
    assert manifest["bertbook"] == bertbook.__version__ and manifest["packed_on"]["torch"] == torch.__version__
    flags = manifest["packed_on"]["cpu_flags"]
    assert flags == "unknown" or set(flags) == set(device.CPU_FLAGS)

    empty = str(tmp_path / "cache")
    assert main(["cache", "unpack", pack_dir, "--cache-dir", empty, "--quiet"]) == 0
    assert "unpacked 14 checkpoints" in capsys.readouterr().out
    assert _leftovers(empty) == names
    _refuse_training(monkeypatch)
    again = report.report(SCALE, empty, **FAST_REPORT)
    assert again["cached"] == {stage: True for stage in results["cached"]}
    assert {k: v for k, v in again.items() if k.endswith("accuracy")} == \
        {k: v for k, v in results.items() if k.endswith("accuracy")}
    assert share.unpack(pack_dir, empty) == {"placed": [], "skipped": names}  # identical: left as they are


@pytest.mark.parametrize("how", ["flip", "append", "truncate"])
def test_a_tampered_file_is_refused_by_name_and_nothing_of_it_stays(small, tmp_path, how):
    _, pack_dir, entry = small
    tampered = shutil.copytree(pack_dir, tmp_path / "pack")
    _damage(tampered / entry["file"], how)
    cache_dir = str(tmp_path / "cache")
    reason = "sha256" if how == "flip" else "bytes"
    with pytest.raises(share.PackError, match=rf"{re.escape(entry['file'])} does not match the manifest \(.*{reason}"):
        share.unpack(str(tampered), cache_dir)
    assert _leftovers(cache_dir) == []  # neither the file nor its temporary
    with pytest.raises(SystemExit, match=rf"^python -m bertbook cache unpack: .*{re.escape(entry['file'])}"):
        main(["cache", "unpack", str(tampered), "--cache-dir", cache_dir])
    assert _leftovers(cache_dir) == []


def test_a_listed_file_that_is_missing_is_named(small, tmp_path):
    _, pack_dir, entry = small
    pack = shutil.copytree(pack_dir, tmp_path / "pack")
    os.remove(pack / entry["file"])
    with pytest.raises(share.PackError, match=rf"{re.escape(entry['file'])} is listed in the manifest but missing"):
        share.unpack(str(pack), str(tmp_path / "cache"))


def test_an_archive_round_trips(small, tmp_path):
    cache_dir, pack_dir, entry = small
    for out in ("pack.tar", "pack.tar.gz"):
        assert main(["cache", "pack", str(tmp_path / out), "--cache-dir", cache_dir]) == 0
        assert share.unpack(str(tmp_path / out), str(tmp_path / f"cache-{out}"))["placed"] == [entry["file"]]
        assert _sha256(tmp_path / f"cache-{out}" / "checkpoints" / entry["file"]) == entry["sha256"]
    # a pack's folder archived as it is (`tar czf pack.tgz pack/`): its files are one folder down
    with tarfile.open(tmp_path / "folder.tgz", "w:gz") as tar:
        tar.add(pack_dir, arcname="pack")
    assert share.unpack(str(tmp_path / "folder.tgz"), str(tmp_path / "cache-folder"))["placed"] == [entry["file"]]


@pytest.mark.parametrize("member", ["../escaped.safetensors", "/tmp/escaped.safetensors",
                                    "pack/../../escaped.safetensors", "link"])
def test_an_archive_member_that_climbs_out_is_refused(small, tmp_path, member):
    _, pack_dir, entry = small
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(os.path.join(pack_dir, "manifest.json"), arcname="manifest.json")
        tar.add(os.path.join(pack_dir, entry["file"]), arcname=entry["file"])
        info = tarfile.TarInfo(member)
        if member == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    cache_dir = str(tmp_path / "sub" / "cache")
    with pytest.raises(share.UnsafeArchiveError, match=re.escape(repr(member))):
        share.unpack(str(archive), cache_dir)
    assert not os.path.exists(tmp_path / "sub")  # nothing written, not even the good file
    assert not glob.glob(str(tmp_path / "**" / "escaped*"), recursive=True)


def test_a_manifest_that_names_a_path_is_refused(small, tmp_path):
    _, pack_dir, entry = small
    pack = shutil.copytree(pack_dir, tmp_path / "pack")
    manifest = json.load(open(pack / "manifest.json"))
    manifest["files"][0]["file"] = "../" + entry["file"]
    (pack / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(share.PackError, match="entry 0"):
        share.unpack(str(pack), str(tmp_path / "cache"))
    assert not os.path.exists(tmp_path / "cache")


def test_a_missing_stage_is_fetched_from_a_web_server_checked_and_loaded(small, tmp_path, monkeypatch, source):
    cache_dir, pack_dir, entry = small
    expected, _ = pipeline.pretrained_teacher(SCALE, cache_dir, progress=False)
    _refuse_training(monkeypatch)
    with _serving(pack_dir) as (url, requested):
        source(url)
        for i, progress in enumerate((False, True)):  # two empty caches, one process
            fresh = _fresh_cache(cache_dir, tmp_path / f"cache{i}")
            model, info = pipeline.pretrained_teacher(SCALE, fresh, progress=progress)
            assert info["cached"] and info["key"] == entry["key"]
            assert _leftovers(fresh) == [entry["file"]]
            assert _sha256(os.path.join(fresh, "checkpoints", entry["file"])) == entry["sha256"]
            for (k, v), w in zip(expected.state_dict().items(), model.state_dict().values()):
                assert torch.equal(v, w), k
    assert requested.count("/manifest.json") == 1  # read once per process
    assert requested.count(f"/{entry['file']}") == 2


def test_an_unreachable_source_is_one_line_then_the_stage_trains(small, tmp_path, capsys, source):
    with _serving(small[1]) as (url, _):
        pass  # started and stopped: nothing listens there now
    source(url)
    for i in range(2):
        cache_dir = _fresh_cache(small[0], tmp_path / f"cache{i}")
        _, info = pipeline.pretrained_teacher(SCALE, cache_dir, progress=False)
        assert not info["cached"] and _leftovers(cache_dir) == [f"pretrain-{info['key']}.safetensors"]
    notes = [line for line in capsys.readouterr().err.splitlines() if url in line]
    assert len(notes) == 1, notes  # one line, not one a stage
    assert notes[0].startswith("bertbook: ") and "trained here" in notes[0]


def test_a_corrupt_download_is_deleted_reported_and_the_stage_trains(small, tmp_path, source):
    _, pack_dir, entry = small
    tampered = shutil.copytree(pack_dir, tmp_path / "pack")
    _damage(tampered / entry["file"], "flip")
    cache_dir = _fresh_cache(small[0], tmp_path / "cache")
    with _serving(str(tampered)) as (url, requested):
        source(url)
        with pytest.warns(cache.CorruptCheckpointWarning, match=rf"{re.escape(entry['file'])} does not match"):
            _, info = pipeline.pretrained_teacher(SCALE, cache_dir, progress=False)
    assert f"/{entry['file']}" in requested  # it was downloaded, then refused
    assert not info["cached"] and _leftovers(cache_dir) == [entry["file"]]  # trained here; no temporary left
    assert _sha256(os.path.join(cache_dir, "checkpoints", entry["file"])) != _sha256(tampered / entry["file"])


def test_a_folder_source_and_a_stage_it_does_not_hold(small, tmp_path, monkeypatch, source, capsys):
    cache_dir = _fresh_cache(small[0], tmp_path / "cache")
    source(small[1])
    _refuse_training(monkeypatch)
    assert pipeline.pretrained_teacher(SCALE, cache_dir, progress=False)[1]["cached"]
    # the MLM teacher is not in the pack: said in one line when progress is on, then trained
    with pytest.raises(AssertionError, match="computed instead of loaded"):
        pipeline.mlm_teacher(SCALE, cache_dir, progress=True)
    assert re.search(r"bertbook: mlm-teacher-[0-9a-f]+ is not among the checkpoints of .*: training it here",
                     capsys.readouterr().err)


def test_a_checkpoint_without_a_machine_record_stays_valid_and_packs_as_null(tmp_path, monkeypatch):
    path = cache.checkpoint_path("toy", "0123456789abcdef", str(tmp_path / "cache"))
    os.makedirs(os.path.dirname(path))
    tensors = {"w": torch.arange(6.0)}
    save_file(tensors, path, metadata={"bertbook": json.dumps({"v": 1}), "checksum": cache._checksum(tensors)})
    assert cache.load_checkpoint(path)[1] == {"v": 1} and cache.verify_checkpoint(path) is None
    monkeypatch.setattr(device, "cpu_flags", lambda: None)  # a machine without /proc/cpuinfo
    manifest = share.pack(str(tmp_path / "pack.tgz"), str(tmp_path / "cache"))
    assert manifest["files"][0]["trained_on"] is None and manifest["packed_on"]["cpu_flags"] == "unknown"
    written = cache.checkpoint_path("toy", "fedcba9876543210", str(tmp_path / "cache"))
    cache.save_checkpoint(written, tensors)
    assert cache.verify_checkpoint(written) == {"torch": torch.__version__, "cpu_flags": "unknown"}


def test_pack_refuses_an_empty_cache_and_a_damaged_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="no checkpoints in .*nothing to pack"):
        main(["cache", "pack", str(tmp_path / "pack"), "--cache-dir", str(tmp_path / "cache")])
    path = cache.checkpoint_path("toy", "0123456789abcdef", str(tmp_path / "cache"))
    cache.save_checkpoint(path, {"w": torch.arange(6.0)})
    _damage(path, "flip")
    with pytest.raises(share.PackError, match=re.escape(path) + " is damaged"):
        share.pack(str(tmp_path / "pack"), str(tmp_path / "cache"))
    assert not os.path.exists(tmp_path / "pack" / "manifest.json")
