"""Which kernels PyTorch runs on this CPU, and the reruns that show what another CPU would compute.

PyTorch's own kernels follow ``ATEN_CPU_CAPABILITY`` (lowest first: default, avx2, avx512 on x86),
its convolutions oneDNN's ``ONEDNN_MAX_CPU_ISA``, its BLAS MKL's code path (``MKL_CBWR``). Each can
only be *lowered*: ``ATEN_CPU_CAPABILITY=avx512`` on an AVX2 CPU is accepted and the process later
dies of SIGILL (FACTS.md). What this PyTorch runs here is read by :func:`probe` in a child process, so
that the caller (doctor) never imports torch.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from ..base import Variant

__all__ = ["aten_level", "emulations", "isa_variants", "probe"]

# ATen kernel levels per architecture, lowest first (ATEN_CPU_CAPABILITY values).
ATEN_LADDERS = {
    "x86": ["default", "avx2", "avx512"],
    "arm": ["default", "sve256"],
}
# oneDNN ISA caps worth emulating, highest first, with the /proc/cpuinfo flags each needs.
_ONEDNN_LEVELS = [("AVX2", {"avx2", "fma"}), ("AVX", {"avx"}), ("SSE41", {"sse4_1"})]
ONEDNN_ORDER = ["SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
                "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
                "AVX10_1_512_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16", "DEFAULT", "ALL"]
_AVX512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq"}

_PROBE = ("import json, torch; print(json.dumps({'capability': torch.backends.cpu.get_cpu_capability(), "
          "'threads': torch.get_num_threads(), 'mkl': torch.backends.mkl.is_available(), "
          "'mkldnn': torch.backends.mkldnn.is_available()}))")


def probe() -> dict[str, Any]:
    """What torch sees in a fresh process with this environment: ``{"capability", "threads", "mkl",
    "mkldnn"}``, or ``{}`` when torch cannot be imported here."""
    return dict(_probe(tuple(sorted(os.environ.items()))))


@functools.lru_cache(maxsize=8)   # a cache per environment: a probe costs a torch import (~1 s)
def _probe(environ: tuple[tuple[str, str], ...]) -> tuple[tuple[str, Any], ...]:
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=dict(environ),
                             timeout=120)
        found = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {}
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        found = {}
    return tuple(found.items())


def aten_level(flags: set[str]) -> str:
    """The ATen level a CPU with these flags runs (x86), as PyTorch picks it by default ("" unknown)."""
    if not flags:
        return ""
    if flags >= _AVX512:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "default"


def _onednn_cpu_level(flags: set[str]) -> int:
    """Index in ONEDNN_ORDER of the CPU's own oneDNN level (roughly: enough to rank the lower ones)."""
    if flags >= _AVX512:
        return ONEDNN_ORDER.index("AVX512_CORE")
    if {"avx2", "fma"} <= flags:
        return ONEDNN_ORDER.index("AVX2")
    if "avx" in flags:
        return ONEDNN_ORDER.index("AVX")
    if "sse4_1" in flags:
        return ONEDNN_ORDER.index("SSE41")
    return 0


