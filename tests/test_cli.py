"""The command line's own logic, without training: the pipeline calls are replaced by stubs."""
from bertbook import pipeline
from bertbook.__main__ import main


def test_export_quiet_prints_nothing(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(pipeline, "export", lambda name, out, cfg, **kw: calls.append((name, kw)) or out)
    assert main(["export", "--model", "student", "--out", str(tmp_path), "--scale", "tiny", "--quiet"]) == 0
    assert calls == [("student", {"cache_dir": None, "progress": False})]
    assert capsys.readouterr() == ("", "")
    main(["export", "--model", "student", "--out", str(tmp_path), "--scale", "tiny"])
    assert "text-classification" in capsys.readouterr().err  # without --quiet: how to load it
