"""Doctor on the blind corpus (issue 11): its answer against expected.toml, its words, its fixes.

Each case runs ``twinrun.doctor.diagnose`` (every run a fresh process) and checks the cause, the
detail (order or content) and, where the table has one, the call site (``file:line`` of the
``# corpus: call-site`` comment) and the API. Every sentence doctor prints, on the terminal and in
``--json``, is scanned for ``None``. A few cases then apply the edit doctor printed to a copy of the
script and check that ``twinrun check`` finds the copy reproducible.

A representative case per cause runs by default; the rest carry ``expensive``:
``pytest -m expensive tests/test_doctor_corpus.py`` (and ``tests/corpus/diagnose.py`` prints the
confusion matrix of a whole run).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest

from helpers import run_twinrun
from twinrun.cli.doctor import render
from twinrun.doctor import diagnose

CORPUS = Path(__file__).resolve().parent / "corpus"
MARK = "# corpus: call-site"
with open(CORPUS / "expected.toml", "rb") as _f:
    CASES: dict[str, dict[str, Any]] = tomllib.load(_f)

# One case per cause (and per kind of evidence), cheap enough for every run of the suite.
DEFAULT = ("torch_random_shuffle_batches", "torch_threadpool_as_completed", "torch_default_rng_noise",
           "torch_generator_seed", "torch_vocab_set")
# Cases whose printed edit is applied to a copy and checked (default: the first).
FIXES = ("torch_random_shuffle_batches", "torch_generator_seed", "torch_pool_imap_unordered", "torch_vocab_set",
         "keras_tfdata_random_map")

pytestmark = pytest.mark.timeout(900)


# Known wrong (docs/doctor.md says why): none at present; an entry here is a strict xfail.
KNOWN_WRONG: dict[str, str] = {}


def _params(names: Any) -> list[Any]:
    out = []
    for name in names:
        marks = [pytest.mark.slow] + ([] if name in DEFAULT[:1] or (names is not FIXES and name in DEFAULT)
                                      else [pytest.mark.expensive])
        if name in KNOWN_WRONG and names is not FIXES:
            marks.append(pytest.mark.xfail(reason=KNOWN_WRONG[name], strict=True))
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def _line(case: dict[str, Any]) -> int | None:
    lines = (CORPUS / case["file"]).read_text().splitlines()
    return next((i for i, ln in enumerate(lines, 1) if MARK in ln), None)


@pytest.fixture(autouse=True)
def _no_hash_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)   # the hash-seed cases need it unset, as a shell has it
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")


_CACHE: dict[str, Any] = {}


def _diagnose(name: str) -> Any:
    if name not in _CACHE:
        case = CASES[name]
        if case["cause"] == "nondeterministic-kernel" and len(os.sched_getaffinity(0)) < 2:
            pytest.skip("the kernel races only with 2 or more threads")
        _CACHE[name] = diagnose(CORPUS / case["file"], max_steps=case["max_steps"], portability=False)
    return _CACHE[name]


def _sentences(doc: Any) -> list[str]:
    """Every string of the --json document that is a sentence (has a space), nested included."""
    if isinstance(doc, str):
        return [doc] if " " in doc else []
    if isinstance(doc, dict):
        return [s for v in doc.values() for s in _sentences(v)]
    if isinstance(doc, list):
        return [s for v in doc for s in _sentences(v)]
    return []


@pytest.mark.parametrize("name", _params(sorted(CASES)))
def test_doctor_names_the_cause_and_the_call_site(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    d = _diagnose(name)
    assert str(d.cause) == case["cause"], f"{name}: {d.cause}/{d.detail}: {d.summary} | {d.fix}"
    if case["cause"] == "data-pipeline":
        assert d.detail == case["detail"], f"{name}: {d.detail}: {d.summary}"
    line = _line(case)
    if case["cause"] == "nondeterministic-kernel":   # the op, its pass and its line: the census's
        assert d.detail and d.detail.startswith(case["op"]), f"{name}: {d.detail} vs {case['op']}"
        assert d.source and line is not None and d.source["site"].endswith(f"{case['file']}:{line}"), d.source
    elif line is not None:
        assert d.source, f"{name}: no call site; fix: {d.fix}"
        assert d.source["site"].endswith(f"{case['file']}:{line}"), f"{name}: {d.source}"
        # the API's names: the first word of each call in the chain, arguments left out (`random.shuffle`,
        # `iteration over a set (...)`, `keras...Dense → keras.initializers.GlorotUniform (no seed; ...)`)
        calls = re.sub(r"\(.*?\)", "", d.source["api"]).split(" → ")
        apis = [c.split(" ")[0].rstrip(".").rsplit(".", 1)[-1] for c in calls]
        init = d.source.get("kind") == "init" and "init" in case["api"]   # a default init, by its initialiser
        assert any(a and a.lower() in case["api"].lower() for a in apis) or init, \
            f"{name}: {d.source['api']} vs {case['api']}"
        assert f"{case['file']}:{line}" in d.fix, d.fix
    # Honest words: no None anywhere, counts are the steps the runs recorded.
    render(d)
    text = capsys.readouterr().out
    doc = json.loads(json.dumps(d.to_dict(), default=str))
    for sentence in [text, *_sentences(doc)]:
        assert not re.search(r"\bNone\b", sentence), f"{name}: {sentence}"
    assert d.steps == case["max_steps"] and f"{d.steps} step" in text


def _apply(edit: dict[str, Any], source: str, name: str) -> str:
    """The edit doctor printed, applied as a user would: the line replaced (or a line inserted above
    it), and the prelude after the last top-level import."""
    lines = source.splitlines()
    n = int(edit["site"].rsplit(":", 1)[1])
    assert lines[n - 1] == edit["old"], f"{name}: doctor quoted another line than {edit['site']} holds"
    if edit.get("new") is not None:
        lines[n - 1] = edit["new"]
    if edit.get("insert"):
        lines.insert(n - 1, edit["insert"])
    if edit.get("prelude"):
        last = max(i for i, ln in enumerate(lines) if re.match(r"(import|from) \w", ln))
        lines.insert(last + 1, edit["prelude"])
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", _params(FIXES))
def test_the_printed_fix_makes_the_script_repeat(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    d = _diagnose(name)
    assert d.source and d.source.get("edit"), f"{name}: doctor printed no edit: {d.fix}"
    edit = d.source["edit"]
    copy = tmp_path / case["file"]
    shutil.copy(CORPUS / case["file"], copy)
    copy.write_text(_apply(edit, copy.read_text(), name))
    done = run_twinrun("check", copy, "--max-steps", case["max_steps"], "--json", "--quiet",
                       cwd=tmp_path, timeout=600)
    doc = json.loads(done.stdout)
    assert doc["identical"], f"{name}: the fixed copy still parts: {doc['sentence']}\n{copy.read_text()}"
