"""The environment fingerprint: every fact that can change numerics, as JSON; and a ranked diff of two.

>>> from twinrun import env
>>> a = env.capture()                                  # doctest: +SKIP
>>> d = env.diff(a, b)                                 # doctest: +SKIP
>>> [x.key for x in d.differences if x.rank == "numerics"]   # doctest: +SKIP
['cpu.flags', 'packages.torch.version']

``capture()`` imports no framework: framework facts (PyTorch's CPU capability, TF32, deterministic
flags) are read from the adapters of frameworks the program has already imported. Environment
variables enter only by allow-list, allow-listed names that look like secrets are dropped, and
secrets inside the values of the others are redacted (``twinrun.redact``).
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import importlib.metadata as _md
import os
import platform
import re
import socket
import sys
from dataclasses import asdict, dataclass
from typing import Any

from . import frameworks as _fw
from ._errors import UsageError
from .cpu import cpu_info
from .redact import redact_env

__all__ = [
    "ENV_PATTERNS",
    "SCHEMA",
    "Difference",
    "EnvDiff",
    "capture",
    "check_fingerprint",
    "diff",
]

SCHEMA = "twinrun.env/1"

# Environment variables that can change numerics, by allow-list only (never the whole environment):
# the process-level ones here (thread pools, BLAS, hashing, twinrun's seeds), each framework's from
# its adapter (``Adapter.env_vars``).
ENV_PATTERNS = ("OMP_*", "MKL_*", "OPENBLAS_*", "NPY_*", "KMP_*", "TWINRUN_SEED*", "GLIBC_TUNABLES",
                "PYTHONHASHSEED")
# A prefix such as TF_ also matches TF_API_TOKEN: names with these words never enter a fingerprint.
_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL", "AUTH", "COOKIE", "SESSION")

# Distributions whose version can change numbers; "nvidia-*" libraries are added by scan.
NUMERICS_PACKAGES = (
    "numpy", "scipy", "torch", "torchvision", "torchaudio", "triton", "tensorflow", "tensorflow-cpu",
    "tensorflow-intel", "tf-keras", "keras", "jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt",
    "ml-dtypes", "mkl", "intel-openmp", "tbb", "onednn", "scipy-openblas32", "scipy-openblas64",
    "numexpr", "scikit-learn",
)
# Distributions worth recording that rarely change numbers themselves.
OTHER_PACKAGES = ("twinrun", "threadpoolctl", "pillow", "opencv-python", "opencv-python-headless", "pandas",
                  "h5py", "protobuf", "xxhash")
_NVIDIA = re.compile(r"^nvidia-")


# --- capture -------------------------------------------------------------------------------------
def capture() -> dict[str, Any]:
    """A JSON-ready fingerprint of this process's numerics environment. Imports no framework.

    Sections: ``python``, ``os``, ``libc``, ``cpu`` (model, ISA flags, usable vs present cores),
    ``gpu`` (NVIDIA driver and models, from /proc), ``packages`` (version and build label),
    ``threadpools`` (BLAS/OpenMP libraries, threading layer, threads), ``frameworks`` (settings of
    the loaded frameworks), ``env_vars`` (allow-listed), ``host``.
    """
    from . import __version__

    env_vars, withheld = _env_vars()
    fp: dict[str, Any] = {
        "schema": SCHEMA,
        "twinrun": __version__,
        "captured_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host": {"hostname": socket.gethostname()},
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "compiler": platform.python_compiler(),
            "executable": sys.executable,
        },
        "os": {"system": platform.system(), "release": platform.release(), "machine": platform.machine()},
        "libc": dict(zip(("name", "version"), platform.libc_ver())),
        "cpu": cpu_info(),
        "gpu": _gpu(),
        "packages": _packages(),
        "threadpools": _threadpools(),
        "frameworks": _frameworks(),
        "env_vars": env_vars,
        "env_vars_withheld": withheld,
    }
    return fp


def _env_vars() -> tuple[dict[str, str], int]:
    framework = _fw.env_vars()
    allowed = [*ENV_PATTERNS, *(v.pattern for v in framework if v.rank != "excluded")]
    excluded = [v.pattern for v in framework if v.rank == "excluded"]
    out, withheld = {}, 0
    for name in sorted(os.environ):
        up = name.upper()
        if not any(fnmatch.fnmatchcase(up, p) for p in allowed):
            continue
        if any(w in up for w in _SECRET_WORDS) or any(fnmatch.fnmatchcase(up, p) for p in excluded):
            withheld += 1
            continue
        out[name] = os.environ[name]
    # An allowed name can still carry a secret in its value (a URL password, --token=..., a signed URL).
    return redact_env(out), withheld


def _gpu() -> dict[str, Any]:
    """NVIDIA driver and GPU models from /proc, which needs no CUDA library; {} without a GPU."""
    out: dict[str, Any] = {}
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8", errors="replace") as f:
            m = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", f.read())
        out["nvidia_driver"] = m.group(1) if m else None
    except OSError:
        return out
    models = []
    base = "/proc/driver/nvidia/gpus"
    try:
        for bus in sorted(os.listdir(base)):
            try:
                with open(os.path.join(base, bus, "information"), encoding="utf-8", errors="replace") as f:
                    m = re.search(r"^Model:\s*(.+)$", f.read(), re.M)
                if m:
                    models.append(m.group(1).strip())
            except OSError:
                continue
    except OSError:
        pass
    out["models"] = models
    return out


def _packages() -> dict[str, Any]:
    wanted = {_norm(n) for n in NUMERICS_PACKAGES + OTHER_PACKAGES}
    out: dict[str, dict[str, Any]] = {}
    for dist in _md.distributions():
        try:
            name = _norm(dist.metadata["Name"] or "")
        except Exception:  # noqa: BLE001 - a broken dist-info must not break capture
            continue
        if name and (name in wanted or _NVIDIA.match(name)) and name not in out:
            version = dist.version
            out[name] = {"version": version, "build": version.partition("+")[2] or None}
    return dict(sorted(out.items()))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _threadpools() -> dict[str, Any]:
    """threadpoolctl's view of the loaded BLAS/LAPACK/OpenMP libraries, by a path-free key."""
    from .determinism import threadpool_libraries

    out = {}
    for key, lib in threadpool_libraries().items():
        info = lib.info()
        out[key] = {k: info.get(k) for k in ("internal_api", "version", "threading_layer", "architecture",
                                              "num_threads")}
        out[key]["filepath"] = info.get("filepath")
    return out


