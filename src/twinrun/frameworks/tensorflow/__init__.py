"""TensorFlow / Keras adapter.

Class-level facts (no TensorFlow import): how fixes speak of it, its interventions (``seed-tf-data``,
``seed-tf-random``), and the reruns that show what another machine would compute (TensorFlow
without oneDNN, oneDNN held to a lower instruction set, another intra-op thread count). Once the
program has imported TensorFlow, ``runtime`` seeds it, switches it to determinism, reads its
environment, converts its tensors and hooks ``model.fit`` (``keras_trace``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..._errors import TwinrunError
from ...cpu import ISA_ORDER, isa_level, lower_levels
from ..base import Adapter, EnvVar, FixWords, Intervention, RecorderLike, Switch, Variant

__all__ = ["ADAPTER", "KERAS_TRAINER", "TensorflowAdapter", "UnseededRandomOpError"]

KERAS_TRAINER = "keras.src.backend.tensorflow.trainer"
# oneDNN's names for the instruction-set levels (cpu.ISA_ORDER's)
_ONEDNN = {"SSE4_2": "SSE41", "AVX": "AVX", "AVX2": "AVX2", "AVX512": "AVX512_CORE"}


class UnseededRandomOpError(TwinrunError, RuntimeError):
    """A TensorFlow random op without a seed ran while op determinism was on (strict mode)."""

    exit_code = 3


class TensorflowAdapter(Adapter):
    name = "tensorflow"
    module = "tensorflow"
    extra = "tensorflow"
    words = FixWords(
        seed="Seed every RNG before the model is built: add `import twinrun; twinrun.seed_everything(0)` (or "
             "`keras.utils.set_random_seed(0)`) at the top of {script}, or run it with `twinrun run --seed 0`; "
             "`tf.random.set_seed` alone does not seed Keras 3 initialisers, which draw from Python's `random`.",
        fixed_seed="`keras.utils.set_random_seed(seeds.int(\"init\"))`",
        pin_threads="`tf.config.threading.set_intra_op_parallelism_threads({n})` before the first TensorFlow op, "
                    "or `TF_NUM_INTRAOP_THREADS={n}`",
        deterministic="`tf.config.experimental.enable_op_determinism()`",
    )
    # TF_ is also Terraform's prefix: TF_VAR_<name> carries Terraform inputs (often secrets, under any
    # name), the rest configure the Terraform CLI. None of them is TensorFlow's, so all stay out.
    env_vars = (
        *(EnvVar(p, "excluded", "Terraform's, not TensorFlow's") for p in (
            "TF_VAR_*", "TF_CLI_*", "TF_TOKEN_*", "TF_LOG*", "TF_CLOUD_*", "TF_REGISTRY_*", "TF_PLUGIN_*",
            "TF_DATA_DIR", "TF_IN_AUTOMATION", "TF_INPUT", "TF_WORKSPACE", "TF_IGNORE", "TF_APPEND_USER_AGENT",
            "TF_STATE_*", "TF_ACC", "TF_REATTACH_PROVIDERS")),
        EnvVar("TF_CPP_*", "none", "TensorFlow's log level does not change results"),
        EnvVar("TF_*", "numerics", "a TensorFlow setting (oneDNN, threads, determinism) read at start-up"),
    )

    def __init__(self) -> None:
        from . import runtime

        self._rt = runtime

    # --- class level ---
    @classmethod
    def interventions(cls) -> list[Intervention]:
        from .interventions import INTERVENTIONS

        return list(INTERVENTIONS)

    @classmethod
    def isa_variants(cls, flags: set[str], environ: Mapping[str, str]) -> tuple[list[Variant], list[str]]:
        """TensorFlow without its oneDNN kernels, and oneDNN held just below this CPU and at SSE4.1 (the two
        ends say most; every level between would be a rerun each), below any cap the user already set.

        >>> [v.name for v in TensorflowAdapter.isa_variants({"sse4_2", "avx", "avx2", "fma"}, {})[0]]
        ['TF_ENABLE_ONEDNN_OPTS=0', 'ONEDNN_MAX_CPU_ISA=AVX', 'ONEDNN_MAX_CPU_ISA=SSE41']
        """
        variants: list[Variant] = []
        why_not: list[str] = []
        off = str(environ.get("TF_ENABLE_ONEDNN_OPTS", "")).strip() == "0"
        cap = str(environ.get("ONEDNN_MAX_CPU_ISA", "")).upper()
        cap_isa = {"SSE41": "SSE4_2", "AVX": "AVX", "AVX2": "AVX2"}.get(cap)
        level = min([i for i in (isa_level(flags), cap_isa) if i], key=ISA_ORDER.index, default=None)
        if off:
            why_not.append("TF_ENABLE_ONEDNN_OPTS: already 0 (TensorFlow's oneDNN kernels are off)")
        else:
            variants.append(Variant("TF_ENABLE_ONEDNN_OPTS=0", "environment",
                                    "TensorFlow without its oneDNN kernels (as on builds or machines where they "
                                    "are off)",
                                    env={"TF_ENABLE_ONEDNN_OPTS": "0"},
                                    advice="TensorFlow without its oneDNN kernels (`TF_ENABLE_ONEDNN_OPTS=0`) gives "
                                           "other numbers: set `TF_ENABLE_ONEDNN_OPTS` to the same value on every "
                                           "machine (its default depends on the build and the CPU)."))
            lower = lower_levels(level)
            for isa in dict.fromkeys([*lower[:1], *lower[-1:]]):
                variants.append(Variant(f"ONEDNN_MAX_CPU_ISA={_ONEDNN[isa]}", "cpu-isa",
                                        f"TensorFlow's oneDNN kernels limited to {isa}, as on a CPU without the "
                                        "higher sets", env={"ONEDNN_MAX_CPU_ISA": _ONEDNN[isa]}))
            if not lower:
                why_not.append(f"ONEDNN_MAX_CPU_ISA (TensorFlow): no level below {level or 'this CPU (not x86)'} "
                               "that this CPU supports")
        return variants, why_not

    @classmethod
    def thread_variant(cls, count: int) -> Variant:
        # The variable alone: --threads would also switch on op determinism, a second change.
        return Variant(f"TF_NUM_INTRAOP_THREADS={count}", "thread-count", f"TensorFlow with {count} intra-op thread(s)",
                       env={"TF_NUM_INTRAOP_THREADS": str(count)})

    # --- instance level ---
    def seed(self, seed: int) -> dict[str, Any]:
        return self._rt.seed(seed)

    def switches(self, *, strict: bool, threads: int | None) -> list[Switch]:
        return self._rt.switches(strict=strict, threads=threads)

    def environment(self) -> dict[str, Any]:
        return self._rt.environment()

    def is_tensor(self, x: Any) -> bool:
        return self._rt.is_tensor(x)

    def to_numpy(self, x: Any) -> np.ndarray:
        return self._rt.to_numpy(x)

    def dtype_name(self, x: Any) -> str:
        return self._rt.dtype_name(x)

    def install(self, recorder: RecorderLike) -> Callable[[], None]:
        """Record every ``model.fit`` batch (Keras on the TensorFlow backend), now or once Keras is imported."""
        return self._rt.install(recorder)


ADAPTER = TensorflowAdapter
