"""Colab, for real: one Colab cell in every chapter, the launch buttons, the release both name (the
cell's tag is the package's version: README.md, Releasing), and an environment built from exactly
what that cell installs, importing every module that any chapter imports."""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
import yaml

import bertbook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import colab_cell  # noqa: E402


def test_every_chapter_has_the_one_colab_cell():
    assert colab_cell.check() == []


def test_the_cell_names_the_repository_version_and_data_pins_of_the_repository():
    source = colab_cell.render()
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert f"git+{config['repository']['url']}@v{colab_cell.package_version()}" in source
    for pin in (ROOT / "requirements-data.txt").read_text().split():
        if "==" in pin:
            assert f'"{pin}"' in source


def test_the_colab_launch_button_points_to_each_notebook():
    # sphinx-book-theme links <colab>/github/<org>/<repo>/blob/<branch>/<path_to_book>/<page>.ipynb.
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    prefix = config["repository"].get("path_to_book", "").strip("/")
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [entry["file"] for entry in toc["chapters"]]
    notebooks = [p for p in pages if (ROOT / f"{p}.ipynb").exists()]
    assert len(notebooks) >= 9
    for page in notebooks:
        assert (ROOT / prefix / f"{page}.ipynb").is_file(), page


def release_problems(root: Path = ROOT) -> list:
    """Where a chapter's Colab cell, its launch button and the package version disagree, one line
    each: the cell must install the tag v<version> from the repository the button opens the chapter
    from. Read from the files themselves, not through scripts/colab_cell.py, which renders the cells."""
    config = yaml.safe_load((root / "_config.yml").read_text())
    version = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    url, branch = config["repository"]["url"], config["repository"].get("branch", "main")
    github = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?/?", url)
    if github is None:
        return [f"repository.url must be a https://github.com/<owner>/<name> address (Colab opens those), got {url!r}"]
    prefix = config["repository"].get("path_to_book", "").strip("/")
    problems = []
    for entry in yaml.safe_load((root / "_toc.yml").read_text())["chapters"]:
        page = "/".join(p for p in (prefix, entry["file"]) if p) + ".ipynb"
        if not (root / page).is_file():
            continue  # a markdown page: no button, no cell
        # sphinx-book-theme's Colab button opens <colab_url>/github/<owner>/<name>/blob/<branch>/<page>
        button = f"github/{github.group(1)}/blob/{branch}/{page}"
        code = [c for c in json.loads((root / page).read_text())["cells"] if c["cell_type"] == "code"]
        package, _ = colab_installs("".join(code[0]["source"]))
        installs = re.fullmatch(r"bertbook\[[a-z,]+\] @ git\+https://github\.com/([^@]+?)(?:\.git)?@(.+)", package)
        if installs is None:
            problems.append(f"{page}: the cell installs {package!r}, not bertbook from a GitHub tag")
            continue
        if installs.group(1) != github.group(1):
            problems.append(f"{page}: the cell installs from {installs.group(1)}, the button opens {button}")
        if installs.group(2) != f"v{version}":
            problems.append(f"{page}: the cell installs {installs.group(2)}, the package version is {version}")
    return problems


def test_the_colab_cells_install_the_release_the_buttons_open():
    assert release_problems() == []
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    # the installed package's version (its metadata) is pyproject's: reinstall after changing it
    assert bertbook.__version__ == version


