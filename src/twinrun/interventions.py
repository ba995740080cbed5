"""Interventions: small, named changes to a program's unseeded randomness, for ``twinrun doctor``.

``twinrun run --intervene NAME[,NAME...]`` (and ``runner.launch(..., interventions=...)``) calls
:func:`apply` in the child before the user's script starts. Each intervention gives a seed, drawn from
twinrun's ``data`` stream, to randomness the program left unseeded, and changes nothing else; doctor
then reruns the script twice and sees whether the runs still part.

- ``seed-loaders``: a ``torch.utils.data.DataLoader`` (or ``RandomSampler``, ``SubsetRandomSampler``,
  ``WeightedRandomSampler``) built without a ``generator`` gets a seeded one, and a loader with workers
  but no ``worker_init_fn`` gets twinrun's (``twinrun.torch.loader_kwargs``).
- ``seed-numpy``: ``numpy.random.default_rng()``, ``RandomState()``, ``SeedSequence()`` and
  ``numpy.random.seed()`` called without a seed draw from the stream, and NumPy's global RNG is seeded.
- ``seed-random``: ``random.Random()`` and ``random.seed()`` without a seed draw from the stream, and
  Python's global ``random`` is seeded.
- ``seed-tf-data``: ``tf.data.Dataset.shuffle`` without a seed gets one (the order of a tf.data pipeline).
- ``seed-tf-random``: ``tf.random.Generator.from_non_deterministic_state()`` gives a seeded generator
  (augmentation in a tf.data pipeline).
- ``fixed-clock``: ``time.time()`` and ``time.time_ns()`` called from the program's own code (not from
  libraries) return a fixed, slowly rising clock: a seed or key taken from the clock repeats.
- ``one-cpu``: the process may use one CPU only (``os.sched_setaffinity``), so every framework's thread
  pool starts with one thread; for doctor's thread-count probe, not a seeding.

Every time an intervention acts at a new place of the program, it prints one line on stderr::

    twinrun intervention seed-numpy: numpy.random.default_rng() without a seed at train.py:31

so that doctor can name the exact call to fix. The seed is the root of ``twinrun.seeding.current()``
when ``--seed`` was given, else ``TWINRUN_SEED`` (default 0); global framework RNGs are left alone.

>>> import twinrun.interventions as iv
>>> iv.NAMES
('seed-loaders', 'seed-numpy', 'seed-random', 'seed-tf-data', 'seed-tf-random', 'fixed-clock', 'one-cpu')
>>> iv.DATA_NAMES
('seed-loaders', 'seed-numpy', 'seed-random', 'seed-tf-data', 'seed-tf-random')
"""

from __future__ import annotations

import functools
import inspect
import itertools
import os
import re
import sys
import sysconfig
import threading

from ._errors import UsageError

__all__ = ["NAMES", "DATA_NAMES", "ORDER_NAMES", "DESCRIPTIONS", "LINE_PREFIX", "apply", "applied", "parse_lines"]

DESCRIPTIONS = {
    "seed-loaders": "DataLoaders and random samplers without a generator get a seeded one (and a worker_init_fn)",
    "seed-numpy": "numpy.random.default_rng() / RandomState() / seed() without a seed draw from twinrun's data stream",
    "seed-random": "random.Random() / random.seed() without a seed draw from twinrun's data stream",
    "seed-tf-data": "tf.data.Dataset.shuffle without a seed gets one from twinrun's data stream",
    "seed-tf-random": "tf.random.Generator.from_non_deterministic_state() gives a generator seeded from the data stream",
    "fixed-clock": "time.time() / time.time_ns() called from the program's code return a fixed, rising clock",
    "one-cpu": "the process may use one CPU only, so thread pools start with one thread",
}
NAMES = tuple(DESCRIPTIONS)
# The ones that seed data randomness (doctor's "data" experiment); "order" ones decide the sample order.
DATA_NAMES = ("seed-loaders", "seed-numpy", "seed-random", "seed-tf-data", "seed-tf-random")
ORDER_NAMES = ("seed-loaders", "seed-tf-data")
STREAM = "data"
LINE_PREFIX = "twinrun intervention "
_LINE = re.compile(r"^twinrun intervention (?P<name>[a-z-]+): (?P<what>.*?) at (?P<site>.+:\d+)$")

_LIBRARY_PATHS = tuple(sorted({os.path.realpath(p) + os.sep for k, p in sysconfig.get_paths().items()
                               if k in ("stdlib", "platstdlib", "purelib", "platlib")} |
                              {os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix)}))
_applied: list[str] = []
_seen: set[tuple[str, str]] = set()
_lock = threading.Lock()
_counters: dict[str, itertools.count] = {}
# Frames of these packages are not "the program": the call site is the first frame outside them.
_SKIP = tuple(os.sep + p + os.sep for p in ("twinrun", "numpy", "torch", "importlib", "multiprocessing",
                                            "concurrent", "threading"))


