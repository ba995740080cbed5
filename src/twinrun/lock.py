"""Environment locks: read one, compare it with what is installed, rank the drift, write one.

>>> from twinrun import lock
>>> result = lock.check("uv.lock")                        # doctest: +SKIP
>>> result.drifted, [d.name for d in result.drift][:2]    # doctest: +SKIP
(True, ['torch', 'numpy'])
>>> print(lock.freeze())                                  # doctest: +SKIP
# twinrun env freeze: ...
torch==2.13.0+cpu

Three formats are read, never executed:

- ``uv.lock`` (TOML, ``version = 1``): the packages reachable from the project through dependency
  edges whose markers hold here; those needed only by an extra or a dependency group count when
  installed and are not missing otherwise (a lock cannot say which extras were chosen);
- ``pylock.toml`` / ``pylock.<name>.toml`` (PEP 751, ``lock-version = "1.x"``): the packages whose
  ``marker`` holds here, with no extras and the default groups;
- a requirements file of exact pins (``name==version``): comments, line continuations, extras,
  environment markers, ``--hash`` options, ``-r``/``-c`` includes and index options are handled;
  editable installs (the project itself) are skipped with a note; anything else that is not an
  exact pin (``>=``, a VCS or sdist URL) is refused with a one-line error, because it does not say
  which version the run used.

A locked package drifts when it is installed in another version, or not installed. A lock that pins
no build label (``torch==2.13.0``) is matched by a ``+cpu`` or ``+cu128`` build alike, as pip matches
it; that is reported as ``build`` (not drift) because two such builds can compute differently.
Installed numerics packages the lock does not name are reported as ``unlocked`` (not drift either).
Drift is ranked by what it can do to the numbers: frameworks first, then BLAS and math kernels,
then CUDA libraries, then other numerics packages, then the rest.

Markers and versions are evaluated with the ``packaging`` distribution (imported when needed).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata as _md
import os
import platform
import re
import shlex
import sys
import tomllib
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ._errors import FrameworkMissingError, TwinrunError
from .env import NUMERICS_PACKAGES, OTHER_PACKAGES

__all__ = [
    "BadLockError",
    "Drift",
    "Impact",
    "Lock",
    "LockCheck",
    "LockFingerprint",
    "LockedPackage",
    "check",
    "find_lock",
    "freeze",
    "impact",
    "installed",
    "lock_fingerprint",
    "read_lock",
]


class BadLockError(TwinrunError, ValueError):
    """A lock file that cannot be read, or says something twinrun cannot compare (CLI exit 2)."""


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


# --- markers and versions (packaging) -----------------------------------------------------------------

def _packaging() -> Any:
    try:
        import packaging.markers
        import packaging.version
    except ImportError:
        raise FrameworkMissingError("reading a lock needs the 'packaging' distribution: pip install packaging") \
            from None
    return packaging


def _marker_holds(text: str, where: str, extras: frozenset[str] = frozenset(),
                  groups: frozenset[str] = frozenset()) -> bool:
    pk = _packaging()
    try:
        marker = pk.markers.Marker(text)
    except pk.markers.InvalidMarker as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__  # packaging draws a caret below
        raise BadLockError(f"{where}: bad environment marker {text!r} ({reason}); fix or remove it") from None
    env: dict[str, Any] = {"extra": ""}
    try:  # PEP 751 markers may test the chosen extras and groups (packaging >= 25 knows them)
        return bool(marker.evaluate({**env, "extras": extras, "dependency_groups": groups}, "lock_file"))
    except TypeError:
        return bool(marker.evaluate(env))
    except pk.markers.UndefinedEnvironmentName as e:
        raise BadLockError(f"{where}: marker {text!r} uses a name this Python cannot evaluate ({e}); "
                           "upgrade the 'packaging' distribution") from None


def _version(text: str, where: str) -> Any:
    pk = _packaging()
    try:
        return pk.version.Version(text)
    except pk.version.InvalidVersion:
        raise BadLockError(f"{where}: {text!r} is not a version (PEP 440); pin an exact version such as 1.2.3") \
            from None


# --- reading ----------------------------------------------------------------------------------------

def _read_bytes(path: Path, what: str = "lock") -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BadLockError(f"{path}: no such {what} file; give a uv.lock, pylock.toml or requirements.txt, "
                           "or write one with: twinrun env freeze -o requirements.lock.txt") from None
    except IsADirectoryError:
        raise BadLockError(f"{path} is a folder; give the lock file in it (uv.lock, pylock.toml, "
                           "requirements.txt)") from None
    except OSError as e:
        raise BadLockError(f"{path}: cannot read it ({e.strerror}); check its permissions") from None


def lock_format(path: Path, data: bytes) -> str:
    """``uv.lock``, ``pylock.toml`` or ``requirements``: by the file's name, else by its content."""
    name = path.name.lower()
    if name == "uv.lock":
        return "uv.lock"
    if name == "pylock.toml" or (name.startswith("pylock.") and name.endswith(".toml")):
        return "pylock.toml"
    if name.endswith((".txt", ".in", ".pip")):
        return "requirements"
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return "requirements"
    if "lock-version" in doc:
        return "pylock.toml"
    if isinstance(doc.get("package"), list):
        return "uv.lock"
    raise BadLockError(f"{path}: a TOML file that is neither a uv.lock ([[package]] tables) nor a pylock.toml "
                       "(lock-version); give one of those, or a requirements.txt of == pins")