def test_release_problems_finds_a_version_or_repository_that_disagrees(tmp_path):
    for name in ("_config.yml", "_toc.yml", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "book", tmp_path / "book", ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints"))
    assert release_problems(tmp_path) == []
    pyproject = tmp_path / "pyproject.toml"
    version = tomllib.loads(pyproject.read_text())["project"]["version"]
    pyproject.write_text(pyproject.read_text().replace(f'version = "{version}"', 'version = "99.0.0"', 1))
    found = release_problems(tmp_path)
    assert len(found) >= 9 and all("the package version is 99.0.0" in line for line in found), found
    pyproject.write_text((ROOT / "pyproject.toml").read_text())
    config = tmp_path / "_config.yml"
    config.write_text(config.read_text().replace("github.com/", "github.com/someone-else-", 1))
    found = release_problems(tmp_path)
    assert len(found) >= 9 and all("the button opens github/someone-else-" in line for line in found), found


def chapter_imports() -> list:
    """Every module a chapter's code imports, outside the standard library, sorted."""
    names = set()
    for path in colab_cell.chapters():
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "\n".join(line for line in "".join(cell["source"]).splitlines()
                               if not line.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Import):
                    names.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names.add(node.module)
    return sorted(n for n in names if n.split(".")[0] not in sys.stdlib_module_names | {"google"})


def colab_installs(source: str):
    """What the Colab cell installs: (the package requirement, the pinned packages it installs with --no-deps)."""
    strings = [n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    package = [s for s in strings if s.startswith("bertbook") and "@ git+" in s]
    assert len(package) == 1, strings
    assert "--no-deps" in strings, strings
    return package[0], [s for s in strings if re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.-]+", s)]


def preinstall_torch(site_packages: Path) -> None:
    """Colab comes with torch and what torch needs: link those distributions of this environment
    (and only those) into the new one, so pip sees them installed and does not fetch several GB."""
    from importlib import metadata

    todo, done = ["torch"], set()
    while todo:
        name = re.split(r"[ ;<>=!~\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in done:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional or platform-specific requirement not installed here
        done.add(name)
        todo += [r for r in dist.requires or [] if "extra ==" not in r]
        for top in {Path(f).parts[0] for f in dist.files or []}:
            source, target = Path(dist.locate_file(top)), site_packages / top
            if source.exists() and not target.exists() and top not in ("..", "bin"):
                target.symlink_to(source)


def test_chapter_imports_are_found():
    imports = chapter_imports()
    assert {"bertbook", "torch", "matplotlib.pyplot", "bertviz", "transformers"} <= set(imports), imports


@pytest.mark.skipif(os.environ.get("BERTBOOK_SKIP_ENV_TESTS") == "1", reason="BERTBOOK_SKIP_ENV_TESTS=1")
def test_an_environment_from_the_colab_cell_imports_every_chapter_module(tmp_path):
    # What Colab brings: Python and torch (here: this environment's torch, linked in). What the cell
    # brings: everything else, with the package from this checkout instead of the git URL, and its
    # extras exactly as the cell names them.
    first = colab_cell.colab_cell(json.loads(colab_cell.chapters()[0].read_text()))  # all alike: see above
    package, data = colab_installs("".join(first["source"]))
    requirement = package.split("@", 1)[0].strip()  # "bertbook[book,deploy]"
    extras = requirement[len("bertbook"):]
    env = tmp_path / "colab"
    venv.EnvBuilder(with_pip=True).create(env)
    python = str(env / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    preinstall_torch(Path(site))

    def run(args, timeout=1800):  # resolving and installing ~80 distributions: minutes
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    run([python, "-c", "import torch"])
    # The package's sources only, copied, so that pip's build leaves nothing in the checkout.
    source = tmp_path / "bertbook"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    run(pip + [f"{source}{extras}"])
    run(pip + ["--no-deps"] + data)
    modules = chapter_imports()
    code = "import importlib\nfor m in %r:\n    importlib.import_module(m)\nprint('ok', len(%r))" % (modules, modules)
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": ""})
    assert done.returncode == 0, f"a chapter's import fails in the Colab environment:\n{done.stderr[-3000:]}"
    # The data the chapters read comes from the --no-deps packages: the package finds it.
    check = ("from bertbook.data import load_rotten_tomatoes, load_wiki_corpus\n"
             "from bertbook.hf import minilm_dir\n"
             "assert len(load_rotten_tomatoes()['train']) > 1000\n"
             "assert len(load_wiki_corpus()['train']) > 10\n"
             "assert minilm_dir() is not None\n")
    done = subprocess.run([python, "-c", check], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": "", "HF_DATASETS_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
