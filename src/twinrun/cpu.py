"""This CPU's facts that decide which kernels run: instruction-set flags, usable cores, ISA level.

One reader of ``/proc/cpuinfo`` for the whole of twinrun (the environment fingerprint, doctor's
portability probes and every framework's instruction-set variants).

>>> isa_level({"sse4_2", "avx", "avx2", "fma"})
'AVX2'
>>> lower_levels("AVX512")
['AVX2', 'AVX', 'SSE4_2']
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any

__all__ = ["ISA_ORDER", "cpu_flags", "cpu_info", "isa_level", "lower_levels", "usable_cpus"]

# Instruction-set flags that decide which kernels numerics libraries dispatch to.
_ISA_FLAGS = re.compile(r"^(sse4_1|sse4_2|avx|avx2|fma|f16c|avx_vnni|avx512.*|amx.*"
                        r"|asimd|asimdhp|asimddp|sve|sve2|bf16|i8mm|fphp)$")
# x86 instruction-set levels, lowest first, in the names oneDNN and XLA use.
ISA_ORDER = ("SSE4_2", "AVX", "AVX2", "AVX512")
_AVX512 = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})


def cpu_info() -> dict[str, Any]:
    """``{"model", "vendor", "flags" (sorted ISA flags), "count", "usable"}`` of this machine."""
    info: dict[str, Any] = {"model": None, "vendor": None, "flags": [], "count": os.cpu_count(),
                            "usable": usable_cpus()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        info["model"] = platform.processor() or None
        return info
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor block is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    info["model"] = fields.get("model name") or fields.get("cpu model") or fields.get("cpu part")
    info["vendor"] = fields.get("vendor_id") or fields.get("cpu implementer")
    flags = (fields.get("flags") or fields.get("features") or "").split()
    info["flags"] = sorted(f for f in set(flags) if _ISA_FLAGS.match(f))
    return info


def cpu_flags() -> set[str]:
    """This CPU's numerics-relevant instruction-set flags, as ``cpu_info()["flags"]`` lists them."""
    return set(cpu_info()["flags"])


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity), else the CPU count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def isa_level(flags: set[str]) -> str | None:
    """The best of ``ISA_ORDER`` a CPU with these flags runs (None: not x86, or unknown)."""
    if flags >= _AVX512:
        return "AVX512"
    if {"avx2", "fma"} <= flags:
        return "AVX2"
    if "avx" in flags:
        return "AVX"
    if "sse4_2" in flags:
        return "SSE4_2"
    return None


def lower_levels(level: str | None) -> list[str]:
    """The instruction-set levels below ``level``, highest first (never above: a higher one dies of SIGILL)."""
    if level is None:
        return []
    isa = level.upper().replace("AVX512_CORE", "AVX512").replace("AVX512F", "AVX512")
    if isa not in ISA_ORDER:
        return []
    return list(reversed(ISA_ORDER[:ISA_ORDER.index(isa)]))