def _frameworks() -> dict[str, Any]:
    out = {}
    for name in _fw.NAMES:
        if not _fw.is_loaded(name):
            continue
        try:
            out[name] = _fw.get(name).environment()
        except Exception as e:  # noqa: BLE001 - one framework's failure must not hide the rest
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    return out


def check_fingerprint(obj: Any, source: str = "fingerprint") -> dict[str, Any]:
    """``obj`` if it is a twinrun environment fingerprint, else a one-line ``UsageError``."""
    if not isinstance(obj, dict) or not str(obj.get("schema", "")).startswith("twinrun.env/"):
        raise UsageError(f"{source} is not a twinrun environment fingerprint (no \"schema\": \"{SCHEMA}\"); "
                         "write one with: twinrun env -o FILE")
    if obj["schema"] != SCHEMA:
        raise UsageError(f"{source} is a fingerprint of schema {obj['schema']!r}, this twinrun reads {SCHEMA!r}; "
                         "capture it again with this version: twinrun env -o FILE")
    return obj


# --- diff ----------------------------------------------------------------------------------------
RANKS = ("numerics", "possible", "none")


@dataclass
class Difference:
    """One key whose value differs between two fingerprints (``None`` on the side that lacks it)."""

    key: str
    a: Any
    b: Any
    rank: str
    why: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EnvDiff:
    """The ranked differences of two fingerprints, ``numerics`` first."""

    differences: list[Difference]

    @property
    def numerics(self) -> bool:
        """Whether any difference can change results."""
        return any(d.rank == "numerics" for d in self.differences)

    def by_rank(self, rank: str) -> list[Difference]:
        return [d for d in self.differences if d.rank == rank]

    def to_dict(self) -> dict[str, Any]:
        return {
            "numerics": self.numerics,
            "counts": {r: len(self.by_rank(r)) for r in RANKS},
            "differences": [d.to_dict() for d in self.differences],
        }


