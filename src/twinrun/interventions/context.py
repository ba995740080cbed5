"""What interventions share: where the program's call site is, the seeds they draw, and reporting acts.

``CONTEXT`` is the process's one ``Context`` (a documented registry: which interventions were applied,
which call sites were reported, a counter per kind of unseeded object so that seeds are stable in
program order).
"""

from __future__ import annotations

import functools
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


# TensorFlow's autograph runs a converted copy of the program's function from a generated file; its
# lines are mapped back to the program's own (``_located``), and an unmapped one is not the program.
_AUTOGRAPH = "__autograph_generated_file"
# Autograph's own frames between a converted function and what it calls: the program still called it.
_PLUMBING = os.sep + os.path.join("tensorflow", "python", "autograph", "impl") + os.sep


@functools.lru_cache(maxsize=4096)
def _program_frame(name: str) -> bool:
    """Whether code of the file ``name`` is the program's own (not twinrun's, a library's or Python's)."""
    if _DEMO in name:
        return True
    if _AUTOGRAPH in name:
        return False
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
        # the program's frame: a library's draws on behalf of two lines of the program are two draws
        program: FrameType | None = caller
        while program is not None and not _program_frame(program.f_code.co_filename):
            program = program.f_back
        if program is None:
            return
        key = (name, api, program.f_code, program.f_lineno)
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
        built, unseeded = (None, None) if direct else _unseeded_constructor(caller) or (None, None)
        _channel.report("intervention", name=name, what=f"{api} draws from an unseeded RNG", api=api, site=site,
                        draw=kind, direct=direct, outer=outer, via=via, built=built, unseeded=unseeded)
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
        name, line = _located(frame)
        if _PLUMBING in name:   # autograph calling the op for the program's converted function
            frame = frame.f_back
            continue
        if _program_frame(name) and not name.endswith("runpy.py"):
            here = f"{_shown(os.path.realpath(name))}:{line}"
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


# A constructor parameter that, left None, makes the object draw its own seed.
_SEED_PARAMETERS = ("seed", "random_state")


def _unseeded_constructor(frame: FrameType | None) -> tuple[str, str] | None:
    """The library object that drew because it was built without a seed: the outermost constructor
    between the draw and the program with a ``seed`` (or ``random_state``) parameter that is still None,
    as ``(its class by its public name, the parameter)``. A Keras initialiser given as a string is
    ``("keras.initializers.GlorotUniform", "seed")``; a ``keras.layers.Dropout()`` is the layer, not the
    ``SeedGenerator`` it builds inside. The fix is then that object's own seed."""
    found = None
    while frame is not None and not _program_frame(frame.f_code.co_filename):
        code = frame.f_code
        if code.co_name == "__init__" and "self" in frame.f_locals:
            params = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
            unseeded = next((p for p in _SEED_PARAMETERS if p in params and frame.f_locals.get(p, 0) is None), None)
            if unseeded is not None:
                found = _public_name(type(frame.f_locals["self"])), unseeded
        frame = frame.f_back
    return found


def _public_parts(module: str) -> list[str]:
    """The parts of a module's dotted name a user would write: private ones and ``src`` left out."""
    return [p for p in module.split(".") if p and not p.startswith("_") and p != "src"]


def _public_name(cls: type) -> str:
    """``cls`` by the shortest module path that exports it (``keras.initializers.GlorotUniform``, not
    ``keras.src.initializers.random_initializers.GlorotUniform``)."""
    public = _public_parts(cls.__module__)
    for i in range(1, len(public) + 1):
        module = sys.modules.get(".".join(public[:i]))
        if module is not None and getattr(module, cls.__name__, None) is cls:
            return f"{'.'.join(public[:i])}.{cls.__qualname__}"
    return ".".join([*public, cls.__qualname__])


def _located(frame: FrameType) -> tuple[str, int]:
    """The file and line of ``frame``; in autograph's converted copy of a function, the line of the
    program's source it came from (the source map of ``converted_f`` in autograph's ``converted_call``,
    the frame that called it)."""
    name, line = frame.f_code.co_filename, frame.f_lineno
    if _AUTOGRAPH in name and frame.f_back is not None:
        source_map = getattr(frame.f_back.f_locals.get("converted_f"), "ag_source_map", None) or {}
        origin = source_map.get((name, line))   # keys are LineLocation(filename, lineno) namedtuples
        if origin is not None:
            return str(origin.loc.filename), int(origin.loc.lineno)
    return name, line


# The machinery through which a model's layer is called (PyTorch's Module, Keras's Layer).
_CALLS = ("_wrapped_call_impl", "_call_impl", "__call__")


def _function(frame: FrameType) -> str:
    """``package.module.function`` of a library frame, private modules left out (a constructor: its class)."""
    parts = _public_parts(str(frame.f_globals.get("__name__", "")))
    code = frame.f_code
    qual = getattr(code, "co_qualname", code.co_name)
    if qual.rsplit(".", 1)[-1] in _CALLS and "self" in frame.f_locals:
        return _public_name(type(frame.f_locals["self"]))   # a layer called: the layer, not Module.__call__
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