def applied() -> list[str]:
    """The interventions applied in this process, in order."""
    return list(_applied)


def apply(names) -> list[str]:
    """Apply the named interventions (a list, or one comma-separated string); returns their names.

    Unknown names raise :class:`UsageError` before anything is changed. Applying one twice is a no-op.

    >>> apply(["seed-random"])            # doctest: +SKIP
    ['seed-random']
    """
    if isinstance(names, str):
        names = names.split(",")
    names = [n.strip() for n in names if n and n.strip()]
    bad = [n for n in names if n not in DESCRIPTIONS]
    if bad:
        raise UsageError(f"unknown intervention {bad[0]!r}; choose from {', '.join(NAMES)}")
    for name in names:
        if name in _applied:
            continue
        _APPLY[name]()
        _applied.append(name)
    return names


def parse_lines(text: str) -> list[dict]:
    """The acts an intervention reported on stderr: ``[{"name", "what", "site"}]``, first seen first."""
    out, seen = [], set()
    for line in (text or "").splitlines():
        m = _LINE.match(line.strip())
        if m and (m["name"], m["site"]) not in seen:
            seen.add((m["name"], m["site"]))
            out.append(m.groupdict())
    return out


# --- seeds ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _seeds():
    from . import seeding

    current = seeding.current()
    if current is not None:
        return current
    raw = os.environ.get(seeding.ENV_ROOT, "0")
    try:
        root = int(raw)
    except ValueError:
        root = 0
    return seeding.Seeds(root, source="intervention")


def _next_sequence(kind: str):
    """The SeedSequence for the next unseeded ``kind`` object: stable in program order."""
    with _lock:
        n = next(_counters.setdefault(kind, itertools.count()))
    return _seeds().sequence(STREAM, "intervention", kind, n)


def _site() -> str:
    """``file:line`` of the first frame outside twinrun, NumPy, torch and the standard plumbing."""
    frame = sys._getframe(2)
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


def _library(path: str) -> bool:
    return path.startswith(_LIBRARY_PATHS)


def _note(name: str, what: str) -> None:
    """Report an act at a new call site of the program (acts inside installed libraries stay quiet)."""
    site = _site()
    if _library(site):
        return
    with _lock:
        if (name, site) in _seen:
            return
        _seen.add((name, site))
    print(f"{LINE_PREFIX}{name}: {what} at {site}", file=sys.stderr, flush=True)


# --- seed-loaders ---------------------------------------------------------------------------------
def _apply_loaders() -> None:
    from .frameworks import when_imported

    when_imported("torch", _patch_torch_data)


def _patch_torch_data(torch) -> None:
    import torch.utils.data as tud

    def with_generator(cls, label, extra=None):
        original = cls.__init__
        if getattr(original, "_twinrun_patched", False):
            return
        sig = inspect.signature(original)

        @functools.wraps(original)
        def __init__(self, *args, **kwargs):
            try:
                given = sig.bind_partial(self, *args, **kwargs).arguments
            except TypeError:   # let the real constructor report the bad call
                return original(self, *args, **kwargs)
            changes = {}
            if given.get("generator") is None and "generator" in sig.parameters:
                seq = _next_sequence(label)
                g = torch.Generator()
                g.manual_seed(int(seq.generate_state(1, "uint64")[0]))
                changes["generator"] = g
                _note("seed-loaders", f"{label}(...) without a generator")
            if extra is not None:
                changes.update(extra(given))
            if changes:
                args, kwargs = _rebind(sig, args, kwargs)
                kwargs.update(changes)
            return original(self, *args, **kwargs)

        __init__._twinrun_patched = True
        cls.__init__ = __init__

    def worker_init(given):
        if (given.get("num_workers") or 0) > 0 and given.get("worker_init_fn") is None:
            from .frameworks.torch_data import WorkerInit

            _note("seed-loaders", "DataLoader(..., num_workers>0) without a worker_init_fn")
            return {"worker_init_fn": WorkerInit(_seeds(), STREAM, 0)}
        return {}

    with_generator(tud.DataLoader, "DataLoader", worker_init)
    for cls in (tud.RandomSampler, tud.SubsetRandomSampler, tud.WeightedRandomSampler):
        with_generator(cls, cls.__name__)


def _rebind(sig, args, kwargs):
    """All arguments as keywords, so that a keyword we supply replaces a positional one."""
    names = list(sig.parameters)[1:]   # after self
    merged = dict(zip(names, args))
    merged.update(kwargs)
    return (), merged