def read_lock(path: str | os.PathLike) -> Lock:
    """Read a lock; raise :class:`BadLockError` (one line, naming the file and the fix) when it is not one."""
    p = Path(path)
    data = _read_bytes(p)
    fmt = lock_format(p, data)
    sha = hashlib.sha256(data).hexdigest()
    if fmt == "requirements":
        packages, notes = _RequirementsReader().read(p)
    else:
        try:
            doc = tomllib.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadLockError(f"{p}: not UTF-8 text; give the {fmt} file as written by its tool") from None
        except tomllib.TOMLDecodeError as e:
            raise BadLockError(f"{p}: not valid TOML ({e}); give the {fmt} file as written by its tool") from None
        packages, notes = (_read_uv(doc, p) if fmt == "uv.lock" else _read_pylock(doc, p))
    return Lock(str(p), fmt, sha, tuple(packages), tuple(notes))


def _python_note(spec: Any, where: str) -> list[str]:
    if not isinstance(spec, str):
        return []
    pk = _packaging()
    import packaging.specifiers

    try:
        ok = pk.version.Version(platform.python_version()) in packaging.specifiers.SpecifierSet(spec)
    except packaging.specifiers.InvalidSpecifier:
        return [f"{where}: requires-python {spec!r} cannot be read; Python is not compared"]
    if ok:
        return []
    return [(f"this Python {platform.python_version()} is outside the lock's requires-python {spec!r}: "
             "the lock was resolved for another Python")]


# uv.lock -----------------------------------------------------------------------------------------------

