"""NumPy and Python's ``random``: the adapter every run has."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..base import Adapter, FixWords, Intervention, RecorderLike, Switch, Variant
from .interventions import INTERVENTIONS

__all__ = ["ADAPTER", "NumpyAdapter"]


class NumpyAdapter(Adapter):
    name = "numpy"
    module = "numpy"
    extra = None
    words = FixWords(
        seed="Seed every RNG before the model is built: add `import twinrun; twinrun.seed_everything(0)` at the top "
             "of {script} (or run it with `twinrun run --seed 0`).",
        fixed_seed="`np.random.default_rng(seeds.int(\"init\"))`",
        pin_threads="`OMP_NUM_THREADS={n}`",
        deterministic="a fixed thread count (`OMP_NUM_THREADS=1`)",
    )

    # --- class level ---
    @classmethod
    def interventions(cls) -> list[Intervention]:
        return list(INTERVENTIONS)

    @classmethod
    def isa_variants(cls, flags: set[str], environ: Mapping[str, str]) -> tuple[list[Variant], list[str]]:
        # NumPy picks its SIMD loops at import and offers no switch to lower them for a rerun.
        return [], []

    @classmethod
    def thread_variant(cls, count: int) -> Variant:
        # twinrun run --threads N: threadpoolctl and the OMP_NUM_THREADS family for BLAS.
        return Variant(f"threads-{count}", "thread-count", f"BLAS and OpenMP with {count} thread(s)", threads=count)

    # --- instance level ---
    def seed(self, seed: int) -> dict[str, Any]:
        random.seed(seed)
        # The legacy global RNG only takes 32-bit seeds.
        np.random.seed(seed % 2**32)
        return {"random.seed": seed, "numpy.random.seed": seed % 2**32}

    def switches(self, *, strict: bool, threads: int | None) -> list[Switch]:
        return []   # NumPy's threads are BLAS's: determinism's process-level threadpoolctl switch

    def environment(self) -> dict[str, Any]:
        info: dict[str, Any] = {"version": np.__version__}
        # NumPy dispatches ufunc loops (exp, log, sin, sum) to the best SIMD target the CPU has,
        # and those loops round differently: record which targets are live.
        try:
            try:
                from numpy._core import _multiarray_umath as mu  # type: ignore[attr-defined]
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

    def install(self, recorder: RecorderLike) -> Callable[[], None]:
        return lambda: None   # NumPy code has no hooks: it records through twinrun.step() or a Tracer


ADAPTER = NumpyAdapter