# (glob on the dotted key, rank, why). First match wins; {name} is the key's last part.
_RULES: list[tuple[str, str | None, str]] = [
    ("schema", "none", "the fingerprint format, not the machine"),
    ("twinrun", "possible", "twinrun's version changes what deterministic() switches, not the kernels"),
    ("captured_at", "none", "when the fingerprint was taken"),
    ("host.*", "none", "the machine's name does not enter any computation"),
    ("python.executable", "none", "where Python is installed does not change results"),
    ("python.*", "possible", "another Python can change hashing, `math` and `random` internals, rarely tensor kernels"),
    ("libc.*", "possible", "glibc's libm rounds exp, log and pow differently across versions; NumPy and the "
                           "frameworks mostly use their own kernels"),
    ("os.machine", "numerics", "another architecture runs other kernels with other rounding"),
    ("os.*", "possible", "the kernel affects threads and memory, rarely the arithmetic"),
    ("cpu.flags", "numerics", "the instruction sets (AVX2, AVX-512, FMA, AMX) decide which kernels run, and each "
                              "sums and fuses in its own order"),
    ("cpu.vendor", "numerics", "MKL and oneDNN choose code paths by CPU vendor"),
    ("cpu.usable", "numerics", "default thread counts follow the usable cores, and another thread count sums in "
                               "another order"),
    ("cpu.count", "possible", "libraries that ignore CPU affinity size their thread pools by this count"),
    ("cpu.model", "possible", "the same instruction sets give the same kernels, but MKL and oneDNN also tune by "
                              "model"),
    ("gpu.*", "numerics", "another GPU or driver runs other kernels (cuBLAS, cuDNN heuristics, TF32)"),
    ("lock.sha256", "possible", "the runs were installed from other lock files: the locked versions can differ "
                                "(the packages rows say whether the installed ones do)"),
    ("lock.format", "possible", "the runs were installed from locks of other formats (uv.lock, pylock.toml, "
                                "requirements): the locked versions can differ"),
    ("lock.*", "none", "where the lock lies and how it was found, not what it pins"),
    ("lock", "possible", "a lock was found or given for one run only: the other's versions were pinned by nothing "
                         "twinrun saw (twinrun env check --lock FILE compares an environment with a lock)"),
    ("packages.*", None, ""),  # ranked by _package_rank
    ("threadpools.*.filepath", "none", "where the library file lies, not what it computes"),
    ("threadpools.*.num_threads", "numerics", "BLAS and OpenMP split sums across threads; another count sums "
                                              "in another order"),
    ("threadpools.*.internal_api", "numerics", "another BLAS or OpenMP implementation (MKL vs OpenBLAS) computes "
                                               "with other kernels"),
    ("threadpools.*.version", "numerics", "another BLAS version can change kernels and blocking"),
    ("threadpools.*.threading_layer", "numerics", "another threading layer splits work differently"),
    ("threadpools.*.architecture", "numerics", "OpenBLAS picked kernels for another CPU architecture"),
    ("threadpools.*", "numerics", "a BLAS or OpenMP library loaded on one side only computes with other kernels"),
    ("frameworks.jax.backend_started", "none", "whether JAX had started when the fingerprint was taken"),
    ("frameworks.jax.devices", "numerics", "another JAX device runs other kernels"),
    ("frameworks.*.*num_threads*", "numerics", "another thread count sums in another order"),
    ("frameworks.*.*threads", "numerics", "another thread count sums in another order"),
    ("frameworks.*.*tf32*", "numerics", "TF32 rounds float32 matmul inputs to 10 mantissa bits on recent GPUs"),
    ("frameworks.*.*tensor_float_32", "numerics", "TF32 rounds float32 matmul inputs to 10 mantissa bits on recent "
                                                  "GPUs"),
    ("frameworks.*.*precision", "numerics", "the matmul precision lets float32 matmuls run in TF32 or bfloat16"),
    ("frameworks.*.*determinis*", "numerics", "deterministic mode changes which kernels run"),
    ("frameworks.*.*cpu_capability*", "numerics", "the instruction set PyTorch dispatches to (AVX2, AVX-512) "
                                                  "changes kernels: softmax, sigmoid, even randn after manual_seed"),
    ("frameworks.*.*version", "numerics", "another framework version can change kernels"),
    ("frameworks.*", "numerics", "a framework setting or build fact that decides which kernels run"),
    ("env_vars.KMP_INIT_AT_FORK", "none", "Intel OpenMP's fork handling does not change results"),
    ("env_vars.KMP_DUPLICATE_LIB_OK", "possible", "two OpenMP runtimes may then load side by side, and their thread "
                                                  "pools compete"),
    ("env_vars.PYTHONHASHSEED", "numerics", "string hashes decide set and dict-of-set order, and so data order"),
    ("env_vars.TWINRUN_SEED*", "numerics", "overrides twinrun's seeds"),
    ("env_vars.*_NUM_THREADS", "numerics", "sets a thread count; another count sums in another order"),
    ("env_vars.*_THREADS", "numerics", "sets a thread count; another count sums in another order"),
    ("env_vars.*", "numerics", "this variable is read by a numerics library and can change its kernels"),
    ("env_vars_withheld", "none", "a count of allow-listed names left out as secret-looking or Terraform's"),
]