def _read_uv(doc: dict, path: Path) -> tuple[list[LockedPackage], list[str]]:
    version = doc.get("version")
    if version != 1:
        raise BadLockError(f"{path}: uv.lock version {version!r}; this twinrun reads version 1 "
                           "(re-lock with a uv that writes version 1, or export: uv export --format pylock.toml)")
    raw = doc.get("package")
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        raise BadLockError(f"{path}: no [[package]] tables; is it a uv.lock?")
    notes = _python_note(doc.get("requires-python"), str(path))
    # (name, version) -> entry; a name may appear in several versions, one per resolution fork
    entries: dict[tuple[str, str | None], dict] = {}
    by_name: dict[str, list[dict]] = {}
    for i, e in enumerate(raw):
        name = e.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise BadLockError(f"{path}: package #{i + 1} has no valid name; is the file complete?")
        n = normalize(name)
        v = e.get("version")
        entries[(n, v if isinstance(v, str) else None)] = e
        by_name.setdefault(n, []).append(e)

    def fork_holds(e: dict) -> bool:
        forks = e.get("resolution-markers")
        where = f"{path}: package {e['name']}"
        return not forks or any(_marker_holds(m, where) for m in forks)

    def resolve(dep: dict, where: str) -> dict | None:
        n = normalize(str(dep.get("name", "")))
        if "version" in dep:
            return entries.get((n, dep["version"]))
        cands = [e for e in by_name.get(n, []) if fork_holds(e)] or by_name.get(n, [])
        return cands[0] if cands else None

    def source_kind(e: dict) -> str:
        src = e.get("source") or {}
        return next(iter(src), "registry") if isinstance(src, dict) else "registry"

    roots = [e for e in raw if source_kind(e) in ("editable", "virtual")]
    root_ids = {id(e) for e in roots}
    required: dict[int, dict] = {}
    optional: dict[int, dict] = {}

    def walk(start: list[tuple[dict, bool]]) -> None:
        todo = list(start)
        while todo:
            e, is_opt = todo.pop()
            seen = optional if is_opt else required
            if id(e) in seen or id(e) in required:
                continue
            seen[id(e)] = e
            where = f"{path}: package {e['name']}"
            edges: list[tuple[dict, bool]] = [(d, is_opt) for d in e.get("dependencies", [])]
            if id(e) in root_ids:  # a project's extras and dev groups: chosen or not, the lock cannot say
                for table in ("optional-dependencies", "dev-dependencies"):
                    for deps in (e.get(table) or {}).values():
                        edges += [(d, True) for d in deps]
            for dep, opt in edges:
                if not isinstance(dep, dict) or "name" not in dep:
                    continue
                if "marker" in dep and not _marker_holds(dep["marker"], where):
                    continue
                target = resolve(dep, where)
                if target is None:
                    raise BadLockError(f"{where} depends on {dep.get('name')!r}, which the lock does not list; "
                                       "re-lock with: uv lock")
                todo.append((target, opt))
                for extra in dep.get("extra", []):  # dask[distributed]: dask's own extra is needed too
                    for d in (target.get("optional-dependencies") or {}).get(extra, []):
                        todo.append(({"name": f"{target['name']}[{extra}]", "dependencies": [d]}, opt))

    if roots:
        walk([(e, False) for e in roots])
    else:
        notes.append("no project (editable or virtual source) in the lock: every package that fits this "
                     "platform is taken as required")
        walk([(e, False) for e in raw if fork_holds(e)])
    out = []
    for e in raw:
        if id(e) not in required and id(e) not in optional:
            continue
        if id(e) in root_ids:
            continue  # the project itself: its version is its source tree's
        kind = source_kind(e)
        where = f"{path}: package {e['name']}"
        v = e.get("version")
        if not isinstance(v, str):
            notes.append(f"{e['name']} ({kind} source) has no version in the lock: not compared")
            continue
        _version(v, where)
        hashes = tuple(str(w["hash"]) for w in e.get("wheels", []) if isinstance(w, dict) and "hash" in w)
        out.append(LockedPackage(normalize(e["name"]), v, where, hashes, optional=id(e) not in required))
    return out, notes


# pylock.toml ---------------------------------------------------------------------------------------------