def isa_variants(*, probe_result: dict[str, Any] | None = None, flags: set[str] | None = None,
                 environ: Mapping[str, str] | None = None) -> tuple[list[Variant], list[str]]:
    """The lower CPU instruction sets this machine can hold PyTorch to, as reruns, and why others cannot be.

    >>> names = [v.name for v in isa_variants(probe_result={"capability": "AVX2", "mkl": True, "mkldnn": True},
    ...          flags={"avx", "avx2", "fma", "sse4_1"}, environ={})[0]]
    >>> names
    ['ATEN_CPU_CAPABILITY=default', 'ONEDNN_MAX_CPU_ISA=AVX', 'ONEDNN_MAX_CPU_ISA=SSE41', 'MKL_CBWR=COMPATIBLE']
    """
    from ...cpu import cpu_flags

    environ = os.environ if environ is None else environ
    found = probe() if probe_result is None else probe_result
    flags = cpu_flags() if flags is None else flags
    variants: list[Variant] = []
    why_not: list[str] = []
    if not found:
        return variants, ["PyTorch is not installed here, so no PyTorch kernel level can be emulated"]
    cap = str(found.get("capability", "")).lower().replace(" ", "")
    ladder = next((ld for ld in ATEN_LADDERS.values() if cap in ld), None)
    if ladder is None or ladder.index(cap) == 0:
        why_not.append(f"ATEN_CPU_CAPABILITY: PyTorch already runs its lowest kernel level here ({cap or 'unknown'})")
    else:
        for level in reversed(ladder[:ladder.index(cap)]):
            variants.append(Variant(f"ATEN_CPU_CAPABILITY={level}", "cpu-isa",
                                    f"PyTorch kernels for {level} instead of {cap}",
                                    env={"ATEN_CPU_CAPABILITY": level}))
    if not found.get("mkldnn"):
        why_not.append("ONEDNN_MAX_CPU_ISA: this PyTorch has no oneDNN")
    else:
        cap_now = str(environ.get("ONEDNN_MAX_CPU_ISA", "")).upper()
        limit = ONEDNN_ORDER.index(cap_now) if cap_now in ONEDNN_ORDER else len(ONEDNN_ORDER)
        own = _onednn_cpu_level(flags)
        ceiling = min(limit, own)
        lower = [lvl for lvl, need in _ONEDNN_LEVELS if need <= flags and ONEDNN_ORDER.index(lvl) < ceiling]
        if not lower:
            level = cap_now or (ONEDNN_ORDER[own] if flags else "unknown")
            why_not.append(f"ONEDNN_MAX_CPU_ISA: no level below {level} that this CPU supports")
        for lvl in lower:
            variants.append(Variant(f"ONEDNN_MAX_CPU_ISA={lvl}", "cpu-isa", f"oneDNN limited to {lvl}",
                                    env={"ONEDNN_MAX_CPU_ISA": lvl}))
    if not found.get("mkl"):
        why_not.append("MKL_CBWR: this PyTorch does not use MKL")
    elif environ.get("MKL_CBWR"):
        why_not.append(f"MKL_CBWR: already set to {environ['MKL_CBWR']}")
    else:
        variants.append(Variant("MKL_CBWR=COMPATIBLE", "cpu-isa", "MKL in its CPU-independent (COMPATIBLE) code path",
                                env={"MKL_CBWR": "COMPATIBLE"}))
    return variants, why_not


def emulations(other_env: Mapping[str, Any]) -> list[Variant]:
    """Reruns that make this machine compute like the one with fingerprint ``other_env``: its lower
    ATen level, its thread count, both."""
    found = probe()
    variants: list[Variant] = []
    env_vars = other_env.get("env_vars") or {}
    cpu = other_env.get("cpu") or {}
    theirs = str(env_vars.get("ATEN_CPU_CAPABILITY") or aten_level(set(cpu.get("flags") or []))).lower()
    mine = str(found.get("capability", "")).lower()
    isa_env: dict[str, str] = {}
    ladder = next((ld for ld in ATEN_LADDERS.values() if mine in ld), None)
    if ladder and theirs in ladder and ladder.index(theirs) < ladder.index(mine):
        isa_env = {"ATEN_CPU_CAPABILITY": theirs}
        variants.append(Variant(f"ATEN_CPU_CAPABILITY={theirs}", "environment",
                                f"the other machine's PyTorch kernels ({theirs})", env=isa_env))
    their_threads: Any = env_vars.get("OMP_NUM_THREADS") or cpu.get("usable")
    try:
        their_threads = int(their_threads)
    except (TypeError, ValueError):
        their_threads = None
    if isinstance(their_threads, int) and their_threads != found.get("threads"):
        variants.append(Variant(f"threads-{their_threads}", "environment",
                                f"the other machine's thread count ({their_threads})", threads=their_threads))
        if isa_env:
            variants.append(Variant(f"ATEN_CPU_CAPABILITY={theirs}+threads-{their_threads}", "environment", "both",
                                    env=isa_env, threads=their_threads))
    return variants
