"""One root seed, named streams derived from it, and one call that seeds every global RNG.

>>> seeds = seed_everything(0, hash_seed="ignore")   # doctest: +SKIP
>>> seeds.int("folds")
1133978374
>>> Seeds(0, overrides={}).numpy("data").integers(0, 100, 3).tolist()
[24, 15, 18]

How a stream is derived (stable: pinned by golden values in ``tests/test_seeding.py``)::

    name_key(s)  = int.from_bytes(sha256(s.encode("utf-8")).digest()[:8], "little")
    sequence(name, *path) = numpy.random.SeedSequence(
        entropy   = TWINRUN_SEED_<NAME> if set, else root,
        spawn_key = (name_key(name), *(p if int else name_key(p) for p in path)))
    int(...)   = sequence(...).generate_state(1, uint32)[0]
    numpy(...) = Generator(PCG64(sequence(...)))
    torch(...) = torch.Generator(device).manual_seed(sequence(...).generate_state(1, uint64)[0])
    jax(...)   = jax.random.wrap_key_data(sequence(...).generate_state(2, uint32), impl="threefry2x32")

Python's ``hash`` never enters it, so the same root and name give the same stream in every process.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import random
import re
import secrets
import shlex
import sys
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from . import _active, frameworks
from ._errors import UsageError

__all__ = [
    "HashSeedWarning",
    "Seeds",
    "current",
    "current_rank",
    "env_name",
    "hash_seed_in_effect",
    "name_key",
    "seed_everything",
    "seed_value",
]

ENV_ROOT = "TWINRUN_SEED"
ENV_PREFIX = "TWINRUN_SEED_"
# Set in the environment of a relaunched process, so that it never relaunches again.
ENV_RELAUNCHED = "TWINRUN_RELAUNCHED"
# Carries a drawn root seed across a relaunch, so the relaunched run uses (and prints) the same one.
_ENV_DRAWN = "TWINRUN_DRAWN_SEED"
HASH_MODES = ("warn", "relaunch", "ignore")
# The stream every global RNG is seeded from: parameter init and anything drawn from global RNGs.
INIT = "init"

# A registry, documented: the frameworks seed_everything watches for their import (each is seeded
# from the active Seeds when the program imports it).
_watching: set[str] = set()


class HashSeedWarning(UserWarning):
    """Python's str/bytes hashing is randomised, so set iteration order differs run to run."""


# --- derivation ----------------------------------------------------------------------------------

def name_key(name: str) -> int:
    """The stable 64-bit number of a stream name or path element: first 8 bytes of its SHA-256, little-endian.

    >>> name_key("init")
    12104134190896141499
    """
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def env_name(name: str) -> str:
    """The variable that overrides stream ``name``: ``TWINRUN_SEED_`` + upper-cased name, non-alphanumerics as ``_``."""
    return ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def seed_value(value: Any, what: str = "seed (--seed)", *, text: bool = True) -> int:
    """A seed: a non-negative integer, or (``text=True``: command lines, environment variables) its
    decimal text. The one parser of seeds in twinrun; a bad one is a one-line UsageError naming ``what``."""
    if isinstance(value, str) and text:
        stripped = value.strip()
        if stripped.isdigit():
            return int(stripped)
        raise UsageError(f"{what} must be a non-negative integer, got {value!r}")
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise UsageError(f"{what} must be a non-negative integer, got {value!r}")
    v = int(value.__index__())
    if v < 0:
        raise UsageError(f"{what} must be a non-negative integer, got {v}")
    return v


def _check_seed(value: Any, what: str) -> int:
    return seed_value(value, what, text=False)


def _parse_env_seed(var: str, text: str) -> int:
    return seed_value(text, var)


def _env_overrides() -> dict[str, int]:
    out = {}
    for var, text in os.environ.items():
        if var.startswith(ENV_PREFIX):
            if var == ENV_PREFIX:
                raise UsageError(f"{ENV_PREFIX}= names no stream; use e.g. {ENV_PREFIX}DATA=1 or unset it")
            out[var] = _parse_env_seed(var, text)
    return dict(sorted(out.items()))


