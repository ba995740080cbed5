"""The blind corpus (tests/corpus/) checks itself, not doctor: every claim of expected.toml holds.

The static part (markers, table, fixed twins' diffs) is fast. The slow part runs ``twinrun check``
on each original (it must part at the expected phase), each fixed twin and each reproducible
script (they must not). Three representative cases run by default; every other case carries
``expensive``, deselected by default (pyproject's addopts): ``pytest -m expensive
tests/test_corpus_ground_truth.py`` runs them.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from helpers import run_twinrun

CORPUS = Path(__file__).resolve().parent / "corpus"
MARKER = "# corpus: call-site"
CAUSES = {"unseeded-init", "data-pipeline", "hash-seed", "nondeterministic-kernel", "reproducible"}
PHASES = {"init", "input", "forward", "loss", "grad", "param", "metric", "custom"}
FRAMEWORKS = {"torch", "keras", "jax"}
TOOLS = {"measure.py", "portability.py", "diagnose.py", "false_alarms.py"}  # the corpus's own tooling, not cases
REQUIRED = {"file", "framework", "style", "story", "cause", "max_steps"}

with open(CORPUS / "expected.toml", "rb") as _f:
    CASES: dict[str, dict[str, Any]] = tomllib.load(_f)

pytestmark = pytest.mark.timeout(900)


def _scripts() -> list[str]:
    return sorted(p.name for p in CORPUS.glob("*.py") if p.name not in TOOLS)


def _marker_lines(text: str) -> list[int]:
    return [i for i, line in enumerate(text.splitlines(), 1) if line.rstrip().endswith(MARKER)]


# Checked by default (one order case, one hash-seed case, one reproducible script); the rest carry
# expensive, deselected by default: pytest -m expensive tests/test_corpus_ground_truth.py
DEFAULT = ("torch_random_shuffle_batches", "torch_vocab_set", "torch_repro_logreg")


# ---------------------------------------------------------------- static: fast, no subprocess


def test_every_script_has_a_table_and_every_table_a_script() -> None:
    files = {case["file"] for case in CASES.values()}
    assert sorted(files) == _scripts()
    assert len(files) == len(CASES), "two tables name the same file"
    assert len(CASES) >= 26


@pytest.mark.parametrize("name", sorted(CASES))
def test_table_is_complete(name: str) -> None:
    case = CASES[name]
    assert case.keys() >= REQUIRED, f"{name}: missing {sorted(REQUIRED - case.keys())}"
    assert case["file"] == f"{name}.py"
    assert case["framework"] in FRAMEWORKS
    assert case["cause"] in CAUSES
    assert isinstance(case["max_steps"], int) and case["max_steps"] >= 1
    if case["cause"] == "reproducible":
        assert "phase" not in case and "detail" not in case and "api" not in case
        return
    assert case["phase"] in PHASES
    assert case.get("api"), f"{name}: a non-reproducible case names its API"
    assert case.get("fix"), f"{name}: a non-reproducible case says its fix"
    if case["cause"] == "data-pipeline":
        assert case.get("detail") in {"order", "content"}
    else:
        assert "detail" not in case, f"{name}: detail is only for data-pipeline"
    if case["cause"] == "nondeterministic-kernel":
        assert case.get("op"), f"{name}: a kernel case names the op"


@pytest.mark.parametrize("name", sorted(CASES))
def test_call_site_marker(name: str) -> None:
    """Exactly one marked line in each non-reproducible original; none elsewhere."""
    case = CASES[name]
    lines = _marker_lines((CORPUS / case["file"]).read_text())
    if case["cause"] == "reproducible":
        assert lines == [], f"{name}: a reproducible script has no call site"
        assert not (CORPUS / "fixed" / case["file"]).exists(), f"{name}: a reproducible script has no fixed twin"
    else:
        assert len(lines) == 1, f"{name}: {len(lines)} call-site markers"


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c["cause"] != "reproducible"))
def test_fixed_twin_differs_only_at_the_call_site(name: str) -> None:
    """The fixed twin is the original with the marker dropped and a minimal fix: at most 2 hunks, 4 lines a side."""
    original = (CORPUS / name).with_suffix(".py").read_text()
    fixed_path = CORPUS / "fixed" / f"{name}.py"
    assert fixed_path.exists(), f"{name}: no fixed twin in tests/corpus/fixed/"
    fixed = fixed_path.read_text()
    assert MARKER not in fixed
    stripped = re.sub(r"  " + re.escape(MARKER) + r"$", "", original, flags=re.MULTILINE)
    matcher = difflib.SequenceMatcher(a=stripped.splitlines(), b=fixed.splitlines(), autojunk=False)
    hunks = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    assert hunks, f"{name}: the fixed twin is the original"
    assert len(hunks) <= 2, f"{name}: {len(hunks)} changed places"
    removed = sum(i2 - i1 for _, i1, i2, _, _ in hunks)
    added = sum(j2 - j1 for _, _, _, j1, j2 in hunks)
    assert removed <= 4 and added <= 4, f"{name}: -{removed} +{added} lines"
    # The change sits at the call site: within 15 lines of the marked line.
    marked = _marker_lines(original)[0] - 1
    assert any(abs(i1 - marked) <= 15 or abs(i2 - 1 - marked) <= 15 for _, i1, i2, _, _ in hunks)


# ---------------------------------------------------------------- slow: real runs under twinrun check


def _check(script: Path, max_steps: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    # The hash-seed cases part only when each run draws its own hash seed.
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    proc = run_twinrun("check", script, "--max-steps", max_steps, "--json", "--quiet",
                       env={"TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=800)
    assert proc.returncode in (0, 1), f"{script.name}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    doc: dict[str, Any] = json.loads(proc.stdout)
    doc["returncode"] = proc.returncode
    assert [doc["steps_a"], doc["steps_b"]] == [max_steps, max_steps], f"{script.name}: {doc['sentence']}"
    return doc


def _needs_two_cpus(case: dict[str, Any]) -> None:
    if case["cause"] == "nondeterministic-kernel" and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the kernel races only with 2 or more threads")


def _params(kind: str) -> list[Any]:
    out = []
    for name, case in sorted(CASES.items()):
        if (kind == "reproducible") != (case["cause"] == "reproducible"):
            continue
        marks = [pytest.mark.slow] + ([] if name in DEFAULT else [pytest.mark.expensive])
        out.append(pytest.param(name, marks=marks, id=f"{case['framework']}-{name}"))
    return out


@pytest.mark.parametrize("name", _params("parts"))
def test_original_parts_at_the_expected_phase(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name]
    _needs_two_cpus(case)
    doc = _check(CORPUS / case["file"], case["max_steps"], monkeypatch)
    assert not doc["identical"] and doc["returncode"] == 1, f"{name}: the runs did not part: {doc['sentence']}"
    assert not doc["structural"], f"{name}: a structural mismatch, not a numeric one: {doc['sentence']}"
    assert doc["first_divergence"]["phase"] == case["phase"], doc["sentence"]


@pytest.mark.parametrize("name", _params("parts"))
def test_fixed_twin_repeats(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name]
    doc = _check(CORPUS / "fixed" / case["file"], case["max_steps"], monkeypatch)
    assert doc["identical"] and doc["returncode"] == 0, f"{name} (fixed): {doc['sentence']}"


@pytest.mark.parametrize("name", _params("reproducible"))
def test_reproducible_script_repeats(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name]
    doc = _check(CORPUS / case["file"], case["max_steps"], monkeypatch)
    assert doc["identical"] and doc["returncode"] == 0, f"{name}: {doc['sentence']}"