def _read_pylock(doc: dict, path: Path) -> tuple[list[LockedPackage], list[str]]:
    lv = doc.get("lock-version")
    if not isinstance(lv, str) or not lv.startswith("1."):
        raise BadLockError(f"{path}: lock-version {lv!r}; this twinrun reads pylock.toml lock-version 1.x (PEP 751)")
    raw = doc.get("packages")
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        raise BadLockError(f"{path}: no [[packages]] tables; is it a pylock.toml (PEP 751)?")
    notes = _python_note(doc.get("requires-python"), str(path))
    envs = doc.get("environments")
    if isinstance(envs, list) and envs and not any(_marker_holds(m, f"{path}: environments") for m in envs):
        notes.append(f"none of the lock's environments ({'; '.join(map(str, envs))}) is this one: "
                     "the lock was made for another platform")
    groups = frozenset(map(str, doc.get("default-groups") or []))
    out: list[LockedPackage] = []
    seen: dict[str, str] = {}
    for i, e in enumerate(raw):
        name = e.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise BadLockError(f"{path}: packages[{i}] has no valid name; is the file complete?")
        where = f"{path}: packages[{i}] {name}"
        if "marker" in e and not _marker_holds(str(e["marker"]), where, frozenset(), groups):
            continue
        v = e.get("version")
        if not isinstance(v, str):
            kind = next((k for k in ("vcs", "directory", "archive") if k in e), "unknown")
            notes.append(f"{name} ({kind} source) has no version in the lock: not compared")
            continue
        _version(v, where)
        n = normalize(name)
        if n in seen and seen[n] != v:
            raise BadLockError(f"{where}: {name} is locked twice for this environment ({seen[n]} and {v}); "
                               "the markers of the two entries overlap: re-lock")
        seen[n] = v
        hashes = tuple(f"{algo}:{h}" for w in e.get("wheels", []) if isinstance(w, dict)
                       for algo, h in (w.get("hashes") or {}).items())
        out.append(LockedPackage(n, v, where, hashes))
    return out, notes


# requirements.txt ----------------------------------------------------------------------------------------

# Options that choose where packages come from, not which versions: accepted and ignored.
_SOURCE_OPTIONS = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--trusted-host",
                   "--no-index", "--prefer-binary", "--pre", "--only-binary", "--no-binary", "--use-feature",
                   "--require-hashes"}
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?\s*"
                  r"(?P<op>===|==|~=|!=|>=|<=|>|<)?\s*(?P<version>[^\s;,]*)\s*(?P<more>,[^;]*)?$")
_COMMENT = re.compile(r"(^|\s+)#.*$")  # pip's: a # at the start or after whitespace
_WHEEL = re.compile(r"/(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-/]+)(-\d[^-/]*)?-[^-/]+-[^-/]+-[^-/]+\.whl$")


