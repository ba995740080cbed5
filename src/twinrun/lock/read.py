"""Reading a lock: ``uv.lock``, ``pylock.toml`` or a requirements file of exact pins, never executed."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

from .._errors import BadLockError, FrameworkMissingError
from .model import _NAME, Lock, LockedPackage, normalize

__all__ = ["lock_format", "read_lock"]

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
    from .._decode import read_bounded

    if path.exists() and not path.is_dir():
        # a file from anywhere: a regular one (a FIFO would block), at most 64 MiB (issue 12)
        return read_bounded(path, what=f"a {what} file", error=BadLockError, max_bytes=64 * 2**20,
                            fix="give a uv.lock, pylock.toml or requirements.txt")
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
