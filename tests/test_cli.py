"""The command line's own logic, without training: the pipeline and report calls are replaced by stubs."""
from bertbook import report
from bertbook.__main__ import main


def test_export_quiet_prints_nothing(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(report, "export", lambda name, out, cfg, **kw: calls.append((name, kw)) or out)
    assert main(["export", "--model", "student", "--out", str(tmp_path), "--scale", "tiny", "--quiet"]) == 0
    assert calls == [("student", {"cache_dir": None, "progress": False})]
    assert capsys.readouterr() == ("", "")
    main(["export", "--model", "student", "--out", str(tmp_path), "--scale", "tiny"])
    assert "text-classification" in capsys.readouterr().err  # without --quiet: how to load it


def test_report_and_export_refuse_to_run_under_torchrun(monkeypatch, tmp_path):
    import pytest
    from bertbook import distributed
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    for argv in (["report", "--scale", "tiny"], ["export", "--model", "student", "--out", str(tmp_path), "--scale", "tiny"]):
        with pytest.raises(SystemExit, match="runs in one process"):
            main(argv)


def test_grad_accum_must_be_positive_on_the_command_line(capsys):
    import pytest
    with pytest.raises(SystemExit):
        main(["pretrain", "--scale", "tiny", "--grad-accum", "0"])
    assert "must be a positive integer" in capsys.readouterr().err
