"""Running a user's script under twinrun: in this process (``run_script``, what ``twinrun run`` does)
or in a fresh one (``launch``, what ``check``, ``doctor`` and the demo do). Both return a ``RunResult``.
"""

from __future__ import annotations

from ..options import RunOptions, check_script
from .child import default_trace_path, open_reference, run_script
from .launch import launch
from .result import RunResult

__all__ = ["RunOptions", "RunResult", "check_script", "default_trace_path", "launch", "open_reference",
           "run_script"]
