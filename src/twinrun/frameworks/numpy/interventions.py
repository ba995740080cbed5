"""``seed-numpy`` and ``seed-random``: NumPy's and Python's RNGs made without a seed draw from twinrun's stream.

- ``seed-numpy``: ``numpy.random.default_rng()``, ``RandomState()``, ``SeedSequence()`` and
  ``numpy.random.seed()`` called without a seed draw from the stream, and NumPy's global RNG is seeded.
- ``seed-random``: ``random.Random()`` and ``random.seed()`` without a seed draw from the stream, and
  Python's global ``random`` is seeded.

An explicit seed is left alone.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import numpy as np

from ..base import Intervention, InterventionContext

__all__ = ["INTERVENTIONS"]

_CONTENT_FIX = ("Seed {where}: pass a seed from twinrun's streams, e.g. `seeds.numpy(\"augment\")` (NumPy) or "
                "`random.Random(seeds.int(\"augment\"))` with `seeds = twinrun.seed_everything(0)`{tail}")


def _apply_numpy(ctx: InterventionContext) -> None:
    rnd = np.random
    if getattr(rnd.default_rng, "_twinrun_patched", False):
        return
    original_default_rng = rnd.default_rng
    original_random_state = rnd.RandomState
    original_seed_sequence = rnd.SeedSequence

    def default_rng(seed: Any = None) -> np.random.Generator:
        if seed is None:
            ctx.note("seed-numpy", "numpy.random.default_rng() without a seed", "numpy.random.default_rng()")
            seed = ctx.sequence("default_rng")
        return original_default_rng(seed)

    class RandomState(original_random_state):  # type: ignore[valid-type, misc]
        __doc__ = original_random_state.__doc__

        def __init__(self, seed: Any = None):
            if seed is None:
                ctx.note("seed-numpy", "numpy.random.RandomState() without a seed", "numpy.random.RandomState()")
                seed = ctx.sequence("RandomState").generate_state(4)
            super().__init__(seed)

    def seed_sequence(entropy: Any = None, *args: Any, **kwargs: Any) -> np.random.SeedSequence:
        if entropy is None:
            ctx.note("seed-numpy", "numpy.random.SeedSequence() without entropy", "numpy.random.SeedSequence()")
            entropy = int(ctx.sequence("SeedSequence").generate_state(2, "uint64")[0])
        return original_seed_sequence(entropy, *args, **kwargs)

    def seed(seed: Any = None) -> None:
        if seed is None:
            ctx.note("seed-numpy", "numpy.random.seed() without a seed", "numpy.random.seed()")
            seed = ctx.sequence("np.random.seed").generate_state(4)
        else:
            _program_seeded.add("numpy")   # the program seeded the global RNG: its draws repeat
        np.random.mtrand._rand.seed(seed)

    _observe_global(ctx, original_random_state)
    default_rng._twinrun_patched = True  # type: ignore[attr-defined]
    RandomState.__module__ = original_random_state.__module__
    RandomState.__qualname__ = RandomState.__name__ = "RandomState"
    rnd.default_rng, rnd.RandomState = default_rng, RandomState  # type: ignore[misc]
    rnd.SeedSequence, rnd.seed = seed_sequence, seed  # type: ignore[assignment, misc]


# The global RNG's draws, observed so that doctor can name the call: the ones that decide which samples
# come where (order), and the ones that draw values (content, or a seed when the program seeds with them).
_NP_ORDER = ("shuffle", "permutation", "choice")
_NP_CONTENT = ("rand", "randn", "random", "random_sample", "ranf", "sample", "normal", "uniform", "randint",
               "random_integers", "standard_normal", "binomial", "poisson", "exponential", "beta", "gamma",
               "laplace", "lognormal", "multivariate_normal", "dirichlet", "multinomial", "bytes")


_inside = threading.local()
_program_seeded: set[str] = set()


def _observe_global(ctx: InterventionContext, base: type) -> None:
    """Replace NumPy's global RandomState (seeded by the OS at import) with one seeded from the stream
    whose draws are reported; ``np.random.<fn>`` and libraries that take ``np.random.mtrand._rand``
    (scikit-learn's ``random_state=None``) both use it."""
    old = np.random.mtrand._rand

    def observed(fn: str, kind: str) -> Any:
        method = getattr(base, fn)

        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(_inside, "np", False) or "numpy" in _program_seeded:   # permutation calls shuffle
                return method(self, *args, **kwargs)
            ctx.draw("seed-numpy", f"numpy.random.{fn}", kind)
            _inside.np = True
            try:
                return method(self, *args, **kwargs)
            finally:
                _inside.np = False

        call.__name__ = call.__qualname__ = fn
        return call

    body = {fn: observed(fn, "order") for fn in _NP_ORDER if hasattr(base, fn)}
    body.update({fn: observed(fn, "content") for fn in _NP_CONTENT if hasattr(base, fn)})
    glob = type("RandomState", (base,), body)(ctx.fixed_sequence("numpy-global").generate_state(4))
    np.random.mtrand._rand = glob
    for fn in dir(np.random):
        bound = getattr(np.random, fn, None)
        if getattr(bound, "__self__", None) is old and fn != "seed":
            setattr(np.random, fn, getattr(glob, fn))


def _apply_random(ctx: InterventionContext) -> None:
    if getattr(random.Random.__init__, "_twinrun_patched", False):
        return
    original_init = random.Random.__init__
    original_global_seed = random.seed

    def __init__(self: random.Random, x: Any = None) -> None:
        if x is None and type(self) is not random.SystemRandom:
            ctx.note("seed-random", "random.Random() without a seed", "random.Random()")
            x = int(ctx.sequence("random.Random").generate_state(2, "uint64")[0])
        original_init(self, x)

    def seed(a: Any = None, version: int = 2) -> None:
        if a is None:
            ctx.note("seed-random", "random.seed() without a seed", "random.seed()")
            a = int(ctx.sequence("random.seed").generate_state(2, "uint64")[0])
        else:
            _program_seeded.add("random")
        original_global_seed(a, version)

    __init__._twinrun_patched = True  # type: ignore[attr-defined]
    random.Random.__init__ = __init__  # type: ignore[method-assign]
    random.seed = seed
    original_global_seed(int(ctx.fixed_sequence("random-global").generate_state(2, "uint64")[0]))
    for fn, kind in _PY_DRAWS.items():
        setattr(random, fn, _observed_random(ctx, fn, kind, getattr(random, fn)))


_PY_DRAWS = {"shuffle": "order", "sample": "order", "choice": "content", "choices": "content", "random": "content",
             "uniform": "content", "randint": "content", "randrange": "content", "gauss": "content",
             "normalvariate": "content", "getrandbits": "content", "triangular": "content"}


def _observed_random(ctx: InterventionContext, fn: str, kind: str, original: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        if "random" not in _program_seeded:
            ctx.draw("seed-random", f"random.{fn}", kind)
        return original(*args, **kwargs)

    call.__name__ = call.__qualname__ = fn
    call.__doc__ = original.__doc__
    return call


INTERVENTIONS = (
    Intervention("seed-numpy", "numpy.random.default_rng() / RandomState() / seed() without a seed draw from "
                 "twinrun's data stream", "content", _apply_numpy, _CONTENT_FIX),
    Intervention("seed-random", "random.Random() / random.seed() without a seed draw from twinrun's data stream",
                 "content", _apply_random, _CONTENT_FIX),
)
