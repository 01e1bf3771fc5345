"""The checkpoint cache: round trip, keys, atomic writes and corrupt-file recovery."""
import os

import pytest
import torch

from bertbook import cache


def _state(v=1.0):
    return {"w": torch.full((3, 4), v), "b": torch.arange(5, dtype=torch.float32)}


def test_round_trip_with_metadata(tmp_path):
    path = cache.checkpoint_path("toy", "abc", str(tmp_path))
    cache.save_checkpoint(path, _state(), {"accuracy": 0.5, "history": {"loss": [1.0, 0.5]}})
    sd, meta = cache.load_checkpoint(path)
    assert torch.equal(sd["w"], _state()["w"]) and torch.equal(sd["b"], _state()["b"])
    assert meta == {"accuracy": 0.5, "history": {"loss": [1.0, 0.5]}}
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]  # no temporary file left


def test_missing_file_is_none(tmp_path):
    assert cache.load_checkpoint(str(tmp_path / "nope.safetensors")) is None


def test_key_changes_with_every_part():
    base = cache.cache_key({"lr": 1e-3}, "fingerprint")
    assert base == cache.cache_key({"lr": 1e-3}, "fingerprint")
    assert base != cache.cache_key({"lr": 2e-3}, "fingerprint")
    assert base != cache.cache_key({"lr": 1e-3}, "other data")
    with pytest.raises(TypeError, match="JSON"):
        cache.cache_key(object())


def test_env_variable_sets_root(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTBOOK_CACHE", str(tmp_path))
    assert cache.checkpoint_path("x", "k").startswith(str(tmp_path))
    with pytest.raises(ValueError, match="file-name"):
        cache.checkpoint_path("../x", "k")


def test_crash_mid_write_keeps_previous_state(tmp_path, monkeypatch):
    path = cache.checkpoint_path("toy", "k", str(tmp_path))
    cache.save_checkpoint(path, _state(1.0), {"v": 1})

    def crash(tensors, filename, metadata=None):  # writes half a file, then dies
        with open(filename, "wb") as f:
            f.write(b"\x00" * 10)
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(cache, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.save_checkpoint(path, _state(2.0), {"v": 2})
    sd, meta = cache.load_checkpoint(path)
    assert meta == {"v": 1} and float(sd["w"][0, 0]) == 1.0
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_file_is_reported_deleted_and_missing(tmp_path, damage):
    path = cache.checkpoint_path("toy", "k", str(tmp_path))
    cache.save_checkpoint(path, _state(), {})
    data = open(path, "rb").read()
    if damage == "truncate":
        data = data[: len(data) - 7]
    elif damage == "flip":  # one byte of tensor data: the header still parses, the checksum does not
        data = data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:]
    else:
        data = b"not a safetensors file"
    open(path, "wb").write(data)
    with pytest.warns(cache.CorruptCheckpointWarning, match="corrupt checkpoint"):
        assert cache.load_checkpoint(path) is None
    assert not os.path.exists(path)


def test_empty_state_dict_refused(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        cache.save_checkpoint(str(tmp_path / "x.safetensors"), {})


@pytest.mark.parametrize("error", [PermissionError("no read permission"), MemoryError()])
def test_a_read_error_that_is_no_corruption_keeps_the_checkpoint(tmp_path, monkeypatch, error):
    path = cache.checkpoint_path("toy", "k", str(tmp_path))
    cache.save_checkpoint(path, _state(), {"v": 1})

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(cache, "safe_open", fail)
    with pytest.raises(type(error)):
        cache.load_checkpoint(path)
    assert os.path.exists(path)  # not the file's fault: a trained model is not thrown away
    monkeypatch.undo()
    assert cache.load_checkpoint(path)[1] == {"v": 1}


def test_bad_metadata_json_is_corruption(tmp_path):
    from safetensors.torch import save_file

    path = cache.checkpoint_path("toy", "k", str(tmp_path))
    tensors = _state()
    os.makedirs(os.path.dirname(path))
    save_file(tensors, path, metadata={"bertbook": "{not json", "checksum": cache._checksum(tensors)})
    with pytest.warns(cache.CorruptCheckpointWarning, match="JSONDecodeError"):
        assert cache.load_checkpoint(path) is None
    assert not os.path.exists(path)


def test_a_directory_where_the_checkpoint_goes_is_named(tmp_path):
    path = cache.checkpoint_path("toy", "k", str(tmp_path))
    os.makedirs(path)
    with pytest.raises(IsADirectoryError, match="is a directory, where a checkpoint file should be"):
        cache.load_checkpoint(path)
    with pytest.raises(IsADirectoryError, match=path):
        cache.check_writable(path)


def _toy_stage(cache_dir, calls):
    from bertbook import pipeline

    def build():
        calls.append(1)
        return _state(), {"trained": True}

    return pipeline._load_or_build("toy", "k", build, cache_dir, False, lambda t, _: t, lambda t, _: t)


def test_an_unwritable_cache_is_refused_before_training(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    calls = []
    with pytest.raises(OSError, match="cannot write .*not-a-folder.*BERTBOOK_CACHE"):
        _toy_stage(str(blocker), calls)
    assert calls == []  # nothing was trained


def test_a_model_whose_checkpoint_cannot_be_written_is_returned(tmp_path, monkeypatch):
    from bertbook import pipeline

    def full_disk(path, state_dict, metadata=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "save_checkpoint", full_disk)
    calls = []
    with pytest.warns(cache.CacheWriteWarning, match=r"could not write the checkpoint .*toy-k\.safetensors"):
        out, info = _toy_stage(str(tmp_path), calls)
    assert calls == [1] and torch.equal(out["w"], _state()["w"]) and info["trained"] and not info["cached"]


def test_a_good_file_written_between_the_check_and_the_delete_is_kept(tmp_path, monkeypatch):
    path = cache.checkpoint_path("toy", "k", str(tmp_path))
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"not a checkpoint")
    real_open = cache.safe_open

    def another_process_writes_meanwhile(p, framework):
        monkeypatch.setattr(cache, "safe_open", real_open)
        cache.save_checkpoint(path, _state(3.0), {"v": 3})  # the other process's good file
        raise cache._ChecksumError("the corrupt file, as this process read it")

    monkeypatch.setattr(cache, "safe_open", another_process_writes_meanwhile)
    sd, meta = cache.load_checkpoint(path)  # the good file is kept, and read
    assert meta == {"v": 3} and float(sd["w"][0, 0]) == 3.0
    assert sorted(os.listdir(os.path.dirname(path))) == [os.path.basename(path)]


def test_stale_temporary_files_are_cleaned_fresh_ones_kept(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale, fresh = folder / ".tmp-killed.safetensors", folder / ".tmp-writing.safetensors"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    old = os.stat(stale).st_mtime - cache.STALE_SECONDS - 60
    os.utime(stale, (old, old))
    cache.save_checkpoint(str(folder / "toy-k.safetensors"), _state())
    assert sorted(os.listdir(folder)) == [".tmp-writing.safetensors", "toy-k.safetensors"]
