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
from twinrun.doctor.sources import Edit, edit_for, hash_sites, pick, unordered_sites

WORDS = frameworks.adapter_class("torch").words


def _acts_under(interventions: str, script: Path, **env: str) -> list[dict]:
    """The acts that ``script``, run in a fresh process under ``interventions``, reported (it must exit 0)."""
    import os
    import subprocess
    import sys

    from twinrun import _channel

    report = script.parent / f"{script.stem}-acts.jsonl"
    done = subprocess.run([sys.executable, "-c", "import sys, runpy, twinrun.interventions as iv; "
                           "iv.apply(sys.argv[1]); runpy.run_path(sys.argv[2], run_name='__main__')",
                           interventions, str(script)], capture_output=True, text=True, cwd=script.parent,
                          env={**os.environ, _channel.ENV: str(report), **env}, timeout=300)
    assert done.returncode == 0, done.stderr
    return _channel.read(report) if report.exists() else []


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


def test_interventions_observe_draws_with_the_programs_line(tmp_path: Path) -> None:
    """A fresh process: each unseeded draw is reported once, at the program's line, with its API and kind;
    draws after the program seeds an RNG itself are not; a library's draw names the library call."""
    import textwrap


    script = tmp_path / "draws.py"
    script.write_text(textwrap.dedent("""\
        import random
        import numpy as np
        import torch
        from sklearn.model_selection import train_test_split
        order = list(range(10)); random.shuffle(order)
        perm = np.random.permutation(10)
        g = torch.Generator(); g.seed()
        parts = train_test_split(np.arange(10), test_size=0.2)
        np.random.seed(0); later = np.random.rand(3)
        model = torch.nn.Linear(3, 2)
        torch.manual_seed(0)
    """))
    draws = {(a["api"], a["site"].rsplit(":", 1)[1], a["draw"], a["direct"]): a
             for a in _acts_under("seed-random,seed-numpy,seed-torch", script)
             if a.get("draw")}
    assert ("random.shuffle", "5", "order", True) in draws
    assert ("numpy.random.permutation", "6", "order", True) in draws
    assert ("torch.Generator.seed", "7", "seed", True) in draws
    split = draws[("numpy.random.permutation", "8", "order", False)]
    assert split["via"] == "sklearn.model_selection.train_test_split"
    assert not any(k[1] == "9" for k in draws)                       # seeded by the program first
    init = [a for k, a in draws.items() if k[1] == "10" or a.get("outer", "").endswith(":10")]
    assert init and all(a["draw"] == "init" for a in init)
    assert ("torch.manual_seed", "11", "late-seed", True) in draws   # a seed after the model's draws


def test_a_library_object_built_without_a_seed_is_named_by_its_public_class(tmp_path: Path) -> None:
    """A Keras initialiser given as a string draws its seed inside ``Dense``; the draw names the
    initialiser (``keras.initializers.GlorotUniform``, built without its ``seed``), and a ``Dropout()``
    names the layer, not the ``SeedGenerator`` it builds inside; a seeded initialiser draws nothing."""
    import textwrap


    script = tmp_path / "k.py"
    script.write_text(textwrap.dedent("""\
        import keras
        keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(seed=1))
        keras.layers.Dense(3, kernel_initializer="glorot_uniform")
        keras.layers.Dropout(0.5)
    """))
    draws = {a["site"].rsplit(":", 1)[1]: a for a in _acts_under("seed-random", script, KERAS_BACKEND="torch")
             if a.get("draw")}
    assert "2" not in draws
    assert (draws["3"]["built"], draws["3"]["unseeded"]) == ("keras.initializers.GlorotUniform", "seed")
    assert (draws["4"]["built"], draws["4"]["unseeded"]) == ("keras.layers.Dropout", "seed")
    shown = Act.of(draws["3"]).shown_api
    assert shown.startswith("keras.layers.core.dense.Dense → keras.initializers.GlorotUniform (no seed; random."), shown
    assert Act.of(draws["4"]).shown_api.startswith("keras.layers.Dropout (no seed; random."), draws["4"]


def test_the_edit_gives_the_programs_own_draw_its_generator_or_seed(tmp_path: Path) -> None:
    """A draw of torch's global RNG at the program's line gets a generator made once after the imports
    (so each epoch still gets its own order); a TensorFlow op gets its own ``seed=``; the argument goes
    into the call's own parentheses, wherever the line goes on after it."""
    script = tmp_path / "t.py"
    script.write_text("import torch\nfor epoch in range(2):\n    perm = torch.randperm(len(x)).tolist()\n"
                      "img = tf.image.random_flip_left_right(img)  # flip\nnoise = torch.rand(3,\n")
    perm = edit_for(Act("seed-torch", "draw", "torch.randperm", f"{script}:3", "order", True), script, "input")
    assert perm is not None and perm.new == "    perm = torch.randperm(len(x), generator=torch_rng).tolist()"
    assert perm.prelude == "import torch; torch_rng = torch.Generator().manual_seed(0)"
    flip = edit_for(Act("seed-tf-random", "draw", "tf.image.random_flip_left_right", f"{script}:4", "content", True),
                    script, "input")
    assert flip is not None and flip.new == "img = tf.image.random_flip_left_right(img, seed=0)"
    # a call that does not close on its line, or a library's draw on the program's behalf: no edit
    assert edit_for(Act("seed-torch", "draw", "torch.rand", f"{script}:5", "content", True), script, "input") is None
    assert edit_for(Act("seed-torch", "draw", "torch.randperm", f"{script}:3", "order", False), script, "input") is None


