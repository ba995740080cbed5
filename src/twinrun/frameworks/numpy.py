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
        info: dict[str, Any] = {"version": np.__version__}
        # NumPy dispatches ufunc loops (exp, log, sin, sum) to the best SIMD target the CPU has,
        # and those loops round differently: record which targets are live.
        try:
            try:
                from numpy._core import _multiarray_umath as mu
            except ImportError:  # NumPy < 2
                from numpy.core import _multiarray_umath as mu
            features = mu.__cpu_features__
            info["simd_baseline"] = list(mu.__cpu_baseline__)
            info["simd_dispatch"] = [t for t in mu.__cpu_dispatch__ if features.get(t)]
        except (ImportError, AttributeError):
            pass
        try:
            blas = np.__config__.CONFIG["Build Dependencies"]["blas"]
            info["blas"] = {"name": blas.get("name"), "version": blas.get("version")}
        except (AttributeError, KeyError, TypeError):
            pass
        return info

    def is_tensor(self, x: Any) -> bool:
        return isinstance(x, (np.ndarray, np.generic))

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.ascontiguousarray(x)

    def dtype_name(self, x: Any) -> str:
        return str(np.asarray(x).dtype)
