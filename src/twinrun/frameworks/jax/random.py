"""JAX keys for twinrun's named streams. Imported only when the program asks for ``Seeds.jax(...)``."""

from __future__ import annotations

import jax
import numpy as np

from ..._errors import UsageError

__all__ = ["key_from_sequence"]

# uint32 words of key data per PRNG implementation
_WORDS = {"threefry2x32": 2, "rbg": 4, "unsafe_rbg": 4}


def key_from_sequence(sequence: np.random.SeedSequence, impl: str = "threefry2x32"):
    """A typed JAX key whose data are the sequence's first uint32 words (not ``jax.random.key(int)``,
    whose handling of seeds above 32 bits depends on ``jax_enable_x64``)."""
    if impl not in _WORDS:
        raise UsageError(f"unknown JAX PRNG implementation {impl!r}; use one of {', '.join(_WORDS)}")
    words = sequence.generate_state(_WORDS[impl], np.uint32)
    return jax.random.wrap_key_data(words, impl=impl)  # type: ignore[arg-type]  # NumPy arrays are accepted
