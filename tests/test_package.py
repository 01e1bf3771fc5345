"""The package itself: what `import bertbook` costs, and where its version comes from."""
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import bertbook
from bertbook import cache

ROOT = Path(__file__).resolve().parents[1]


def test_import_bertbook_does_not_import_transformers():
    code = ("import sys, bertbook, bertbook.attention, bertbook.exercises\n"
            "assert 'transformers' not in sys.modules, 'transformers imported by import bertbook'\n"
            "bertbook.save_pretrained, bertbook.load_minilm  # the lazy exports still work\n"
            "assert 'transformers' in sys.modules\n"
            "assert {'save_pretrained', 'load_minilm', 'hf'} <= set(dir(bertbook))\n"
)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_submodule_hf_is_an_attribute_as_before():
    code = "import bertbook\nbertbook.hf.hf_config, bertbook.hf.minilm_dir, bertbook.load_minilm\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_unknown_attribute_is_an_attribute_error():
    try:
        bertbook.no_such_thing
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("expected an AttributeError")


def test_the_version_lives_in_pyproject_only():
    declared = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    assert bertbook.__version__ == declared == importlib.metadata.version("bertbook")
    assert cache.package_version() == declared  # shown by `cache pack` and in downloads
    assert '__version__ = "' not in (ROOT / "src" / "bertbook" / "__init__.py").read_text()



def test_the_floors_file_pins_exactly_the_declared_floors():
    """requirements-floors.txt (what the floors job installs) pins each `>=` floor of pyproject.toml's
    dependencies, and gensim's of the [book] extra, at exactly that release."""
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(line.split("==") for line in (ROOT / "requirements-floors.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    book = [r for r in project["optional-dependencies"]["book"] if r.startswith("gensim")]
    for req in project["dependencies"] + book:
        name, sep, floor = req.partition(">=")
        assert sep, f"{req}: every dependency declares a floor"
        name = name.strip().lower()
        assert name in pins, f"requirements-floors.txt does not pin {name}"
        assert pins[name] in (floor, floor + ".0"), (name, pins[name], floor)


def test_layers_import_one_way():
    """data -> model -> training -> pipeline: a lower layer never imports a higher one, and the
    Hugging Face interop does not import deployment (the import cycle it made)."""
    import inspect

    import torch.nn.functional as F
    from bertbook import bert, masking

    loops = {"bertbook.pretrain", "bertbook.finetune", "bertbook.distill", "bertbook.training"}
    for module, forbidden in (("bertbook.pipeline_data", loops), ("bertbook.bert", {"bertbook.masking"}),
                              ("bertbook.hf", {"bertbook.deploy"})):
        code = f"import sys, {module}\nprint(sorted(set({sorted(forbidden)!r}) & set(sys.modules)))"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == "[]", f"{module} imports {done.stdout.strip()}"
    from bertbook import hf  # not even inside a function: deploy -> pipeline -> pipeline_data -> hf
    assert "from .deploy" not in inspect.getsource(hf) and "import deploy" not in inspect.getsource(hf)
    # the label the losses ignore is one value on both sides: torch's own default
    assert bert.IGNORE_INDEX == masking.IGNORE_INDEX == inspect.signature(F.cross_entropy).parameters["ignore_index"].default


def test_the_sources_speak_of_what_they_do():
    """Docstrings and comments describe the code, not the project's history, and state the
    package's requirements as pyproject.toml does."""
    import tomllib

    sources = [*ROOT.glob("src/bertbook/**/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py"),
               *ROOT.glob("scripts/*.py")]
    for path in sources:
        text = path.read_text()
        assert not re.search(r"\bissue \d+", text, re.IGNORECASE), f"{path.name} speaks of an issue number"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_floor,) = [d.replace(" ", "") for d in deps if d.replace(" ", "").startswith("torch>=")]
    for path in sources:
        for stated in re.findall(r"torch>=[\d.]+", path.read_text()):
            assert stated == torch_floor, f"{path.name} states {stated}, pyproject.toml {torch_floor}"
