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
import sys
from pathlib import Path
from typing import Any

from .._artifacts import FREEZE_MARKER
from .._errors import BadLockError
from .model import (
    _FRAMEWORKS,
    _ORDER,
    _WHY,
    Drift,
    DriftStatus,
    Impact,
    Lock,
    LockCheck,
    LockedPackage,
    LockFingerprint,
    impact,
    normalize,
)
from .read import _packaging, _read_bytes, _version, lock_format, read_lock

__all__ = [
    "BadLockError",
    "Drift",
    "DriftStatus",
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
    "normalize",
    "read_lock",
]

# --- comparing ----------------------------------------------------------------------------------------

def installed() -> dict[str, str]:
    """``{normalised name: version}`` of the distributions this Python imports (first on sys.path wins)."""
    out: dict[str, str] = {}
    for dist in _md.distributions():
        try:
            name = dist.metadata["Name"]
        except Exception:  # noqa: BLE001 - one broken dist-info must not hide the others
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


_FREEZE_MARK = FREEZE_MARKER.decode()   # how _artifacts knows a freeze it may replace


def _write_lock(path: Path, text: str) -> None:
    """Only onto nothing, an empty file or an earlier freeze (never a FIFO, a folder or a user's file),
    through a temporary name renamed into place (``twinrun._artifacts``, issue 12)."""
    from .._artifacts import Kind, write_text
    from .._errors import UsageError

    try:
        write_text(path, text, Kind.LOCK)
    except UsageError as e:
        why = str(e)
        if "exists and is not" in why:
            why = f"{path} exists and was not written by twinrun env freeze; choose another -o or remove it"
        raise BadLockError(why) from None


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
