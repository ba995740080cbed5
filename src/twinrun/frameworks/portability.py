"""TensorFlow and JAX settings that another machine may have, as environment variables for a rerun.

Doctor's portability probe reruns a script with each variant and says whether its results stay bitwise
identical. Nothing here imports a framework: a variant is only environment variables for the child.
Measured on the example Keras CNN (examples/keras/cnn_fit.py, 20 steps): ``TF_ENABLE_ONEDNN_OPTS=0``,
``ONEDNN_MAX_CPU_ISA=AVX2`` or ``SSE41`` and one intra-op thread each change the weights; on the JAX
MLP, ``--xla_cpu_max_isa=SSE4_2`` does and ``AVX2`` does not (on an AVX-512 CPU).

>>> [v.name for v in variants("tensorflow", cpu_isa="AVX2")]
['tf-onednn-off', 'onednn-isa-avx', 'onednn-isa-sse41']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Variant", "variants", "xla_flags_with", "cpu_isa", "ISA_ORDER"]

# Instruction sets from lowest to highest, in the names oneDNN and XLA use.
ISA_ORDER = ("SSE4_2", "AVX", "AVX2", "AVX512")
_ONEDNN = {"SSE4_2": "SSE41", "AVX": "AVX", "AVX2": "AVX2", "AVX512": "AVX512_CORE"}


@dataclass(frozen=True)
class Variant:
    """One rerun: its name, the cause it tests (``cpu-isa``, ``environment``), variables, and why."""

    name: str
    cause: str
    env: dict
    note: str

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_isa(flags: set[str]) -> str | None:
    """The best of ``ISA_ORDER`` that a CPU with these ``/proc/cpuinfo`` flags runs (None: not x86, or unknown).

    >>> cpu_isa({"sse4_2", "avx", "avx2", "fma"})
    'AVX2'
    """
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "AVX512"
    if {"avx2", "fma"} <= flags:
        return "AVX2"
    if "avx" in flags:
        return "AVX"
    if "sse4_2" in flags:
        return "SSE4_2"
    return None


def xla_flags_with(flag: str, current: str | None) -> str:
    """``current`` XLA_FLAGS with ``flag`` added (replacing the same flag's earlier value)."""
    key = flag.split("=")[0]
    parts = [p for p in (current or "").split() if p.split("=")[0] != key]
    return " ".join([*parts, flag])


def _lower(cpu_isa: str | None) -> list[str]:
    """The instruction sets below ``cpu_isa`` (never above: a higher one dies of SIGILL), highest first."""
    if cpu_isa is None:
        return []
    isa = cpu_isa.upper().replace("AVX512_CORE", "AVX512").replace("AVX512F", "AVX512")
    if isa not in ISA_ORDER:
        return []
    return list(reversed(ISA_ORDER[:ISA_ORDER.index(isa)]))


def variants(framework: str, *, cpu_isa: str | None, xla_flags: str | None = None) -> list[Variant]:
    """The portability reruns for ``framework`` ("tensorflow" or "jax") on a CPU whose best ISA is
    ``cpu_isa`` ("AVX512", "AVX2", ...; None: no ISA emulation)."""
    out: list[Variant] = []
    lower = _lower(cpu_isa)
    if framework == "tensorflow":
        out.append(Variant("tf-onednn-off", "environment", {"TF_ENABLE_ONEDNN_OPTS": "0"},
                           "TensorFlow without its oneDNN kernels, as on builds or machines where they are off"))
        # Every lower ISA would be a rerun each; the two ends say most (just below this CPU, and SSE4.1).
        for isa in dict.fromkeys([*lower[:1], *lower[-1:]]):
            out.append(Variant(f"onednn-isa-{_ONEDNN[isa].lower()}", "cpu-isa", {"ONEDNN_MAX_CPU_ISA": _ONEDNN[isa]},
                               f"TensorFlow's oneDNN kernels limited to {isa}, as on a CPU without the higher sets"))
    elif framework == "jax":
        for isa in dict.fromkeys([*lower[:1], *lower[-1:]]):
            out.append(Variant(f"xla-isa-{isa.lower()}", "cpu-isa",
                               {"XLA_FLAGS": xla_flags_with(f"--xla_cpu_max_isa={isa}", xla_flags)},
                               f"XLA's CPU code generated for {isa} at most, as on a CPU without the higher sets"))
    return out
