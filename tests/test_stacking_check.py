"""`twinrun check` finds the stacking example (examples/stacking/) bitwise reproducible.

It trains one small CNN per model and fold, one after another, and frees each: a parameter of a later
model can then get the id() of a freed one. The torch recorder once named parameters by id() alone,
so a later model's gradients were named after a freed model's and the two runs looked like different
models. This pins the run and the names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from twinrun.trace import Trace

ROOT = Path(__file__).resolve().parents[1]
STACKING = ROOT / "examples" / "stacking" / "stacking.py"
pytestmark = pytest.mark.timeout(300)


@pytest.mark.slow
def test_check_finds_the_stacking_example_bitwise_reproducible(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TWINRUN_SEED", "PYTHONHASHSEED")}
    out = subprocess.run([sys.executable, "-m", "twinrun", "check", "--json", "--keep-traces", str(tmp_path),
                          str(STACKING), "--", "--epochs", "1", "--folds", "2"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["identical"] is True and not result["structural"]
    traces = sorted(tmp_path.glob("*.trace"))
    with Trace.open(traces[0]) as t:
        assert t.status == "complete"
        assert "torch" in t.meta("frameworks")
        steps = t.steps()
        assert len(steps) > 80   # 2 folds x 2 models x ~23 batches, then the meta-learner
        labels = set()
        for s in steps:
            events = t.events(s)
            root = next(e.name for e in events if e.phase == "input").rsplit("input", 1)[0]
            labels.add(root)
            # Every gradient and updated parameter of a step belongs to the model that step trained.
            named = [e.name for e in events if e.phase in ("grad", "param")]
            # (the first model has no prefix: its parameters are "0.weight", the others' "Sequential(2).0.weight")
            ours = [n.startswith(root) if root else n[0].isdigit() for n in named]
            assert named and all(ours), (s, root, named)
    assert len(labels) == 4   # one root per model and fold
