"""JAX adapter: determinism switches (XLA flags, matmul precision), environment facts, conversion.

JAX has no global RNG: keys come from ``Seeds.jax(name)``, so ``seed`` seeds nothing here.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from ._base import Adapter, Switch

__all__ = ["JaxAdapter", "backend_started"]

GPU_DETERMINISTIC = "--xla_gpu_deterministic_ops=true"


def backend_started() -> bool:
    """Whether JAX has created its backends; XLA_FLAGS is read once, at that moment."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # private API moved: assume the worst
        return True


def _with_flag(flags: str | None, flag: str) -> str:
    from .portability import xla_flags_with

    return xla_flags_with(flag, flags)


class JaxAdapter(Adapter):
    name = "jax"
    module = "jax"

    def switches(self, *, strict: bool, threads: int | None) -> list[Switch]:
        def set_flags(v):
            if v is None:
                os.environ.pop("XLA_FLAGS", None)
            else:
                os.environ["XLA_FLAGS"] = v

        def too_late():
            if backend_started():
                return ("JAX had already started its backend, so XLA_FLAGS is no longer read; call "
                        "twinrun.deterministic() before the first JAX operation")
            return None

        return [
            Switch("XLA_FLAGS", lambda: os.environ.get("XLA_FLAGS"), set_flags,
                   _with_flag(os.environ.get("XLA_FLAGS"), GPU_DETERMINISTIC),
                   "XLA's GPU scatter and reductions otherwise use atomics whose order varies", too_late=too_late),
            Switch("jax_default_matmul_precision", lambda: jax.config.jax_default_matmul_precision,
                   lambda v: jax.config.update("jax_default_matmul_precision", v), "highest",
                   "the default lets GPUs use TF32 or bfloat16 passes for float32 matmuls"),
        ]

    def environment(self) -> dict:
        import jaxlib

        info = {
            "version": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "default_matmul_precision": jax.config.jax_default_matmul_precision,
            "enable_x64": bool(jax.config.jax_enable_x64),
            "backend_started": backend_started(),
            "xla_flags": os.environ.get("XLA_FLAGS"),
        }
        if info["backend_started"]:
            info["devices"] = [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
        return info

    def is_tensor(self, x: Any) -> bool:
        return isinstance(x, jax.Array)

    def to_numpy(self, x: Any) -> np.ndarray:
        a = np.asarray(x)
        if a.dtype.name == "bfloat16":
            a = a.view(np.int16)
        return np.ascontiguousarray(a)

    def dtype_name(self, x: Any) -> str:
        return str(x.dtype)
