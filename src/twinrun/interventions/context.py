"""What interventions share: where the program's call site is, the seeds they draw, and reporting acts.

``CONTEXT`` is the process's one ``Context`` (a documented registry: which interventions were applied,
which call sites were reported, a counter per kind of unseeded object so that seeds are stable in
program order).
"""

from __future__ import annotations

import itertools
import os
import sys
import sysconfig
import threading
from types import FrameType
from typing import TYPE_CHECKING

import numpy as np

from .. import _active, _channel
from ..frameworks.base import Intervention

if TYPE_CHECKING:
    from ..seeding import Seeds

__all__ = ["CONTEXT", "LINE_PREFIX", "STREAM", "Context"]

STREAM = "data"
LINE_PREFIX = "twinrun intervention "

_LIBRARY_PATHS = tuple(sorted({os.path.realpath(p) + os.sep for k, p in sysconfig.get_paths().items()
                               if k in ("stdlib", "platstdlib", "purelib", "platlib")} |
                              {os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix)}))
# Frames of these packages are not "the program": the call site is the first frame outside them.
_SKIP = tuple(os.sep + p + os.sep for p in ("twinrun", "numpy", "torch", "importlib", "multiprocessing",
                                            "concurrent", "threading"))


def _library(path: str) -> bool:
    return path.startswith(_LIBRARY_PATHS)


_DEMO = os.sep + os.path.join("twinrun", "_demo") + os.sep   # twinrun's demo script is a user's script


def _program_frame(name: str) -> bool:
    if _DEMO in name:
        return True
    return not (name.startswith("<") or any(s in name for s in _SKIP) or _library(os.path.realpath(name)))


class Context:
    """The ``InterventionContext`` of this process (see ``twinrun.frameworks.base``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._applied: list[str] = []
        self._seen: set[tuple[str, str]] = set()
        self._counters: dict[str, itertools.count[int]] = {}
        self._seeds: Seeds | None = None
        self._drawn: set[tuple[object, ...]] = set()
        self._seen_draws: set[tuple[str, str, str]] = set()

    def run(self, iv: Intervention) -> None:
        """Apply ``iv`` once per process."""
        if iv.name in self._applied:
            return
        iv.apply(self)
        self._applied.append(iv.name)

    # --- seeds ---
    def seeds(self) -> Seeds:
        """The active Seeds (``--seed``), else those of ``TWINRUN_SEED`` (0 when unset)."""
        current = _active.current_seeds()
        if current is not None:
            return current
        if self._seeds is None:
            from ..seeding import ENV_ROOT, Seeds, seed_value

            raw = os.environ.get(ENV_ROOT, "").strip()
            root = seed_value(raw, ENV_ROOT) if raw else 0
            self._seeds = Seeds(root, source="intervention")
        return self._seeds

    def sequence(self, kind: str) -> np.random.SeedSequence:
        """The SeedSequence for the next unseeded ``kind`` object: stable in program order."""
        with self._lock:
            n = next(self._counters.setdefault(kind, itertools.count()))
        return self.seeds().sequence(STREAM, "intervention", kind, n)

    def fixed_sequence(self, label: str) -> np.random.SeedSequence:
        return self.seeds().sequence(STREAM, "intervention", label)

    # --- call sites ---
    def from_program(self, depth: int) -> bool:
        return _program_frame(sys._getframe(depth + 1).f_code.co_filename)

    def note(self, name: str, what: str, api: str) -> None:
        """Report an act at a new call site of the program (acts inside installed libraries stay quiet)."""
        site = _site(sys._getframe(2))
        if _library(site):
            return
        with self._lock:
            if (name, site) in self._seen:
                return
            self._seen.add((name, site))
        _channel.report("intervention", name=name, what=what, api=api, site=site)
        print(f"{LINE_PREFIX}{name}: {what} at {site}", file=sys.stderr, flush=True)

    def draw(self, name: str, api: str, kind: str) -> None:
        """Report a draw through ``api`` (``order``: a shuffle or permutation; ``content``: values;
        ``seed``: a seed taken from the OS) at the program's line: the first frame outside twinrun and
        installed libraries. ``direct``: the program called ``api`` itself (else a library did, on its
        behalf); ``outer``: the statement of the script's top level that led to it (where a seed must come
        before). Each line of the program is reported once, and checked cheaply after that."""
        caller = sys._getframe(2)
        key = (name, api, caller.f_code, caller.f_lineno)
        if key in self._drawn:
            return
        self._drawn.add(key)
        site, direct, outer, via = _program_sites(caller)
        if site is None:
            return
        with self._lock:
            if (name, api, site) in self._seen_draws:
                return
            self._seen_draws.add((name, api, site))
        _channel.report("intervention", name=name, what=f"{api} draws from an unseeded RNG", api=api, site=site,
                        draw=kind, direct=direct, outer=outer, via=via)
        print(f"{LINE_PREFIX}{name}: {api} at {site}", file=sys.stderr, flush=True)


def _shown(path: str) -> str:
    try:
        shown = os.path.relpath(path)
    except ValueError:
        return path
    return path if shown.startswith("..") else shown


def _program_sites(frame: FrameType | None) -> tuple[str | None, bool, str | None, str | None]:
    """The first frame of the program's own code (``file:line``), whether it is the direct caller, the
    outermost frame of the script being run (``__main__``), when there is one, and the library function
    the program called there when it is not the direct caller (``sklearn.model_selection.train_test_split``)."""
    first: str | None = None
    direct = False
    outer: str | None = None
    via: str | None = None
    depth = 0
    chain: list[FrameType] = []     # the library frames between the draw and the program, inner first
    while frame is not None:
        name = frame.f_code.co_filename
        if _program_frame(name) and not name.endswith("runpy.py"):
            here = f"{_shown(os.path.realpath(name))}:{frame.f_lineno}"
            if first is None:
                first, direct = here, depth == 0
                # the function the program called: the outermost one that is not a decorator's wrapper
                named = [f for f in reversed(chain) if "<locals>" not in getattr(f.f_code, "co_qualname", "")]
                via = None if direct or not named else _function(named[0])
            if frame.f_globals.get("__name__") == "__main__":
                outer = here
        elif first is None:
            chain.append(frame)
        frame, depth = frame.f_back, depth + 1
    return first, direct, outer, via


def _function(frame: FrameType) -> str:
    """``package.module.function`` of a library frame, private modules left out (a constructor: its class)."""
    module = str(frame.f_globals.get("__name__", ""))
    parts = [p for p in module.split(".") if p and not p.startswith("_") and p != "src"]
    code = frame.f_code
    qual = getattr(code, "co_qualname", code.co_name)
    if qual.endswith(".__init__"):
        qual = qual[: -len(".__init__")]
    return ".".join([*parts, qual])


def _site(frame: FrameType | None) -> str:
    """``file:line`` of the first frame outside twinrun, NumPy, torch and the standard plumbing."""
    while frame is not None:
        name = frame.f_code.co_filename
        if not (any(s in name for s in _SKIP) or name.startswith("<")) and not name.endswith(("runpy.py",)):
            name = os.path.realpath(name)
            if _library(name):
                return name + f":{frame.f_lineno}"
            try:
                shown = os.path.relpath(name)
                if shown.startswith(".."):
                    shown = name
            except ValueError:
                shown = name
            return f"{shown}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>:0"


CONTEXT = Context()
