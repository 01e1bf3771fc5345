"""The command line's own logic, without training: the pipeline and report calls are replaced by stubs.
Also how a run's scale is chosen: --scale, else the environment variable BERTBOOK_SCALE, else the machine."""
import os
import re
import subprocess
import sys

import pytest
import torch

from bertbook import configs, report
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


@pytest.mark.parametrize("value, cuda, scale", [
    (None, False, "cpu"), (None, True, "gpu"), ("", False, "cpu"), ("", True, "gpu"),
    ("cpu", True, "cpu"), ("gpu", False, "gpu"), ("tiny", True, "tiny"),
])
def test_bertbook_scale_chooses_the_default_scale(monkeypatch, value, cuda, scale):
    if value is None:
        monkeypatch.delenv("BERTBOOK_SCALE", raising=False)
    else:
        monkeypatch.setenv("BERTBOOK_SCALE", value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert configs.default_scale() == scale
    assert configs.get_scale_config().name == scale


@pytest.mark.parametrize("value", ["bogus", "GPU", " cpu"])
def test_an_unknown_bertbook_scale_names_the_valid_ones(monkeypatch, value):
    monkeypatch.setenv("BERTBOOK_SCALE", value)
    with pytest.raises(ValueError, match=r"BERTBOOK_SCALE must be one of cpu, gpu, tiny .*got " + re.escape(repr(value))):
        configs.default_scale()


def test_the_command_line_uses_bertbook_scale_unless_given_scale(monkeypatch, tmp_path):
    scales = []
    monkeypatch.setattr(report, "report", lambda cfg, **kw: scales.append(cfg.name) or {})
    monkeypatch.setenv("BERTBOOK_SCALE", "tiny")
    assert main(["report", "--cache-dir", str(tmp_path), "--quiet"]) == 0
    assert main(["report", "--cache-dir", str(tmp_path), "--quiet", "--scale", "cpu"]) == 0
    monkeypatch.setenv("BERTBOOK_SCALE", "bogus")  # --scale wins, so the variable is not read
    assert main(["report", "--cache-dir", str(tmp_path), "--quiet", "--scale", "tiny"]) == 0
    assert scales == ["tiny", "cpu", "tiny"]


def test_an_unknown_bertbook_scale_stops_the_command_line_in_one_line(tmp_path):
    # `python -m bertbook report` as a reader runs it, except that reaching the report (which would
    # load or train the models) exits at once with its own status: the scale must be refused before.
    code = ("import runpy, sys\n"
            "import bertbook.report\n"
            "def refuse(*args, **kwargs):\n"
            "    print('reached the report', file=sys.stderr)\n"
            "    sys.exit(97)\n"
            "bertbook.report.report = refuse\n"
            "sys.argv = ['python -m bertbook', 'report']\n"
            "runpy.run_module('bertbook', run_name='__main__', alter_sys=True)\n")
    env = {**os.environ, "BERTBOOK_SCALE": "bogus", "BERTBOOK_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert done.returncode not in (0, 97), (done.returncode, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "BERTBOOK_SCALE" in lines[0] and "cpu, gpu, tiny" in lines[0] and "'bogus'" in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing cached, nothing written
