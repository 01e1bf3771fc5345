"""The recipe of every cached stage: the code that trains it, and a version that its cache key carries.

A cached model is valid only while the code that made it is unchanged. Hashing the code into the key
would retrain everything after a comment is edited, so each stage has a version instead, in its key
(`RECIPE_VERSIONS`), and `tests/test_recipes.py` keeps it honest: it records, per stage, a digest of
the source the stage runs (`RECIPE_SOURCES`: whole modules, or single functions and classes as
`module:name`) and fails when that digest changes while the version does not. Then either bump the
stage's version (its models, and every stage built on them, retrain), or, when the change provably
leaves the weights as they were, record the new digest with a reason:

    python -m bertbook.recipes record STAGE --reason "why the weights cannot change"

The digest reads the code as Python's parser does (`ast`), without docstrings: editing a comment or
a docstring changes nothing; renaming a variable or changing a default does.

`tokenizer` is the recipe of chapter 4's WordPiece tokenizer; its version is
`bertbook.tokenizer.TOKENIZER_VERSION`, and what a tokenizer holds is hashed into the keys of the
stages built on it (`bertbook.tokenizer.tokenizer_digest`).
"""
from __future__ import annotations

import argparse
import ast
import datetime
import hashlib
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from .tokenizer import TOKENIZER_VERSION

# Bump a stage's version when its training changes (its key changes, so its cached models are retrained).
RECIPE_VERSIONS: Dict[str, int] = {
    "pretrain": 1,           # chapter 5's BERT from scratch
    "mlm-teacher": 1,        # MiniLM, further pretrained with MLM + NSP heads
    "distill": 1,            # the copied student, triple loss or MLM alone (stages distill, distill-mlm-only)
    "scratch": 1,            # the students from random weights (stages scratch-<arm>)
    "teacher": 1,            # MiniLM fine-tuned on Rotten Tomatoes
    "student": 1,            # the fine-tuned 3-layer students (stages student, student-no-kd)
    "teacher-logits": 1,     # the fine-tuned teacher's logits
    "student-transfer": 1,   # the students with the transfer set (stages student-transfer, student-pseudo)
    "random-init": 1,        # the classifier from random weights
    "tokenizer": TOKENIZER_VERSION,
}

# What the model, the data and the loops of every stage read: a change anywhere here can move weights.
_MODELS = ("attention", "encoder", "bert", "device")
_MLM = _MODELS + ("masking", "metrics", "training", "distributed", "data", "pipeline_data")
_CLASSIFY = _MODELS + ("distilbert", "distill", "finetune", "batching", "training", "distributed", "data",
                       "pipeline_data", "hf")
_STUDENT = ("pipeline:_student_settings", "configs:TRANSFER_FIELDS", "configs:FinetuneSettings")

RECIPE_SOURCES: Dict[str, Tuple[str, ...]] = {
    "pretrain": _MLM + ("pretrain", "pipeline:pretrained_teacher", "pipeline:_pretrain_key",
                        "pipeline:_pretrain_with", "pipeline:_pretraining_info", "configs:PretrainSettings"),
    "mlm-teacher": _MLM + ("pretrain", "hf", "pipeline:mlm_teacher", "pipeline:_pretrain_with",
                           "pipeline:_pretraining_info", "configs:MLMTeacherSettings"),
    "distill": _MLM + ("distilbert", "distill", "pipeline:distilled_student", "pipeline:_pretraining_info",
                       "configs:DistillSettings"),
    "scratch": _MLM + ("distilbert", "distill", "pipeline:scratch_student", "pipeline:_scratch_settings",
                       "pipeline:_pretraining_info", "configs:ScratchSettings", "configs:SCRATCH_ARMS"),
    "teacher": _CLASSIFY + ("pipeline:finetuned_teacher", "pipeline:_teacher_key", "configs:FinetuneSettings"),
    "student": _CLASSIFY + _STUDENT + ("pipeline:finetuned_student",),
    "teacher-logits": _CLASSIFY + ("pipeline:teacher_logits", "pipeline:_teacher_logits_key"),
    "student-transfer": _CLASSIFY + _STUDENT + ("pipeline:transfer_student", "pipeline:_teacher_logits_key"),
    "random-init": _CLASSIFY + _STUDENT + ("pipeline:random_init_classifier",),
    "tokenizer": ("tokenizer:TOKENIZER_VERSION", "tokenizer:_coverage_text", "tokenizer:train_wordpiece",
                  "tokenizer:save_tokenizer", "tokenizer:load_tokenizer", "tokenizer:get_pretraining_tokenizer",
                  "data"),
}

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# The digests on record, beside the tests that check them.
RECORD_FILE = os.path.join(os.path.dirname(os.path.dirname(PACKAGE_DIR)), "tests", "recipe_digests.json")