def _package_rank(name: str) -> tuple[str, str]:
    if name in {_norm(n) for n in NUMERICS_PACKAGES} or _NVIDIA.match(name):
        return "numerics", f"another {name} version or build can change kernels and so the numbers"
    return "possible", f"{name} rarely changes numbers itself, but can change data loading or preprocessing"


def _rank(key: str) -> tuple[str, str]:
    for pattern, rank, why in _RULES:
        if pattern == "env_vars.*":   # before the catch-all: what the frameworks say of their variables
            name = key.removeprefix("env_vars.")
            for v in _fw.env_vars():
                if key.startswith("env_vars.") and v.rank != "excluded" and fnmatch.fnmatchcase(name, v.pattern):
                    return v.rank, v.why
        if fnmatch.fnmatchcase(key, pattern):
            if rank is None:  # packages.<name>.<field>
                return _package_rank(key.split(".")[1])
            return rank, why
    return "possible", "not known to change results, but not known to be harmless either"


def _flatten(obj: Any, path: tuple[str, ...], out: dict[tuple[str, ...], Any]) -> None:
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            _flatten(v, (*path, str(k)), out)
    else:
        out[path] = obj


def _subtree(obj: Any, path: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any] | None:
    """The shortest prefix of ``path`` missing from ``obj``, or None when ``obj`` has all of it."""
    for i, part in enumerate(path):
        if not isinstance(obj, dict) or part not in obj:
            return path[: i + 1], None
        obj = obj[part]
    return None


def _value(obj: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        obj = obj[part]
    return obj


def diff(a: dict[str, Any], b: dict[str, Any], *, strict: bool = True) -> EnvDiff:
    """The ranked differences between fingerprints ``a`` and ``b`` (from ``capture()`` or JSON files).

    A subtree present on one side only (a framework loaded when just one fingerprint was taken)
    is one difference, not one per leaf. ``strict=False`` ranks any two dicts (the environment of a
    trace written by another program or version) instead of requiring twinrun fingerprints.

    >>> d = diff(capture(), capture())      # doctest: +SKIP
    >>> d.numerics                          # doctest: +SKIP
    False
    """
    if strict:
        check_fingerprint(a, "first fingerprint")
        check_fingerprint(b, "second fingerprint")
    fa: dict[tuple[Any, ...], Any] = {}
    fb: dict[tuple[Any, ...], Any] = {}
    _flatten(a, (), fa)
    _flatten(b, (), fb)
    diffs: list[Difference] = []
    done: set[tuple[Any, ...]] = set()
    for path in sorted(set(fa) | set(fb)):
        if path in fa and path in fb:
            if fa[path] == fb[path]:
                continue
            va, vb = fa[path], fb[path]
        else:
            lacking = b if path in fa else a
            missing = _subtree(lacking, path)
            if missing is not None:
                path = missing[0]
            if path in done:
                continue
            done.add(path)
            # a leaf on one side where the other has a dict: both values; else None on the lacking side
            va = _value(a, path) if missing is None or lacking is b else None
            vb = _value(b, path) if missing is None or lacking is a else None
        key = ".".join(path)
        rank, why = _rank(key)
        if path[0] == "frameworks" and len(path) == 2:
            rank, why = "possible", (f"{path[1]} was loaded when only one fingerprint was taken, so its "
                                     "settings compare on one side only")
        elif key == "cpu.flags" and isinstance(va, list) and isinstance(vb, list):
            why = _flags_why(va, vb)
        diffs.append(Difference(key, va, vb, rank, why))
    diffs.sort(key=lambda d: RANKS.index(d.rank))  # stable: keys stay sorted within a rank
    return EnvDiff(diffs)


def _flags_why(a: list[Any], b: list[Any]) -> str:
    def families(flags: set[str]) -> str:
        fam = {"AVX-512" if f.startswith("avx512") else "AMX" if f.startswith("amx") else f.upper()
               for f in flags}
        return ", ".join(sorted(fam))

    only_a, only_b = set(a) - set(b), set(b) - set(a)
    parts = [f"only {side} has {families(fl)}" for side, fl in (("A", only_a), ("B", only_b)) if fl]
    return ("; ".join(parts) + ": PyTorch, oneDNN, MKL and NumPy dispatch to other kernels, which sum and fuse "
            "in another order")
