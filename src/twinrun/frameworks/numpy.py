"""NumPy and Python's ``random``: the adapter every run has."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from ._base import Adapter

__all__ = ["NumpyAdapter"]


class NumpyAdapter(Adapter):
    name = "numpy"
    module = "numpy"

    def seed(self, seed: int) -> dict:
        random.seed(seed)
        # The legacy global RNG only takes 32-bit seeds.
        np.random.seed(seed % 2**32)
        return {"random.seed": seed, "numpy.random.seed": seed % 2**32}

    def environment(self) -> dict:
        return {"version": np.__version__}

    def is_tensor(self, x: Any) -> bool:
        return isinstance(x, (np.ndarray, np.generic))

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.ascontiguousarray(x)

    def dtype_name(self, x: Any) -> str:
        return str(np.asarray(x).dtype)
