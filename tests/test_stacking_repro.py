"""examples/stacking/stacking_repro.py: the fold average depends on the fold order; repro_mean does not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "stacking" / "stacking_repro.py"
pytestmark = pytest.mark.timeout(300)


@pytest.mark.slow
def test_stacking_repro_average_is_the_same_for_every_fold_order():
    out = subprocess.run([sys.executable, str(EXAMPLE), "--epochs", "1", "--folds", "4"],
                         capture_output=True, text=True, timeout=280, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(t for t in out.stdout.splitlines() if "fold orders" in t)
    assert line.startswith("24 fold orders") and line.endswith("repro_mean gives 1"), line
    naive = int(line.split("gives ")[1].split()[0])
    assert naive > 1, line   # the running average does change with the order (if it ever stops, say so)
    assert "test accuracy" in out.stdout
