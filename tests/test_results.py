"""The benchmark results shipped in the package (`bertbook.results`): every file loads, each is in
the built wheel, and an unknown name is a clear error."""
import importlib.resources
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bertbook import results

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIR = ROOT / "src" / "bertbook" / "results"


def test_every_result_file_loads():
    assert results.names(), "no result files in bertbook/results"
    for name in results.names():
        data = results.load(name)
        assert isinstance(data, dict) and data, name
        assert results.load(name[: -len(".json")]) == data  # the name without .json too


def test_the_results_are_the_packages_resources():
    shipped = {p.name for p in importlib.resources.files("bertbook.results").iterdir() if p.name.endswith(".json")}
    assert shipped == set(results.names())
    assert os.path.samefile(results.path("pretrain_settings.json"), SOURCE_DIR / "pretrain_settings.json")


def test_the_chapters_files_are_there():
    # What chapters 5, 6, 7 and the appendix read.
    for name in ("pretrain_settings.json", "mlm_distill_seeds.json", "mlm_distill_seeds_steps200.json",
                 "mlm_distill_seeds_layers_025.json", "mlm_distill_alpha_ce2.json", "mlm_distill_T1.json",
                 "mlm_distill_downstream_steps200.json", "scratch_distill_seeds.json", "scratch_ablation.json",
                 "scratch_last_layer.json", "scratch_distill_downstream.json", "distill_transfer_seeds.json",
                 "distill_transfer_curve.json", "ddp_throughput.json", "finetune_settings.json"):
        assert name in results.names(), name


def test_an_unknown_name_says_which_and_lists_the_available_ones():
    with pytest.raises(FileNotFoundError) as err:
        results.load("no_such_result.json")
    message = str(err.value)
    assert "no_such_result.json" in message and "pretrain_settings.json" in message
    with pytest.raises(ValueError, match="file name alone"):
        results.path("../results/pretrain_settings.json")


def test_every_result_is_in_the_wheel(tmp_path):
    # With build isolation, so that the wheel is built by the setuptools pyproject.toml asks for, not by
    # whichever one this environment has (a Python 3.11 venv starts with 65.5, too old for its `license`).
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    if built.returncode != 0 and "No module named" in built.stderr:
        pytest.skip(f"cannot build a wheel here: {built.stderr[-300:]}")
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("bertbook-*.whl")
    members = set(zipfile.ZipFile(wheel).namelist())
    for name in results.names():
        assert f"bertbook/results/{name}" in members, name
        with zipfile.ZipFile(wheel).open(f"bertbook/results/{name}") as fh:
            assert json.load(fh) == results.load(name)
    assert "bertbook/results/__init__.py" in members