def recipe_version(stage: str) -> int:
    """The version of `stage`'s recipe (a key of RECIPE_VERSIONS), as its cache key carries it."""
    if stage not in RECIPE_VERSIONS:
        raise ValueError(f"unknown recipe {stage!r}; valid: {', '.join(RECIPE_VERSIONS)}")
    return RECIPE_VERSIONS[stage]


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _defined_names(node: ast.stmt) -> List[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def source_digest(entry: str) -> str:
    """sha256 of what `entry` names, as parsed without docstrings: "module" (a whole module of
    bertbook) or "module:name" (one top-level function, class or assignment in it)."""
    module, _, name = entry.partition(":")
    path = os.path.join(PACKAGE_DIR, f"{module}.py")
    if not os.path.isfile(path):
        raise ValueError(f"recipe source {entry!r}: no module {module!r} in bertbook")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    if name:
        found = [n for n in tree.body if name in _defined_names(n)]
        if len(found) != 1:
            raise ValueError(f"recipe source {entry!r}: {len(found)} top-level definitions of {name!r} in {module}.py")
        tree = ast.Module(body=found, type_ignores=[])
    dumped = ast.dump(_strip_docstrings(tree), annotate_fields=True, include_attributes=False)
    return hashlib.sha256(dumped.encode()).hexdigest()


def recipe_digest(stage: str) -> str:
    """One digest of every source `stage`'s recipe reads (RECIPE_SOURCES[stage]), in order."""
    recipe_version(stage)  # a clear error for an unknown stage
    h = hashlib.sha256()
    for entry in RECIPE_SOURCES[stage]:
        h.update(f"{entry}={source_digest(entry)}\n".encode())
    return h.hexdigest()


def read_record(path: str = RECORD_FILE) -> Dict[str, Dict]:
    """The digests on record: {stage: {"version", "digest", "history": [...]}}."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check(record: Optional[Dict[str, Dict]] = None) -> List[str]:
    """What is out of date: one message per stage whose code changed while its version did not,
    or whose version changed without a recorded digest. Empty when every recipe is on record."""
    record = read_record() if record is None else record
    problems = []
    for stage in RECIPE_VERSIONS:
        version, digest = RECIPE_VERSIONS[stage], recipe_digest(stage)
        on_record = record.get(stage)
        if on_record is None:
            problems.append(f"{stage}: no digest on record; record it: python -m bertbook.recipes record {stage}")
        elif on_record["version"] != version:
            problems.append(f"{stage}: version {version} but version {on_record['version']} on record; record "
                            f"the new version's code: python -m bertbook.recipes record {stage}")
        elif on_record["digest"] != digest:
            where = "bertbook/recipes.py" if stage != "tokenizer" else "bertbook/tokenizer.py (TOKENIZER_VERSION)"
            problems.append(
                f"{stage}: the code that trains it changed ({', '.join(changed_sources(stage, on_record))}) but its "
                f"version ({version}) did not. Bump its version in {where} (its cached models retrain), or, if the "
                f"change cannot move the weights: python -m bertbook.recipes record {stage} --reason '...'")
    return problems


def changed_sources(stage: str, on_record: Dict) -> List[str]:
    """The entries of RECIPE_SOURCES[stage] whose digest differs from the one on record."""
    old = on_record.get("sources", {})
    return [e for e in RECIPE_SOURCES[stage] if old.get(e) != source_digest(e)] or ["the list of sources"]


def record(stages: Sequence[str], reason: Optional[str] = None, path: str = RECORD_FILE) -> None:
    """Put the current version and digest of `stages` on record. A stage whose version is unchanged
    but whose code is not needs `reason`: why the change cannot move its weights."""
    data = read_record(path) if os.path.exists(path) else {}
    for stage in stages:
        version, digest = recipe_version(stage), recipe_digest(stage)
        old = data.get(stage)
        if old is not None and old["version"] == version and old["digest"] != digest and not reason:
            raise ValueError(f"{stage}: its code changed but its version did not; bump the version, or give "
                             "--reason why the change cannot move the weights")
        history = [] if old is None else old.get("history", [])
        history.append({"version": version, "digest": digest, "date": datetime.date.today().isoformat(),
                        **({"reason": reason} if reason else {})})
        data[stage] = {"version": version, "digest": digest,
                       "sources": {e: source_digest(e) for e in RECIPE_SOURCES[stage]}, "history": history}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bertbook.recipes",
                                     description="Check or record the digests of the stages' training code.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="list the stages whose code changed without a new version")
    rec = sub.add_parser("record", help="put stages' current version and code on record")
    rec.add_argument("stages", nargs="+", choices=list(RECIPE_VERSIONS))
    rec.add_argument("--reason", help="why a change of code with the same version cannot move the weights")
    args = parser.parse_args(argv)
    if args.command == "check":
        problems = check()
        print("\n".join(problems) or "every recipe is on record")
        return 1 if problems else 0
    try:
        record(args.stages, args.reason)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
