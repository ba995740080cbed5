"""RunOptions: validated once, carried to the child as argv and back unchanged; one seed carrier."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import run_twinrun
from twinrun import UsageError
from twinrun.options import RecordOptions, RunOptions

CNN = Path(__file__).parent / "scripts" / "cnn_digits.py"


def test_options_survive_the_trip_to_the_child_and_back(tmp_path):
    o = RunOptions.create(CNN, ["--seed", "0", "--", "x y"], output=tmp_path / "a.trace", capture="grad,param",
                          every=2, max_steps="5", against=tmp_path / "ref.trace", keep_going=True, seed="7",
                          deterministic=True, threads=1, interventions="seed-numpy,fixed-clock")
    assert RunOptions.from_argv(o.to_argv()) == o
    assert o.record == RecordOptions(capture=("grad", "param"), every=2, max_steps=5,
                                     against=str(tmp_path / "ref.trace"), keep_going=True)
    plain = RunOptions.create(CNN)
    assert RunOptions.from_argv(plain.to_argv()) == plain
    assert plain.replace(max_steps=3).record.max_steps == 3 and plain.record.max_steps is None


@pytest.mark.parametrize("values, words", [
    ({"every": 0}, "every (--every)"), ({"max_steps": "abc"}, "max_steps (--max-steps)"),
    ({"threads": True}, "threads (--threads)"), ({"capture": "grads"}, "unknown phase 'grads'"),
    ({"seed": -1}, "seed (--seed)"), ({"interventions": ["seed-all"]}, "unknown intervention 'seed-all'"),
])
def test_each_bad_value_is_one_line_naming_the_option(values, words):
    with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(")", r"\)")) as e:
        RunOptions.create(CNN, **values)
    assert "\n" not in str(e.value)


def test_a_seed_that_contradicts_twinrun_seed_is_refused_naming_both(tmp_path):
    r = run_twinrun("run", "-o", tmp_path / "a.trace", "--seed", 3, CNN, env={"TWINRUN_SEED": "5"})
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "--seed 3 conflicts with TWINRUN_SEED=5" in line and "drop" in line
    assert not (tmp_path / "a.trace").exists()
