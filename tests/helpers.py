"""What several test files share: running twinrun's command line in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys

TWINRUN = [sys.executable, "-m", "twinrun"]


def run_twinrun(*args, env: dict | None = None, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m twinrun ARGS`` with this environment plus ``env``; output captured as text."""
    return subprocess.run([*TWINRUN, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout)
