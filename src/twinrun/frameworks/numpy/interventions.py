"""``seed-numpy`` and ``seed-random``: NumPy's and Python's RNGs made without a seed draw from twinrun's stream.

- ``seed-numpy``: ``numpy.random.default_rng()``, ``RandomState()``, ``SeedSequence()`` and
  ``numpy.random.seed()`` called without a seed draw from the stream, and NumPy's global RNG is seeded.
- ``seed-random``: ``random.Random()`` and ``random.seed()`` without a seed draw from the stream, and
  Python's global ``random`` is seeded.

An explicit seed is left alone.
"""

from __future__ import annotations

import random
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
    original_seed = rnd.seed

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
        original_seed(seed)

    default_rng._twinrun_patched = True  # type: ignore[attr-defined]
    RandomState.__module__ = original_random_state.__module__
    RandomState.__qualname__ = RandomState.__name__ = "RandomState"
    rnd.default_rng, rnd.RandomState = default_rng, RandomState  # type: ignore[misc]
    rnd.SeedSequence, rnd.seed = seed_sequence, seed  # type: ignore[assignment, misc]
    # The global RNG (np.random.rand, normal, ...) is seeded by the OS at import; give it the stream.
    original_seed(ctx.fixed_sequence("numpy-global").generate_state(4))


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
        original_global_seed(a, version)

    __init__._twinrun_patched = True  # type: ignore[attr-defined]
    random.Random.__init__ = __init__  # type: ignore[method-assign]
    random.seed = seed
    original_global_seed(int(ctx.fixed_sequence("random-global").generate_state(2, "uint64")[0]))


INTERVENTIONS = (
    Intervention("seed-numpy", "numpy.random.default_rng() / RandomState() / seed() without a seed draw from "
                 "twinrun's data stream", "content", _apply_numpy, _CONTENT_FIX),
    Intervention("seed-random", "random.Random() / random.seed() without a seed draw from twinrun's data stream",
                 "content", _apply_random, _CONTENT_FIX),
)
