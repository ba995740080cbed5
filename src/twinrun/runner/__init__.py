"""Running a user's script under twinrun: in this process (``run_script``, what ``twinrun run`` does)
or in a fresh one (``launch``, what ``check``, ``doctor`` and the demo do). Both return a ``RunResult``.
"""

from __future__ import annotations

from ..options import RunOptions, check_script
from .child import ScriptOutcome, default_trace_path, open_reference, run_as_main, run_script
from .launch import launch, launch_module
from .result import RunResult

__all__ = ["RunOptions", "RunResult", "ScriptOutcome", "check_script", "default_trace_path", "launch",
           "launch_module", "open_reference", "run_as_main", "run_script"]