def test_a_seed_made_from_hash_comes_before_a_set_that_is_only_printed(tmp_path: Path) -> None:
    """``hash()`` of a string is another number in every process: inside a call that makes a seed it is the
    site (before a set iterated only to print it), and the edit takes a stable hash instead."""
    script = tmp_path / "h.py"
    script.write_text("import numpy as np\nfor t in set(tags):\n    print(t)\n"
                      "rng = np.random.default_rng(abs(hash(RUN_NAME)))\nbucket = hash(word) % 7\n")
    sites = hash_sites(script)
    assert [(w, s.rsplit(":", 1)[1]) for w, s, _ in sites] == [
        ("hash(...) of a string as a seed", "4"), ("for ... in set(...)", "2"), ("hash(...) of a string", "5")]
    edit = sites[0][2]
    assert edit.new == "rng = np.random.default_rng(abs(zlib.crc32(str(RUN_NAME).encode())))"
    assert edit.prelude == "import zlib"


def test_several_causes_names_what_this_script_drew_and_nothing_it_does_not_use(tmp_path: Path) -> None:
    """When only everything at once removed it: the draws seen at the program's lines (not a library's
    draw while it was imported), no DataLoader advice for a script without one, and for a TensorFlow op
    the parallel map that needs its seed and a serial map together."""
    script = tmp_path / "train.py"
    imported = Act("seed-numpy", "draw", "numpy.random.rand", f"{script}:1", "content", False)
    flip = Act("seed-tf-random", "draw", "tf.image.random_flip_left_right", f"{script}:2", "content", True)
    f = _findings(tmp_path, Where(0, "input", "x"), "all", [imported])
    f.evidence[1].acted = [imported, flip]        # the data experiment saw both; "all", seeded, only the import
    c = next(r for r in RULES if r.holds(f)).conclude(f)
    assert c.detail == "several causes"
    assert f"`tf.image.random_flip_left_right` at {script}:2" in c.fix and "numpy.random.rand" not in c.fix
    assert "loader_kwargs" not in c.fix and "serial map" in c.fix
    assert f.source == flip


def test_two_sources_that_only_together_remove_it_are_both_named(tmp_path: Path) -> None:
    """Bisecting ran each source alone and the runs still parted: the answer names every source and
    never says that one alone makes the runs identical (a stranger's script with an unseeded NumPy init
    and an unseeded loader shuffle got one line and a fix that did not work)."""
    script = tmp_path / "train.py"
    numpy_draw = Act("seed-numpy", "draw", "numpy.random.randn", f"{script}:2", "content", True)
    torch_draw = Act("seed-torch", "draw", "torch.randperm", f"{script}:3", "order", True)
    f = _findings(tmp_path, Where(0, "init", "w"), "rngs", [numpy_draw, torch_draw])
    f.evidence += [Experiment(f"only {n}", f"only {n}", identical=False, runs=2) for n in ("seed-numpy", "seed-torch")]
    f.source = pick(f.fixed.acted, "init") if f.fixed else None
    c = next(r for r in RULES if r.holds(f)).conclude(f)
    assert c.fix.startswith("Seed every one of these draws")
    assert f"{script}:2" in c.fix and f"{script}:3" in c.fix
    assert "together" in c.summary and "alone makes" not in c.summary
    # with no single run tried (one source), the usual words
    g = _findings(tmp_path, Where(0, "init", "w"), "rngs", [numpy_draw])
    assert "seeding it alone makes the runs identical" in next(r for r in RULES if r.holds(g)).conclude(g).summary


def test_a_dropout_draw_is_reported_at_the_forward_line_and_named_by_its_layer(tmp_path: Path) -> None:
    """Dropout draws its mask from torch's global RNG inside the op: ``seed-torch`` reports it at the line
    of the program's ``forward`` that calls the layer, named ``torch.nn.Dropout``; not in eval mode, and not
    once the program seeded torch itself."""
    import textwrap


    script = tmp_path / "drop.py"
    script.write_text(textwrap.dedent("""\
        import torch
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.drop = torch.nn.Dropout(0.5)
            def forward(self, x):
                return self.drop(x)
        net = Net().eval()
        net(torch.ones(4))
        net.train()
        net(torch.ones(4))
        torch.manual_seed(0)
        torch.nn.functional.dropout(torch.ones(4), 0.5)
    """))
    draws = [(a["api"], a["site"].rsplit(":", 1)[1], a["via"]) for a in _acts_under("seed-torch", script)
             if a.get("draw")]
    # the seed at line 12 comes after a draw: reported as late (doctor weighs it for initial values only)
    assert draws == [("torch.nn.functional.dropout", "7", "torch.nn.Dropout"), ("torch.manual_seed", "12", None)]


def test_a_draw_of_the_step_is_told_as_one_not_as_the_initial_values(tmp_path: Path) -> None:
    """The runs part in the forward pass with the parameters identical: the draw that the RNGs experiment
    observed (a dropout) is named with its line, as a draw of every step, not of the initial weights."""
    script = tmp_path / "train.py"
    drop = Act("seed-torch", "draw", "torch.nn.functional.dropout", f"{script}:3", "content", False,
               via="torch.nn.Dropout")
    f = _findings(tmp_path, Where(0, "forward", "drop"), "rngs", [drop])
    f.source = pick(f.fixed.acted, "forward") if f.fixed else None
    c = next(r for r in RULES if r.holds(f)).conclude(f)
    assert c.fix.startswith(f"`torch.nn.Dropout (torch.nn.functional.dropout)` at {script}:3 draws on every step")
    assert "during the step" in c.summary and "before the model is built" not in c.fix
