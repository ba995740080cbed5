"""Shared fixtures. Subprocesses started by tests import twinrun from this checkout's src/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

# Fresh processes (python -m twinrun, user scripts) must import this checkout, not an installed copy.
os.environ["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def twinrun_cmd():
    """The command line prefix that runs twinrun in a fresh process."""
    return [sys.executable, "-m", "twinrun"]
