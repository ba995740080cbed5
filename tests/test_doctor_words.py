"""Doctor's sentences never say ``None`` (issue 11, part 4): every rule, with what is unknown left unknown.

Fast: the rules of ``doctor.attribution`` concluded on findings built by hand (no run); the corpus
tests (tests/test_doctor_corpus.py) scan the text and --json of real diagnoses.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from twinrun import frameworks
from twinrun.doctor.attribution import RULES, Findings
from twinrun.doctor.model import Act, Experiment, Where
from twinrun.doctor.sources import Edit, hash_sites, pick, unordered_sites

WORDS = frameworks.adapter_class("torch").words


def _findings(tmp_path: Path, where: Where | None, fixed: str | None, acted: list[Act]) -> Findings:
    script = tmp_path / "train.py"
    script.write_text("import random\nwords = ['a', 'b']\nvocab = {w: i for i, w in enumerate(set(words))}\n")
    base = Experiment("baseline", "nothing", identical=False, first_divergence=where, runs=2)
    tried = [Experiment("seed", "every RNG seeded", identical=False, runs=2)]
    fx = None if fixed is None else Experiment(fixed, f"{fixed} changed", identical=True, runs=2, acted=acted)
    return Findings(script, base, [base, *tried, *([fx] if fx else [])], fx, False, WORDS)


WHERES = [None, Where(None, None, None), Where(3, "input", None), Where(0, "grad", "fc.weight")]
FIXED = [None, "rngs", "clock", "seed", "data", "data-content", "hash-seed", "deterministic", "threads-1", "all"]


@pytest.mark.parametrize("fixed", FIXED)
@pytest.mark.parametrize("where", WHERES, ids=["nowhere", "all-unknown", "no-name", "known"])
def test_no_rule_says_none(tmp_path: Path, where: Where | None, fixed: str | None) -> None:
    acts = [Act("seed-random", "random.shuffle draws", "random.shuffle", "train.py:2", "order")]
    for acted in ([], acts):
        f = _findings(tmp_path, where, fixed, acted)
        rule = next(r for r in RULES if r.holds(f))
        c = rule.conclude(f)
        for text in (c.fix, c.summary, c.detail or ""):
            assert not re.search(r"\bNone\b|\?\`|`\?`", text), f"{rule.name}: {text}"


def test_unknown_says_what_was_ruled_out(tmp_path: Path) -> None:
    f = _findings(tmp_path, Where(2, "forward", "fc"), None, [])
    c = next(r for r in RULES if r.holds(f)).conclude(f)
    assert c.cause == "unknown" and "Ruled out" in c.fix and "every RNG seeded: still part" in c.fix


def test_hash_sites_and_unordered_sites_read_the_script(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("from concurrent.futures import as_completed\n"
                      "names = list(set(x))  # note\n"
                      "for fut in as_completed(futures):\n    pass\n"
                      "cols = [t[n] for n in set(t) - {'label'}]\n")
    sites = hash_sites(script)
    assert [s[1].rsplit(":", 1)[1] for s in sites] == ["2", "5"]
    assert sites[0][2].new == "names = list(sorted(set(x)))"
    assert sites[1][2].new == "cols = [t[n] for n in sorted(set(t) - {'label'})]"
    calls = unordered_sites(script)
    assert [c["call"] for c in calls] == ["as_completed"] and calls[0]["site"].endswith("s.py:3")


def test_pick_prefers_the_programs_own_draw_and_the_statement_that_built_the_model(tmp_path: Path) -> None:
    script = tmp_path / "m.py"
    script.write_text("import torch\nmodel = Net()\nx = 1\n")
    lib = Act("seed-random", "random.getrandbits draws", "random.getrandbits", f"{script}:1", "content", False)
    init = Act("seed-torch", "draw", "torch.nn.init.kaiming_uniform_", f"{script}:9", "init", False, f"{script}:2")
    chosen = pick([lib, init], "init")
    assert chosen is not None and chosen.site == f"{script}:2" and chosen.api.endswith("kaiming_uniform_")
    own = Act("seed-numpy", "draw", "numpy.random.permutation", f"{script}:3", "order", True)
    assert pick([init, own], "input", "order") == own
    assert Edit("m.py:2", "model = Net()", insert="torch.manual_seed(0)").words().startswith("insert")
