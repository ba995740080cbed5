"""What a lock check says, as plain data: locked packages, drift, ranked by what it can do to the numbers."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from ..env import NUMERICS_PACKAGES, OTHER_PACKAGES

__all__ = ["Drift", "DriftStatus", "Impact", "Lock", "LockCheck", "LockFingerprint", "LockedPackage", "impact",
           "normalize"]


# --- ranking ----------------------------------------------------------------------------------------

class Impact(StrEnum):
    """What another version of a distribution can do to a run's numbers, most first."""

    FRAMEWORK = "framework"   # the kernels themselves: torch, tensorflow, jax
    BLAS = "blas"             # BLAS/LAPACK/OpenMP and array libraries the kernels call
    CUDA = "cuda"             # CUDA libraries: cuBLAS, cuDNN, NCCL, ...
    NUMERICS = "numerics"     # other packages known to change numbers (scikit-learn, numexpr)
    POSSIBLE = "possible"     # data loading and preprocessing (pillow, opencv, pandas)
    NONE = "none"             # not known to change numbers

    @property
    def rank(self) -> str:
        """The coarse rank ``env.diff`` uses: ``numerics``, ``possible`` or ``none``."""
        if self in (Impact.POSSIBLE, Impact.NONE):
            return self.value
        return "numerics"


_ORDER = list(Impact)
_FRAMEWORKS = frozenset({
    "torch", "torchvision", "torchaudio", "triton", "pytorch-triton", "tensorflow", "tensorflow-cpu",
    "tensorflow-intel", "tf-keras", "keras", "jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt",
    "jax-cuda13-plugin", "jax-cuda13-pjrt", "intel-extension-for-pytorch",
})
_BLAS = frozenset({
    "numpy", "scipy", "mkl", "intel-openmp", "tbb", "onednn", "scipy-openblas32", "scipy-openblas64",
    "ml-dtypes", "openblas",
})
_CUDA = re.compile(r"^(nvidia-|cuda-|cupy)")
_NAME = re.compile(r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$")


def normalize(name: str) -> str:
    """PEP 503 normalised distribution name: ``Scikit_Learn`` -> ``scikit-learn``."""
    return re.sub(r"[-_.]+", "-", name).lower()


_NUMERICS = frozenset(normalize(n) for n in NUMERICS_PACKAGES)
_OTHER = frozenset(normalize(n) for n in OTHER_PACKAGES)


def impact(name: str) -> Impact:
    """How much another version of distribution ``name`` can change numbers.

    >>> impact("torch"), impact("numpy"), impact("nvidia-cublas-cu12"), impact("rich")
    (<Impact.FRAMEWORK: 'framework'>, <Impact.BLAS: 'blas'>, <Impact.CUDA: 'cuda'>, <Impact.NONE: 'none'>)
    """
    n = normalize(name)
    if n in _FRAMEWORKS or n.startswith("pytorch-triton"):
        return Impact.FRAMEWORK
    if n in _BLAS:
        return Impact.BLAS
    if _CUDA.match(n):
        return Impact.CUDA
    if n in _NUMERICS:
        return Impact.NUMERICS
    if n in _OTHER:
        return Impact.POSSIBLE
    return Impact.NONE


_WHY = {
    Impact.FRAMEWORK: "another framework version or build runs other kernels, which sum and fuse in another order",
    Impact.BLAS: "another BLAS/array library version can pick other kernels and another summation order",
    Impact.CUDA: "another CUDA library version can pick other GPU kernels (cuBLAS, cuDNN, NCCL reductions)",
    Impact.NUMERICS: "known to change numbers between versions",
    Impact.POSSIBLE: "rarely changes numbers itself, but can change data loading or preprocessing",
    Impact.NONE: "not known to change numbers",
}


# --- data -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LockedPackage:
    """One pinned distribution of a lock (name normalised; ``where`` is ``file:line`` or a TOML path)."""

    name: str
    version: str
    where: str
    hashes: tuple[str, ...] = ()
    optional: bool = False    # needed only by an extra or a dependency group (uv.lock)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hashes"] = list(self.hashes)
        return d


@dataclass(frozen=True)
class Lock:
    """A lock file read: its format, sha256 and the packages that apply to this environment."""

    path: str
    format: str                      # "uv.lock", "pylock.toml" or "requirements"
    sha256: str
    packages: tuple[LockedPackage, ...]
    notes: tuple[str, ...] = ()       # what was skipped or cannot be checked, one sentence each

    def to_dict(self) -> dict:
        return {"path": self.path, "format": self.format, "sha256": self.sha256,
                "packages": [p.to_dict() for p in self.packages], "notes": list(self.notes)}


class DriftStatus(StrEnum):
    DIFFERENT = "different"   # installed in another version (drift)
    MISSING = "missing"       # locked, not installed (drift)
    BUILD = "build"           # same public version, the lock pins no build label (not drift)
    UNLOCKED = "unlocked"     # a numerics package installed that the lock does not name (not drift)


@dataclass(frozen=True)
class Drift:
    """One distribution where the installed environment and the lock disagree."""

    name: str
    locked: str | None
    installed: str | None
    status: DriftStatus
    impact: Impact
    why: str

    @property
    def rank(self) -> str:
        return self.impact.rank

    @property
    def is_drift(self) -> bool:
        return self.status in (DriftStatus.DIFFERENT, DriftStatus.MISSING)

    def to_dict(self) -> dict:
        return {"name": self.name, "locked": self.locked, "installed": self.installed, "status": str(self.status),
                "drift": self.is_drift, "impact": str(self.impact), "rank": self.rank, "why": self.why}


@dataclass(frozen=True)
class LockCheck:
    """The installed distributions compared with a lock: drift first, ranked by numerics impact."""

    lock: str
    format: str
    sha256: str
    checked: int                          # locked packages that apply here
    differences: tuple[Drift, ...]
    notes: tuple[str, ...] = ()

    @property
    def drift(self) -> tuple[Drift, ...]:
        """Only the differences that are drift (another version, or missing)."""
        return tuple(d for d in self.differences if d.is_drift)

    @property
    def drifted(self) -> bool:
        return any(d.is_drift for d in self.differences)

    @property
    def numerics(self) -> bool:
        """Whether any drift can change numbers."""
        return any(d.is_drift and d.rank == "numerics" for d in self.differences)

    def to_dict(self) -> dict:
        counts = {s.value: sum(d.status == s for d in self.differences) for s in DriftStatus}
        return {"lock": self.lock, "format": self.format, "sha256": self.sha256, "checked": self.checked,
                "drifted": self.drifted, "numerics": self.numerics, "counts": counts,
                "differences": [d.to_dict() for d in self.differences], "notes": list(self.notes)}


@dataclass(frozen=True)
class LockFingerprint:
    """What a trace header carries about the lock a run came from."""

    path: str
    format: str
    sha256: str
    found: bool                # True when found by search, False when given
    others: tuple[str, ...] = field(default=())   # other lock files in the same folder, not chosen

    def to_dict(self) -> dict:
        return {"path": self.path, "format": self.format, "sha256": self.sha256, "found": self.found,
                "others": list(self.others)}