# --- seed-numpy -----------------------------------------------------------------------------------
def _apply_numpy() -> None:
    import numpy as np

    rnd = np.random
    if getattr(rnd.default_rng, "_twinrun_patched", False):
        return
    original_default_rng = rnd.default_rng
    OriginalRandomState = rnd.RandomState
    OriginalSeedSequence = rnd.SeedSequence
    original_seed = rnd.seed

    def default_rng(seed=None):
        if seed is None:
            _note("seed-numpy", "numpy.random.default_rng() without a seed")
            seed = _next_sequence("default_rng")
        return original_default_rng(seed)

    class RandomState(OriginalRandomState):
        __doc__ = OriginalRandomState.__doc__

        def __init__(self, seed=None):
            if seed is None:
                _note("seed-numpy", "numpy.random.RandomState() without a seed")
                seed = _next_sequence("RandomState").generate_state(4)
            super().__init__(seed)

    def SeedSequence(entropy=None, *args, **kwargs):
        if entropy is None:
            _note("seed-numpy", "numpy.random.SeedSequence() without entropy")
            entropy = int(_next_sequence("SeedSequence").generate_state(2, "uint64")[0])
        return OriginalSeedSequence(entropy, *args, **kwargs)

    def seed(seed=None):
        if seed is None:
            _note("seed-numpy", "numpy.random.seed() without a seed")
            seed = _next_sequence("np.random.seed").generate_state(4)
        return original_seed(seed)

    default_rng._twinrun_patched = True
    RandomState.__module__ = OriginalRandomState.__module__
    RandomState.__qualname__ = RandomState.__name__ = "RandomState"
    rnd.default_rng, rnd.RandomState, rnd.SeedSequence, rnd.seed = default_rng, RandomState, SeedSequence, seed
    # The global RNG (np.random.rand, normal, ...) is seeded by the OS at import; give it the stream.
    original_seed(_seeds().sequence(STREAM, "intervention", "numpy-global").generate_state(4))


# --- seed-random ----------------------------------------------------------------------------------
def _apply_random() -> None:
    import random

    if getattr(random.Random.__init__, "_twinrun_patched", False):
        return
    original_init = random.Random.__init__
    original_global_seed = random.seed

    def __init__(self, x=None):
        if x is None and type(self) is not random.SystemRandom:
            _note("seed-random", "random.Random() without a seed")
            x = int(_next_sequence("random.Random").generate_state(2, "uint64")[0])
        original_init(self, x)

    def seed(a=None, version=2):
        if a is None:
            _note("seed-random", "random.seed() without a seed")
            a = int(_next_sequence("random.seed").generate_state(2, "uint64")[0])
        return original_global_seed(a, version)

    __init__._twinrun_patched = True
    random.Random.__init__ = __init__
    random.seed = seed
    original_global_seed(int(_seeds().sequence(STREAM, "intervention", "random-global").generate_state(2, "uint64")[0]))


# --- seed-tf-data, seed-tf-random -------------------------------------------------------------------
def _apply_tf(kind: str) -> None:
    from .frameworks import tf_interventions

    tf_interventions.install(lambda what: _note(f"seed-tf-{kind}", what), _next_sequence,
                             shuffle=kind == "data", generators=kind == "random")


# --- fixed-clock ----------------------------------------------------------------------------------
_CLOCK_START_NS = 1_700_000_000 * 10**9
_CLOCK_TICK_NS = 1_000_000   # each call of the program's: 1 ms later


def _apply_clock() -> None:
    import time

    if getattr(time.time_ns, "_twinrun_patched", False):
        return
    real_time, real_time_ns = time.time, time.time_ns
    ticks = itertools.count()

    def from_program() -> bool:
        name = sys._getframe(2).f_code.co_filename
        return not (name.startswith("<") or any(s in name for s in _SKIP) or _library(os.path.realpath(name)))

    def time_ns():
        if not from_program():
            return real_time_ns()
        _note("fixed-clock", "time.time_ns()")
        return _CLOCK_START_NS + next(ticks) * _CLOCK_TICK_NS

    def time_():
        if not from_program():
            return real_time()
        _note("fixed-clock", "time.time()")
        return (_CLOCK_START_NS + next(ticks) * _CLOCK_TICK_NS) / 1e9

    time_ns._twinrun_patched = time_._twinrun_patched = True
    time.time_ns, time.time = time_ns, time_


# --- one-cpu --------------------------------------------------------------------------------------
def _apply_one_cpu() -> None:
    if not hasattr(os, "sched_setaffinity"):
        raise UsageError("intervention 'one-cpu' needs os.sched_setaffinity (Linux); it is not available here")
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


_APPLY = {"seed-loaders": _apply_loaders, "seed-numpy": _apply_numpy, "seed-random": _apply_random,
          "seed-tf-data": lambda: _apply_tf("data"), "seed-tf-random": lambda: _apply_tf("random"),
          "fixed-clock": _apply_clock, "one-cpu": _apply_one_cpu}