def _path_key(p: Any) -> int:
    if isinstance(p, str):
        return name_key(p)
    if isinstance(p, bool) or not hasattr(p, "__index__") or p.__index__() < 0:
        raise UsageError(f"a stream path element must be a string or a non-negative integer, got {p!r}")
    index: int = p.__index__()
    return index


@dataclass
class Seeds:
    """A root seed and the named streams derived from it.

    ``Seeds(0)`` reads the ``TWINRUN_SEED_<NAME>`` overrides from the environment; pass ``overrides={}``
    to ignore them. ``seed_everything`` fills in what it seeded.

    >>> s = Seeds(0, overrides={})
    >>> s.int("folds") == Seeds(0, overrides={}).int("folds")
    True
    """

    root: int
    source: str = "argument"          # "env" (TWINRUN_SEED), "argument" or "drawn"
    overrides: dict[str, int] = field(default_factory=_env_overrides)   # {"TWINRUN_SEED_DATA": 5}
    argument: int | None = None       # the seed passed to seed_everything, also when TWINRUN_SEED won
    seeded: dict[str, dict[str, Any]] = field(default_factory=dict)              # framework -> {call: value}
    seeded_on_import: list[str] = field(default_factory=list)
    seed_on_import: list[str] = field(default_factory=list)            # watched, not imported yet
    hash_seed: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = _check_seed(self.root, "the root seed")
        self.overrides = {k: _check_seed(v, k) for k, v in self.overrides.items()}

    # -- streams -----------------------------------------------------------------------------------
    def stream_root(self, name: str) -> builtins.int:
        """The root a stream derives from: its ``TWINRUN_SEED_<NAME>`` override, else ``root``."""
        if not isinstance(name, str) or not name:
            raise UsageError(f"a stream name must be a non-empty string, got {name!r}")
        return self.overrides.get(env_name(name), self.root)

    def sequence(self, name: str, *path: str | builtins.int) -> np.random.SeedSequence:
        """The ``SeedSequence`` of stream ``name`` (``path`` narrows it: a worker, a rank, a fold)."""
        entropy = self.stream_root(name)
        return np.random.SeedSequence(entropy, spawn_key=(name_key(name), *map(_path_key, path)))

    def rank_stream(self, name: str, rank: builtins.int | None = None) -> np.random.SeedSequence:
        """The ``SeedSequence`` of stream ``name`` for one rank of a multi-process run:
        ``sequence(name, "rank", rank)``, another on every rank.

        ``rank`` defaults to this process's (:func:`current_rank`). For what must differ across ranks:
        dropout, augmentation, DataLoader workers. Init and the ``DistributedSampler`` seed must not
        (take them from the plain streams, the same on every rank).

        >>> s = Seeds(0, overrides={})
        >>> s.rank_stream("dropout", 0).generate_state(1)[0] != s.rank_stream("dropout", 1).generate_state(1)[0]
        True
        """
        return self.sequence(name, "rank", current_rank() if rank is None else _check_rank(rank))

    def reseed_per_rank(self, rank: builtins.int | None = None, name: str = "global") -> dict[str, dict[str, Any]]:
        """Reseed every loaded framework's global RNGs from ``rank_stream(name, rank)``; return what was seeded.

        Call it once the model is built (and wrapped): init came from the ``init`` stream, the same on
        every rank, and from here on dropout masks and augmentations drawn from the global RNGs differ
        across ranks. In a single process it reseeds from rank 0's stream.
        """
        seed = builtins.int(self.rank_stream(name, rank).generate_state(1, np.uint32)[0])
        done: dict[str, dict[str, Any]] = {}
        for adapter in frameworks.loaded():
            seeded = adapter.seed(seed)
            if seeded:
                done[adapter.name] = seeded
        return done

    def int(self, name: str, *path: str | builtins.int) -> builtins.int:
        """A 32-bit seed (0 <= v < 2**32) for APIs that take an integer.

        >>> Seeds(0, overrides={}).int("init")
        4137929477
        """
        return builtins.int(self.sequence(name, *path).generate_state(1, np.uint32)[0])

    def tf(self, name: str, *path: str | builtins.int) -> builtins.int:
        """A seed below 2**31 for ``tf.data.Dataset.shuffle(seed=...)``, ``tf.random`` ops and Keras layers."""
        return self.int(name, *path) % 2**31

    def numpy(self, name: str, *path: str | builtins.int) -> np.random.Generator:
        """A fresh ``numpy.random.Generator`` (PCG64) for the stream; each call starts it anew."""
        return np.random.Generator(np.random.PCG64(self.sequence(name, *path)))

    def torch(self, name: str, *path: str | builtins.int, device: str = "cpu") -> Any:
        """A fresh ``torch.Generator`` on ``device``, seeded with the stream's 64-bit seed (imports torch)."""
        frameworks.get("torch")  # a clear error when torch is not installed
        from .frameworks.torch.data import generator

        return generator(builtins.int(self.sequence(name, *path).generate_state(1, np.uint64)[0]), device)

    def jax(self, name: str, *path: str | builtins.int, impl: str = "threefry2x32") -> Any:
        """A JAX key (typed, ``impl`` pinned to threefry2x32 by default) for the stream (imports jax)."""
        frameworks.get("jax")
        from .frameworks.jax.random import key_from_sequence

        return key_from_sequence(self.sequence(name, *path), impl)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the root, where it came from, the init seed, what was seeded, overrides, hash seed."""
        return {
            "root": self.root,
            "source": self.source,
            "argument": self.argument,
            "init": self.int(INIT),
            "overrides": dict(self.overrides),
            "seeded": {k: dict(v) for k, v in self.seeded.items()},
            "seeded_on_import": list(self.seeded_on_import),
            "seed_on_import": list(self.seed_on_import),
            "hash_seed": dict(self.hash_seed),
            "replay": f"{ENV_ROOT}={self.root}",
        }


def current_rank() -> int:
    """This process's rank: ``RANK`` (set by torchrun before anything runs), else the rank of a process
    group the program started, else 0 (a single process, which then draws rank 0's streams)."""
    from . import ranks

    info = ranks.current()
    if info is not None:
        return info.rank
    group = frameworks.process_group()
    return int(group["rank"]) if group is not None else 0


def _check_rank(rank: Any) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise UsageError(f"rank must be a non-negative integer, got {rank!r}")
    return rank


def current() -> Seeds | None:
    """The ``Seeds`` set by the last ``seed_everything`` in this process (``None`` before it)."""
    return _active.current_seeds()


# --- PYTHONHASHSEED ------------------------------------------------------------------------------

_M64 = (1 << 64) - 1
_PROBE = b"twinrun hash-seed probe"


def _siphash13(k0: int, k1: int, data: bytes) -> int:
    """SipHash-1-3 as CPython computes it for str/bytes (Python/pyhash.c)."""
    def rotl(x: int, b: int) -> int:
        return ((x << b) | (x >> (64 - b))) & _M64

    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573

    def rnd() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _M64; v1 = rotl(v1, 13) ^ v0; v0 = rotl(v0, 32)  # noqa: E702
        v2 = (v2 + v3) & _M64; v3 = rotl(v3, 16) ^ v2                      # noqa: E702
        v0 = (v0 + v3) & _M64; v3 = rotl(v3, 21) ^ v0                      # noqa: E702
        v2 = (v2 + v1) & _M64; v1 = rotl(v1, 17) ^ v2; v2 = rotl(v2, 32)  # noqa: E702

    end = len(data) - len(data) % 8
    for i in range(0, end, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v3 ^= m
        rnd()
        v0 ^= m
    b = ((len(data) & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    v3 ^= b
    rnd()
    v0 ^= b
    v2 ^= 0xFF
    for _ in range(3):
        rnd()
    return v0 ^ v1 ^ v2 ^ v3


def _hash_with_seed(seed: int, data: bytes) -> int:
    # CPython fills its hash secret from PYTHONHASHSEED with this LCG (Python/bootstrap_hash.c).
    x, secret = seed, bytearray()
    for _ in range(16):
        x = (x * 214013 + 2531011) & 0xFFFFFFFF
        secret.append((x >> 16) & 0xFF)
    h = _siphash13(int.from_bytes(secret[:8], sys.byteorder), int.from_bytes(secret[8:], sys.byteorder), data)
    h = h - (1 << 64) if h >= 1 << 63 else h
    return -2 if h == -1 else h


def hash_seed_in_effect() -> int | None:
    """The hash seed this interpreter really runs with, or ``None`` when hashing is randomised.

    Checked against ``hash()`` itself where the algorithm is known, so ``os.environ["PYTHONHASHSEED"]``
    set by the program after start (too late to act) is not mistaken for a pinned seed.
    """
    if not sys.flags.hash_randomization:
        return 0
    text = os.environ.get("PYTHONHASHSEED", "")
    if sys.flags.ignore_environment or not text.isdigit() or not 0 < int(text) < 2**32:
        return None
    seed = int(text)
    if sys.hash_info.algorithm == "siphash13" and sys.hash_info.cutoff == 0:
        return seed if hash(_PROBE) == _hash_with_seed(seed, _PROBE) else None
    return seed  # another hash algorithm: trust the variable


def _hash_value(seeds: Seeds) -> int:
    """The PYTHONHASHSEED a relaunch uses: 1..2**32-1, from the root's ``hash`` stream."""
    return seeds.int("hash") % (2**32 - 1) + 1


def _relaunch_blocker() -> str | None:
    """Why this process cannot be re-executed, or None."""
    argv = getattr(sys, "orig_argv", None)
    if not argv:
        return "the original command line is unknown"
    if sys.flags.ignore_environment:
        return "python runs with -E or -I, which ignores PYTHONHASHSEED"
    if hasattr(sys, "ps1") or sys.flags.interactive or "ipykernel" in sys.modules:
        return "this is an interactive session"
    if not sys.argv or sys.argv[0] in ("", "-"):
        return "the program came from standard input"
    mp = sys.modules.get("multiprocessing")
    if mp is not None and mp.parent_process() is not None:
        return "this is a multiprocessing child, whose command line is not the program's"
    return None


def _handle_hash_seed(mode: str, seeds: Seeds, relaunched: bool) -> None:
    value = hash_seed_in_effect()
    info: dict[str, Any] = {"mode": mode, "randomized": value is None, "pythonhashseed": value,
                            "relaunched": relaunched}
    seeds.hash_seed = info
    if value is not None or mode == "ignore":
        return
    fix = f"PYTHONHASHSEED={_hash_value(seeds)}"
    command = shlex.join(getattr(sys, "orig_argv", None) or ["python", "your_program.py"])
    if "\n" in command or len(command) > 200:
        command = "<your command>"
    if mode == "relaunch":
        blocker = "a relaunch already happened and hashing is still randomised" if relaunched else _relaunch_blocker()
        if blocker is None:
            env = dict(os.environ, PYTHONHASHSEED=str(_hash_value(seeds)), **{ENV_RELAUNCHED: "1"})
            if seeds.source == "drawn":
                env[_ENV_DRAWN] = str(seeds.root)
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (AttributeError, ValueError, OSError):
                    pass
            os.execve(sys.executable, sys.orig_argv, env)
        info["relaunch_skipped"] = blocker
        warnings.warn(f"twinrun could not relaunch with {fix} ({blocker}); set-of-str order will differ run to "
                      f"run: start the program as `{fix} {command}`", HashSeedWarning, stacklevel=3)
        return
    warnings.warn(f"Python's str hashing is randomised (PYTHONHASHSEED is not set at start), so set-of-str "
                  f"order differs run to run; fix: run `{fix} {command}`, or call "
                  f"seed_everything(..., hash_seed='relaunch')", HashSeedWarning, stacklevel=3)


# --- seeding the global RNGs ---------------------------------------------------------------------

def _seed_on_import(module: ModuleType) -> None:
    """Seed a framework the program imported after seed_everything, from the active Seeds."""
    seeds = _active.current_seeds()
    name = next((n for n in frameworks.NAMES if frameworks.module_of(n) == module.__name__), None)
    if seeds is None or name is None:
        return
    # Keep Python's and NumPy's streams where the program left them: an adapter may reseed them too
    # (Keras's set_random_seed does), and an import should not rewind draws already in progress.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        done = frameworks.get(name).seed(seeds.int(INIT))
    except Exception as e:  # noqa: BLE001 - an import hook: the user's import must not fail because of twinrun
        warnings.warn(f"twinrun could not seed {name} on import ({type(e).__name__}: {e}); "
                      f"call twinrun.seed_everything() after importing {name}", RuntimeWarning, stacklevel=2)
        return
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    if name in seeds.seed_on_import:
        seeds.seed_on_import.remove(name)
    if done:
        seeds.seeded[name] = done
        seeds.seeded_on_import.append(name)


def seed_everything(seed: int | None = None, *, hash_seed: str = "warn") -> Seeds:
    """Seed Python ``random``, NumPy's legacy RNG, PyTorch (CPU and CUDA) and TensorFlow/Keras; return the Seeds.

    The root seed is ``TWINRUN_SEED`` if set (it wins over ``seed``, so a sweep can vary a script with a
    hard-coded seed), else ``seed``, else a freshly drawn one, printed on stderr so that the run can be
    replayed with ``TWINRUN_SEED=<value>``. Every global RNG gets ``seeds.int("init")``. Frameworks not
    imported yet are not imported; they are seeded when the program imports them.

    ``hash_seed``: what to do when Python's str hashing is randomised (``PYTHONHASHSEED`` unset at start):
    ``"warn"`` (a ``HashSeedWarning`` with the exact fix), ``"relaunch"`` (re-execute this program with
    ``PYTHONHASHSEED`` derived from the root; call it first thing, since the program restarts) or
    ``"ignore"``.

    >>> seeds = seed_everything(0, hash_seed="ignore")   # doctest: +SKIP
    >>> seeds.to_dict()["seeded"]["numpy"]               # doctest: +SKIP
    {'random.seed': 4137929477, 'numpy.random.seed': 4137929477}
    """
    if hash_seed not in HASH_MODES:
        raise UsageError(f"hash_seed={hash_seed!r} is not one of {', '.join(map(repr, HASH_MODES))}")
    argument = None if seed is None else _check_seed(seed, "seed")
    relaunched = os.environ.pop(ENV_RELAUNCHED, None) is not None
    drawn_before = os.environ.pop(_ENV_DRAWN, None)

    env_text = os.environ.get(ENV_ROOT)
    if env_text is not None and env_text.strip():
        root, source = _parse_env_seed(ENV_ROOT, env_text), "env"
    elif argument is not None:
        root, source = argument, "argument"
    elif relaunched and drawn_before is not None:
        root, source = _parse_env_seed(_ENV_DRAWN, drawn_before), "drawn"
    else:
        root, source = secrets.randbits(32), "drawn"
    seeds = Seeds(root, source=source, argument=argument)

    _handle_hash_seed(hash_seed, seeds, relaunched)   # may re-execute the program and never return
    if source == "drawn":
        print(f"twinrun: no seed given, drew root seed {root}; replay this run with {ENV_ROOT}={root}",
              file=sys.stderr, flush=True)

    init = seeds.int(INIT)
    for adapter in frameworks.loaded():
        done = adapter.seed(init)
        if done:
            seeds.seeded[adapter.name] = done
    _active.set_seeds(seeds)
    for name in frameworks.NAMES:
        if not frameworks.is_loaded(name):
            seeds.seed_on_import.append(name)
            if name not in _watching:
                _watching.add(name)
                frameworks.when_imported(frameworks.module_of(name), _seed_on_import)
    return seeds