class _RequirementsReader:
    """A requirements file of exact pins, its includes followed; everything else refused in one line."""

    def __init__(self) -> None:
        self.pins: dict[str, LockedPackage] = {}
        self.notes: list[str] = []
        self.stack: list[Path] = []

    def read(self, path: Path) -> tuple[list[LockedPackage], list[str]]:
        self._file(path)
        if not self.pins:
            raise BadLockError(f"{path}: no pinned package (name==version) in it; write a lock with: "
                               "twinrun env freeze -o requirements.lock.txt")
        return list(self.pins.values()), self.notes

    def _file(self, path: Path) -> None:
        real = path.resolve()
        if real in self.stack:
            chain = " -> ".join(p.name for p in [*self.stack, real])
            raise BadLockError(f"{path}: includes itself ({chain}); remove the -r line that closes the loop")
        data = _read_bytes(path, "requirements")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BadLockError(f"{path}: not UTF-8 text; is it a requirements file?") from None
        self.stack.append(real)
        try:
            for lineno, line in _logical_lines(text):
                self._line(path, lineno, line)
        finally:
            self.stack.pop()

    def _line(self, path: Path, lineno: int, line: str) -> None:
        where = f"{path}:{lineno}"
        line = _COMMENT.sub("", line).strip()
        if not line:
            return
        if line.startswith("-"):
            self._option(path, where, line)
            return
        # pip's split: the requirement runs up to the first word that starts with "-" (its options:
        # --hash); the requirement keeps its quotes, which its marker needs
        words = line.split()
        cut = next((i for i, w in enumerate(words) if w.startswith("-")), len(words))
        spec, _, marker = " ".join(words[:cut]).partition(";")
        hashes = []
        opts = _split(" ".join(words[cut:]), where)
        i = 0
        while i < len(opts):
            opt, eq, value = opts[i].partition("=")
            if opt != "--hash":
                raise BadLockError(f"{where}: option {opts[i]} after a requirement; only --hash may follow one")
            if not eq:
                value = opts[i + 1] if i + 1 < len(opts) else ""
                i += 1
            if not value:
                raise BadLockError(f"{where}: --hash without a value; write --hash=sha256:<hex>")
            hashes.append(value)
            i += 1
        marker = marker.strip()
        if marker and not _marker_holds(marker, where):
            return
        self._pin(spec.strip(), where, tuple(hashes))

    def _option(self, path: Path, where: str, line: str) -> None:
        words = _split(line, where)
        opt, _, value = words[0].partition("=")
        if opt in ("-r", "--requirement", "-c", "--constraint"):
            target = value or (words[1] if len(words) > 1 else "")
            if not target:
                raise BadLockError(f"{where}: {opt} names no file; give the file to include")
            if "://" in target:
                raise BadLockError(f"{where}: {opt} {target} is a URL; twinrun reads local files only: "
                                   "download it and include the copy")
            self._file(path.parent / target)
            return
        if opt in ("-e", "--editable"):  # the project itself, as uv export and pip freeze write it
            self.notes.append(f"{where}: editable install {value or ' '.join(words[1:])}: its version is "
                              "its source tree's; not compared")
            return
        if opt in _SOURCE_OPTIONS:
            self.notes.append(f"{where}: {opt} chooses where packages come from; not compared")
            return
        raise BadLockError(f"{where}: unknown option {opt}; a lock has name==version lines, -r/-c includes "
                           "and index options")

    def _pin(self, spec: str, where: str, hashes: tuple[str, ...]) -> None:
        if " @ " in spec or spec.startswith(("http:", "https:", "file:", "git+")) or "://" in spec:
            name, _, url = spec.partition("@")
            m = _WHEEL.search(url.strip())
            if not m or not name.strip():
                raise BadLockError(f"{where}: {spec!r} is a URL requirement, not a version pin; pin name==version")
            name, version = name.strip(), m.group("version")
        else:
            m = _PIN.match(spec)
            if not m or not _NAME.match(m.group("name")):
                raise BadLockError(f"{where}: {spec!r} is not a requirement; write name==version")
            name, op, version = m.group("name"), m.group("op"), m.group("version")
            if op not in ("==", "===") or m.group("more") or not version or "*" in version:
                raise BadLockError(f"{where}: {spec!r} is not an exact pin; a lock pins every package with "
                                   "== (write one with: twinrun env freeze)")
        _version(version, where)
        n = normalize(name)
        old = self.pins.get(n)
        if old is not None and old.version != version:
            raise BadLockError(f"{where}: {name} is pinned twice, to {old.version} ({old.where}) and {version}; "
                               "keep one")
        self.pins[n] = LockedPackage(n, version, where, hashes or (old.hashes if old else ()))


