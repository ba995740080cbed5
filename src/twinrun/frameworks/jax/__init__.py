"""JAX adapter: determinism switches (XLA flags, matmul precision), environment facts, conversion, and
the reruns that show what another machine would compute (XLA code for a lower instruction set,
another CPU count). JAX has no global RNG: keys come from ``Seeds.jax(name)``, so ``seed`` seeds
nothing; recording is explicit (``twinrun.jax.Tracer``).

Importing this package does not import JAX; ``JaxAdapter()`` does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...cpu import ISA_ORDER, isa_level, lower_levels
from ..base import Adapter, EnvVar, FixWords, Intervention, RecorderLike, Switch, Variant

__all__ = ["ADAPTER", "GPU_DETERMINISTIC", "JaxAdapter", "backend_started", "xla_flags_with"]

GPU_DETERMINISTIC = "--xla_gpu_deterministic_ops=true"


def xla_flags_with(flag: str, current: str | None) -> str:
    """``current`` XLA_FLAGS with ``flag`` added (replacing the same flag's earlier value).

    >>> xla_flags_with("--xla_cpu_max_isa=AVX", "--foo=1 --xla_cpu_max_isa=AVX2")
    '--foo=1 --xla_cpu_max_isa=AVX'
    """
    key = flag.split("=")[0]
    parts = [p for p in (current or "").split() if p.split("=")[0] != key]
    return " ".join([*parts, flag])


def backend_started() -> bool:
    """Whether JAX has created its backends; XLA_FLAGS is read once, at that moment."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # private API moved: assume the worst
        return True


class JaxAdapter(Adapter):
    name = "jax"
    module = "jax"
    extra = "jax"
    words = FixWords(
        seed="Seed every RNG before the parameters are made: `seeds = twinrun.seed_everything(0)` at the top of "
             "{script} and keys from its streams, e.g. `key = seeds.jax(\"init\")` (or run it with "
             "`twinrun run --seed 0`).",
        fixed_seed="`key = seeds.jax(\"init\")`",
        pin_threads="the same number of CPUs for the process, e.g. `taskset -c 0-{m}`",
        deterministic="`--xla_gpu_deterministic_ops=true` in XLA_FLAGS",
    )
    env_vars = (
        EnvVar("XLA_FLAGS", "numerics", "XLA's code generation (instruction set, GPU determinism) follows its flags"),
        EnvVar("JAX_*", "numerics", "a JAX setting (precision, x64, platforms) read at start-up"),
    )

    def __init__(self) -> None:
        import jax

        self._jax = jax

    # --- class level ---
    @classmethod
    def interventions(cls) -> list[Intervention]:
        return []

    @classmethod
    def isa_variants(cls, flags: set[str], environ: Mapping[str, str]) -> tuple[list[Variant], list[str]]:
        """XLA's CPU code generated just below this CPU's instruction set and at SSE4.2 (the two ends),
        below a ``--xla_cpu_max_isa`` the user already set; the user's other XLA flags are kept.

        >>> [v.name for v in JaxAdapter.isa_variants({"sse4_2", "avx", "avx2", "fma"}, {})[0]]
        ['XLA_FLAGS=--xla_cpu_max_isa=AVX', 'XLA_FLAGS=--xla_cpu_max_isa=SSE4_2']
        """
        flags_now = environ.get("XLA_FLAGS") or ""
        m = re.search(r"--xla_cpu_max_isa=(\S+)", flags_now)
        cap_isa = m.group(1).upper() if m else None
        level = min([i for i in (isa_level(flags), cap_isa) if i in ISA_ORDER], key=ISA_ORDER.index, default=None)
        lower = lower_levels(level)
        variants = [Variant(f"XLA_FLAGS=--xla_cpu_max_isa={isa}", "cpu-isa",
                            f"XLA's CPU code generated for {isa} at most, as on a CPU without the higher sets",
                            env={"XLA_FLAGS": xla_flags_with(f"--xla_cpu_max_isa={isa}", flags_now)})
                    for isa in dict.fromkeys([*lower[:1], *lower[-1:]])]
        why = [] if variants else [f"--xla_cpu_max_isa (JAX): no level below {level or 'this CPU (not x86)'} that "
                                   "this CPU supports"]
        return variants, why

    @classmethod
    def thread_variant(cls, count: int) -> Variant | str:
        # XLA's CPU thread pool follows the CPUs the process may use, not a thread setting.
        if count != 1 or not hasattr(os, "sched_setaffinity"):
            return ("JAX's thread count follows the CPUs the process may use; this machine cannot offer another "
                    "count (one usable CPU, or no CPU affinity)")
        return Variant("one-cpu", "thread-count", "JAX on one CPU", interventions=("one-cpu",))

    # --- instance level ---
    def seed(self, seed: int) -> dict[str, Any]:
        return {}   # no global RNG: keys come from Seeds.jax(name)

    def switches(self, *, strict: bool, threads: int | None) -> list[Switch]:
        jax = self._jax

        def set_flags(v: str | None) -> None:
            if v is None:
                os.environ.pop("XLA_FLAGS", None)
            else:
                os.environ["XLA_FLAGS"] = v

        def too_late() -> str | None:
            if backend_started():
                return ("JAX had already started its backend, so XLA_FLAGS is no longer read; call "
                        "twinrun.deterministic() before the first JAX operation")
            return None

        return [
            Switch("XLA_FLAGS", lambda: os.environ.get("XLA_FLAGS"), set_flags,
                   xla_flags_with(GPU_DETERMINISTIC, os.environ.get("XLA_FLAGS")),
                   "XLA's GPU scatter and reductions otherwise use atomics whose order varies", too_late=too_late),
            Switch("jax_default_matmul_precision", lambda: jax.config.jax_default_matmul_precision,
                   lambda v: jax.config.update("jax_default_matmul_precision", v), "highest",
                   "the default lets GPUs use TF32 or bfloat16 passes for float32 matmuls"),
        ]

    def environment(self) -> dict[str, Any]:
        import jaxlib

        jax = self._jax
        info: dict[str, Any] = {
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
        return isinstance(x, self._jax.Array)

    def to_numpy(self, x: Any) -> np.ndarray:
        a = np.asarray(x)
        if a.dtype.name == "bfloat16":
            a = a.view(np.int16)
        return np.ascontiguousarray(a)

    def dtype_name(self, x: Any) -> str:
        return str(x.dtype)

    def install(self, recorder: RecorderLike) -> Callable[[], None]:
        return lambda: None   # functional loops say where a step ends: twinrun.jax.Tracer

    def in_use(self) -> bool:
        # Keras 3 imports JAX whatever its backend: count JAX only once it computed.
        return backend_started()


ADAPTER = JaxAdapter
