"""Cache keys that cannot go stale: each stage's key carries the version of the code that trains it,
and the code on record fails this test when it changes while the version does not."""
import json
import os
import shutil

import pytest

from bertbook import pipeline, recipes
from bertbook.tokenizer import tokenizer_digest


def test_every_recipe_is_on_record():
    # Fails after a change to a stage's training code: bump its version in bertbook/recipes.py, or
    # record the new code with a reason (`python -m bertbook.recipes record STAGE --reason ...`).
    problems = recipes.check()
    assert not problems, "\n".join(problems)


def test_every_stage_has_sources_that_exist():
    assert set(recipes.RECIPE_SOURCES) == set(recipes.RECIPE_VERSIONS)
    for stage in recipes.RECIPE_VERSIONS:
        assert len(recipes.recipe_digest(stage)) == 64


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """The package's source in a temporary folder, read by `recipes` instead of the real one, with
    the record in a temporary file."""
    src = tmp_path / "bertbook"
    shutil.copytree(recipes.PACKAGE_DIR, src, ignore=shutil.ignore_patterns("__pycache__", "results"))
    record = tmp_path / "record.json"
    shutil.copy(recipes.RECORD_FILE, record)
    monkeypatch.setattr(recipes, "PACKAGE_DIR", str(src))
    return src, str(record)


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_a_changed_training_function_fails_until_its_version_is_bumped(package_copy, monkeypatch):
    src, record_file = package_copy
    assert recipes.check(recipes.read_record(record_file)) == []
    # A deliberate change to the pretraining loop: the stages that run it must be named.
    _edit(src / "pretrain.py", "def pretrain(", "_CHANGED = 1\n\n\ndef pretrain(")
    problems = recipes.check(recipes.read_record(record_file))
    named = {p.split(":")[0] for p in problems}
    assert named == {"pretrain", "mlm-teacher"}, problems
    assert all("changed (pretrain)" in p for p in problems), problems
    assert all("Bump its version" in p for p in problems), problems
    # Recording without a new version (and no reason) is refused.
    with pytest.raises(ValueError, match="version did not"):
        recipes.record(["pretrain"], path=record_file)
    # Bumped: the check asks for the new version to be recorded; recorded, it passes.
    monkeypatch.setitem(recipes.RECIPE_VERSIONS, "pretrain", 2)
    monkeypatch.setitem(recipes.RECIPE_VERSIONS, "mlm-teacher", 2)
    assert all("on record" in p for p in recipes.check(recipes.read_record(record_file)))
    recipes.record(["pretrain", "mlm-teacher"], path=record_file)
    assert recipes.check(recipes.read_record(record_file)) == []
    history = recipes.read_record(record_file)["pretrain"]["history"]
    assert [h["version"] for h in history][-2:] == [1, 2]


def test_a_change_that_cannot_move_the_weights_is_recorded_with_its_reason(package_copy):
    src, record_file = package_copy
    _edit(src / "masking.py", "import ", "import os as _unused_os\nimport ")
    assert recipes.check(recipes.read_record(record_file))
    recipes.record(["pretrain", "mlm-teacher", "distill", "scratch"], reason="an unused import", path=record_file)
    assert recipes.check(recipes.read_record(record_file)) == []
    assert recipes.read_record(record_file)["distill"]["history"][-1]["reason"] == "an unused import"


def test_comments_and_docstrings_do_not_count(package_copy):
    src, record_file = package_copy
    text = (src / "distill.py").read_text()
    (src / "distill.py").write_text('"""Another docstring."""\n# a comment\n' + text.split('"""', 2)[2])
    assert recipes.check(recipes.read_record(record_file)) == []


def test_the_recipe_version_is_in_every_key(monkeypatch):
    before = pipeline._stage_key("distill", "distill", {"lr": 1.0}, "upstream")
    assert before == pipeline._stage_key("distill", "distill", {"lr": 1.0}, "upstream")
    monkeypatch.setitem(recipes.RECIPE_VERSIONS, "distill", recipes.RECIPE_VERSIONS["distill"] + 1)
    assert pipeline._stage_key("distill", "distill", {"lr": 1.0}, "upstream") != before
    with pytest.raises(ValueError, match="unknown recipe"):
        pipeline._stage_key("distill", "no-such-recipe")
    # Every stage of the pipeline builds its key with _stage_key and a recipe on record.
    import inspect
    source = inspect.getsource(pipeline)
    assert source.count("cache_key(") == 1  # only inside _stage_key
    import re
    used = set(re.findall(r'_stage_key\([^,]+, "([a-z-]+)"', source))
    assert used == set(recipes.RECIPE_VERSIONS) - {"tokenizer"}, used


def test_the_tokenizer_is_in_the_data_fingerprint(tmp_path, monkeypatch):
    from bertbook import pipeline_data
    from bertbook.configs import get_scale_config
    from bertbook.pipeline_data import minilm

    tok = minilm()[1]
    digest = tokenizer_digest(tok)
    tok(["a text"], truncation=True, max_length=8)  # leaves truncation set on the backend
    assert tokenizer_digest(tok) == digest
    cfg = get_scale_config("tiny")
    fp = pipeline_data.pretraining_data(cfg, str(tmp_path)).fingerprint
    assert "-v" in fp  # chapter 4's tokenizer: its recipe's version
    assert digest in pipeline_data.pretraining_data(cfg, str(tmp_path), tokenizer="minilm").fingerprint
    # Another tokenizer (one token more): another digest, so other keys.
    other = json.loads(tok.backend_tokenizer.to_str())
    other["model"]["vocab"]["bertbook-new-token"] = len(other["model"]["vocab"])
    from tokenizers import Tokenizer
    from transformers import BertTokenizerFast
    changed = BertTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(other)))
    assert tokenizer_digest(changed) != digest
    with pytest.raises(TypeError, match="fast"):
        tokenizer_digest(object())


def test_the_record_file_is_tidy():
    with open(recipes.RECORD_FILE) as f:
        data = json.load(f)
    for stage, entry in data.items():
        assert entry["version"] == recipes.RECIPE_VERSIONS[stage]
        assert entry["history"][-1]["digest"] == entry["digest"]
    assert os.path.dirname(recipes.RECORD_FILE).endswith("tests")