def _split(text: str, where: str) -> list[str]:
    try:
        return shlex.split(text, posix=True)
    except ValueError as e:
        raise BadLockError(f"{where}: cannot split {text!r} ({e}); check its quotes") from None


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) with backslash continuations joined, as pip reads them."""
    out, buf, start = [], "", 0
    for i, line in enumerate(text.splitlines(), 1):
        if not buf:
            start = i
        if line.endswith("\\") and not line.lstrip().startswith("#"):
            buf += line[:-1] + " "
            continue
        out.append((start, buf + line))
        buf = ""
    if buf:
        out.append((start, buf))
    return out


# --- comparing ----------------------------------------------------------------------------------------

def installed() -> dict[str, str]:
    """``{normalised name: version}`` of the distributions this Python imports (first on sys.path wins)."""
    out: dict[str, str] = {}
    for dist in _md.distributions():
        try:
            name = dist.metadata["Name"]
        except Exception:  # noqa: BLE001, S112 - one broken dist-info must not hide the others
            continue
        if name:
            out.setdefault(normalize(name), dist.version)
    return out


def check(lock: Lock | str | os.PathLike, have: dict[str, str] | None = None) -> LockCheck:
    """Compare the installed distributions (or ``have``) with ``lock``; the differences ranked.

    >>> c = check("requirements.lock.txt")                  # doctest: +SKIP
    >>> c.drifted, c.to_dict()["counts"]                    # doctest: +SKIP
    (False, {'different': 0, 'missing': 0, 'build': 1, 'unlocked': 0})
    """
    if not isinstance(lock, Lock):
        lock = read_lock(lock)
    have = installed() if have is None else {normalize(k): v for k, v in have.items()}
    diffs: list[Drift] = []
    locked_names = set()
    for p in lock.packages:
        locked_names.add(p.name)
        inst = have.get(p.name)
        imp = impact(p.name)
        if inst is None:
            if p.optional:
                continue  # an extra or a group that was not chosen: not drift
            diffs.append(Drift(p.name, p.version, None, DriftStatus.MISSING, imp,
                               f"locked at {p.version} but not installed; {_WHY[imp]}"))
            continue
        lv, iv = _version(p.version, p.where), _safe_version(inst)
        if iv is not None and lv == iv:
            continue
        if iv is not None and lv.local is None and iv.local is not None and lv.public == iv.public:
            diffs.append(Drift(p.name, p.version, inst, DriftStatus.BUILD, imp,
                               f"the lock pins no build, so {p.version}+<any build> matches it; "
                               f"pin {p.name}=={inst} to say which build the run used"))
            continue
        diffs.append(Drift(p.name, p.version, inst, DriftStatus.DIFFERENT, imp, _WHY[imp]))
    for name, inst in have.items():
        imp = impact(name)
        if name not in locked_names and imp.rank == "numerics":
            diffs.append(Drift(name, None, inst, DriftStatus.UNLOCKED, imp,
                               f"installed but not in the lock: the lock does not say which {name} a run uses"))
    status_order = list(DriftStatus)
    diffs.sort(key=lambda d: (not d.is_drift, _ORDER.index(d.impact), status_order.index(d.status), d.name))
    return LockCheck(lock.path, lock.format, lock.sha256, len(lock.packages), tuple(diffs), lock.notes)


def _safe_version(text: str) -> Any:
    pk = _packaging()
    try:
        return pk.version.Version(text)
    except pk.version.InvalidVersion:
        return None


# --- writing ------------------------------------------------------------------------------------------

_TORCH_LOCAL = re.compile(r"^(cpu|cu\d+|rocm[\d.]+|xpu)$")


def _torch_index(local: str) -> str:
    return f"https://download.pytorch.org/whl/{local}"


def freeze(path: str | os.PathLike | None = None, *, everything: bool = False,
           have: dict[str, str] | None = None, exclude: tuple[str, ...] = ("twinrun",)) -> str:
    """Exact pins (``name==version``) of the installed numerics-relevant distributions, as text.

    With ``everything`` every installed distribution is pinned (but ``exclude``). A PyTorch-family
    build with a local label (``+cpu``, ``+cu128``) gets a comment naming the index pip finds it on.
    With ``path`` the text is also written there; an existing file is replaced only if it is a
    lock that twinrun wrote.

    >>> "numpy==" in freeze()      # doctest: +SKIP
    True
    """
    have = installed() if have is None else {normalize(k): v for k, v in have.items()}
    skip = {normalize(x) for x in exclude}
    names = sorted(n for n in have if n not in skip and (everything or impact(n).rank == "numerics"))
    names.sort(key=lambda n: _ORDER.index(impact(n)))
    hints: dict[str, list[str]] = {}
    for n in names:
        local = have[n].partition("+")[2]
        if local and (n in _FRAMEWORKS or n.startswith("pytorch-triton")) and _TORCH_LOCAL.match(local):
            hints.setdefault(local, []).append(f"{n}=={have[n]}")
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    what = "installed" if everything else "numerics-relevant"
    lines = [f"{_FREEZE_MARK}: exact pins of the {what} distributions",
             f"# Python {platform.python_version()} on {platform.system()} {platform.machine()}, {now}",
             "# check an environment against it with: twinrun env check --lock THIS_FILE"]
    for local, pins in sorted(hints.items()):
        lines.append(f"# {', '.join(pins)}: a {local} build, not on PyPI; install with")
        lines.append(f"# --extra-index-url {_torch_index(local)}")
    lines += [f"{n}=={have[n]}" for n in names]
    text = "\n".join(lines) + "\n"
    if path is not None:
        _write_lock(Path(path), text)
    return text


_FREEZE_MARK = "# twinrun env freeze"


def _write_lock(path: Path, text: str) -> None:
    if path.exists():
        try:
            head = path.read_text(encoding="utf-8", errors="replace")[:len(_FREEZE_MARK)]
        except OSError as e:
            raise BadLockError(f"{path}: cannot read it ({e.strerror}); choose another -o") from None
        if head != _FREEZE_MARK:
            raise BadLockError(f"{path} exists and was not written by twinrun env freeze; "
                               "choose another -o or remove it")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise BadLockError(f"cannot write {path}: {e.strerror}; choose a writable path for -o") from None


# --- finding the lock of a run -----------------------------------------------------------------------------

_FIXED_NAMES = ("uv.lock", "pylock.toml")


def find_lock(start: str | os.PathLike | None = None) -> tuple[Path, tuple[Path, ...]] | None:
    """The lock of the project around ``start`` (a script or folder; default the script being run).

    Looks in ``start``'s folder, then its parents up to the first one holding ``.git`` (a project's
    root) or the filesystem's root: ``uv.lock``, then ``pylock.toml``, ``pylock.*.toml``,
    ``requirements.txt``, ``requirements*.txt``. Returns the chosen file and the other candidates
    of that folder, or None.
    """
    if start is None:
        start = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-m") else os.getcwd()
    folder = Path(start).resolve()
    if not folder.is_dir():
        folder = folder.parent
    for d in (folder, *folder.parents):
        cands = [d / n for n in _FIXED_NAMES if (d / n).is_file()]
        cands += sorted(p for p in d.glob("pylock.*.toml") if p.is_file())
        reqs = sorted(p for p in d.glob("requirements*.txt") if p.is_file())
        cands += sorted(reqs, key=lambda p: p.name != "requirements.txt")
        if cands:
            return cands[0], tuple(cands[1:])
        if (d / ".git").exists():
            break
    return None


def lock_fingerprint(path: str | os.PathLike | None = None, *, script: str | os.PathLike | None = None
                     ) -> LockFingerprint | None:
    """Path, format and sha256 of the given lock, or of the one :func:`find_lock` finds near ``script``.

    None when no lock is given or found. A given lock that cannot be read raises :class:`BadLockError`;
    the fingerprint hashes the file's bytes and does not parse it, so it costs microseconds.
    """
    if path is not None:
        p = Path(path)
        data = _read_bytes(p)
        return LockFingerprint(str(p.resolve()), lock_format(p, data), hashlib.sha256(data).hexdigest(), False)
    found = find_lock(script)
    if found is None:
        return None
    p, others = found
    try:
        data = p.read_bytes()
        fmt = lock_format(p, data)
    except (OSError, BadLockError):
        return None  # a lock found by search that cannot be read must not stop a run
    return LockFingerprint(str(p), fmt, hashlib.sha256(data).hexdigest(), True, tuple(str(o) for o in others))
