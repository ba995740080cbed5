"""Deterministic mode: switch every loaded framework to its deterministic settings, report, restore.

>>> import twinrun
>>> report = twinrun.deterministic(threads=1)        # doctest: +SKIP
>>> [s.name for s in report.settings if not s.took_effect]   # doctest: +SKIP
>>> with twinrun.deterministic(strict=True):         # doctest: +SKIP
...     train()                                      # every setting is restored afterwards

Each framework adapter (``twinrun.frameworks``) lists its ``Switch``es; twinrun reads each one
(``before``), sets the wanted value, reads it again (``after``) and records whether it took effect and
whether it came too late to act (e.g. ``CUBLAS_WORKSPACE_CONFIG`` after CUDA initialised). Frameworks
imported after the call are switched at their import, and that is reported too.

Process-level switches belong to this module: with ``threads=N`` the BLAS and OpenMP libraries already
loaded are limited through threadpoolctl, and the ``OMP_NUM_THREADS`` family is set for child processes.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

from . import frameworks as _fw
from ._errors import UsageError
from .frameworks import Switch

__all__ = ["THREAD_ENV_VARS", "DeterminismReport", "Setting", "current_settings", "deterministic"]

# Variables read at start-up by the thread pools of child processes (this process's pools have
# started already, so threadpoolctl and the framework switches act on those).
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)

_lock = threading.RLock()
_active: list[DeterminismReport] = []  # reports not yet restored, oldest first


@dataclass
class Setting:
    """One setting twinrun changed (or tried to): its value before, after, wanted, and why it matters."""

    framework: str          # "torch", "tensorflow", "jax", or "process"
    name: str
    before: Any
    after: Any
    want: Any
    took_effect: bool
    note: str = ""
    warning: str | None = None
    when: str = "call"      # "call", or "import" when applied as the framework was imported later

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DeterminismReport:
    """What ``deterministic()`` did. Also a context manager: leaving the block calls ``restore()``."""

    strict: bool
    threads: int | None
    frameworks: list[str]                   # the frameworks asked for (all, when None was passed)
    settings: list[Setting] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)   # not imported yet: switched when imported
    restored: bool = False
    _switches: list[tuple[Setting, Switch]] = field(default_factory=list, repr=False)
    _tp_covered: set[str] = field(default_factory=set, repr=False)

    @property
    def warnings(self) -> list[str]:
        """One line per setting that came too late or did not take effect."""
        out = []
        for s in self.settings:
            if s.warning:
                out.append(f"{s.framework}: {s.name}: {s.warning}")
            elif not s.took_effect:
                out.append(f"{s.framework}: {s.name} is {s.after!r}, not {s.want!r}, after setting it")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "strict": self.strict,
            "threads": self.threads,
            "frameworks": list(self.frameworks),
            "pending": list(self.pending),
            "restored": self.restored,
            "settings": [s.to_dict() for s in self.settings],
            "warnings": self.warnings,
        }

    def restore(self) -> None:
        """Put every setting back to its value before, newest first. Idempotent."""
        with _lock:
            if self.restored:
                return
            self.restored = True
            if self in _active:
                _active.remove(self)
            for setting, switch in reversed(self._switches):
                if not switch.restorable or setting.before == setting.after:
                    continue
                try:
                    switch.set(setting.before)
                except Exception as e:  # noqa: BLE001 - a failed restore must not hide the others
                    warnings.warn(f"twinrun could not restore {setting.name} to {setting.before!r}: {e}",
                                  RuntimeWarning, stacklevel=2)

    def __enter__(self) -> DeterminismReport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    # --- applying --------------------------------------------------------------------------------
    def _apply(self, framework: str, switch: Switch, when: str) -> Setting:
        before = switch.get()
        error = None
        try:
            switch.set(switch.want)
        except Exception as e:  # noqa: BLE001 - reported as a setting that did not take effect
            error = f"could not be set: {type(e).__name__}: {e}"
        after = switch.get()
        warning = error or (switch.too_late() if switch.too_late else None)
        setting = Setting(framework, switch.name, before, after, switch.want, after == switch.want,
                          switch.note, warning, when)
        self.settings.append(setting)
        self._switches.append((setting, switch))
        if warning:
            warnings.warn(f"twinrun.deterministic: {framework}: {switch.name}: {warning}",
                          RuntimeWarning, stacklevel=4)
        return setting

    def _apply_framework(self, name: str, when: str) -> None:
        adapter = _fw.get(name)
        for switch in adapter.switches(strict=self.strict, threads=self.threads):
            self._apply(name, switch, when)
        if self.threads is not None:
            # The framework may have brought its own BLAS or OpenMP runtime (torch ships libgomp).
            tp = _threadpool_switch(self.threads, exclude=self._tp_covered)
            if tp is not None:
                self._tp_covered |= set(tp.extra["libraries"])
                self._apply("process", tp, when)


def deterministic(strict: bool = False, threads: int | None = None,
                  frameworks: list[str] | tuple[str, ...] | str | None = None) -> DeterminismReport:
    """Switch the loaded frameworks (and those imported later) to deterministic settings.

    ``strict=True`` makes ops with no deterministic implementation raise (PyTorch); otherwise they
    warn. ``threads=N`` pins intra-op threads of torch, TensorFlow and the BLAS/OpenMP libraries, and
    sets ``OMP_NUM_THREADS`` and its family for child processes. ``frameworks`` limits the frameworks
    touched (default: every one the program imports); twinrun never imports one itself.

    Returns a ``DeterminismReport``; use it as a context manager to restore everything on exit:

    >>> with deterministic(threads=1) as report:     # doctest: +SKIP
    ...     train()
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(f"threads must be a positive integer, got {threads!r}")
    if isinstance(frameworks, str):
        frameworks = [f.strip() for f in frameworks.split(",") if f.strip()]
    names = list(_fw.NAMES) if frameworks is None else list(frameworks)
    for n in names:
        if n not in _fw.NAMES:
            raise UsageError(f"unknown framework {n!r} in frameworks=; use some of {', '.join(_fw.NAMES)}")
    report = DeterminismReport(strict=bool(strict), threads=threads, frameworks=names)
    with _lock:
        if threads is not None:
            tp = _threadpool_switch(threads, exclude=set())
            if tp is not None:
                report._tp_covered |= set(tp.extra["libraries"])
                report._apply("process", tp, "call")
            for var in THREAD_ENV_VARS:
                want = "1" if var == "TF_NUM_INTEROP_THREADS" else str(threads)
                report._apply("process", _env_var_switch(var, want), "call")
        for name in names:
            if _fw.is_loaded(name):
                report._apply_framework(name, "call")
            else:
                report.pending.append(name)
                _fw.when_imported(_fw.module_of(name), _on_import(report, name))
        _active.append(report)
    return report


def _on_import(report: DeterminismReport, name: str) -> Callable[[ModuleType], None]:
    def callback(_module: ModuleType) -> None:
        with _lock:
            if report.restored or name not in report.pending:
                return
            report.pending.remove(name)
            try:
                report._apply_framework(name, "import")
            except Exception as e:  # noqa: BLE001 - never break the user's import
                warnings.warn(f"twinrun.deterministic could not switch {name} at its import: "
                              f"{type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)

    return callback


def current_settings() -> dict[str, Any]:
    """The live determinism state of the loaded frameworks and of the process, JSON-ready.

    ``{"active": {...} | None, "process": {...}, "torch": {name: value}, ...}``: what a trace header
    records, read now rather than remembered from a report.
    """
    out: dict[str, Any] = {}
    with _lock:
        last = _active[-1] if _active else None
    out["active"] = None if last is None else {"strict": last.strict, "threads": last.threads}
    process: dict[str, Any] = {var: os.environ.get(var) for var in THREAD_ENV_VARS}
    tp = _threadpool_switch(1, exclude=set())
    process["threadpoolctl"] = tp.get() if tp is not None else {}
    out["process"] = process
    for adapter in _fw.loaded():
        # threads=1 only makes the adapters list their thread switches; nothing is set here.
        values = {}
        for sw in adapter.switches(strict=False, threads=1):
            try:
                values[sw.name] = sw.get()
            except Exception as e:  # noqa: BLE001 - a header is written whatever one framework's getter does
                values[sw.name] = f"<unreadable: {type(e).__name__}>"
        if values:
            out[adapter.name] = values
    return out


# --- process-level switches -------------------------------------------------------------------------
def _env_var_switch(var: str, want: str) -> Switch:
    def set_(value: str | None) -> None:
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value

    return Switch(var, lambda: os.environ.get(var), set_, want,
                  "read when a child process's thread pools start; this process's pools are set directly")


def threadpool_libraries() -> dict[str, Any]:
    """The BLAS/OpenMP libraries loaded now, by a stable key: ``{key: threadpoolctl controller}``.

    The key is ``owner:user_api:prefix`` where owner is the package that ships the library
    (``numpy``, ``torch``) or ``system``; paths and hash suffixes are left out so that two machines
    compare by what the library is, not where it lies.
    """
    from threadpoolctl import ThreadpoolController

    out: dict[str, Any] = {}
    for lib in ThreadpoolController().lib_controllers:
        key = f"{library_owner(lib.filepath)}:{lib.user_api}:{lib.prefix}"
        k, i = key, 2
        while k in out:
            k, i = f"{key}#{i}", i + 1
        out[k] = lib
    return out


def library_owner(filepath: str | None) -> str:
    """The package directory a shared library sits in (``numpy`` for ``.../numpy.libs/x.so``)."""
    parts = (filepath or "").replace("\\", "/").split("/")
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            i = parts.index(marker)
            if i + 1 < len(parts) - 1:
                return parts[i + 1].removesuffix(".libs").split("-")[0]
    return "system"


def _threadpool_switch(threads: int, exclude: set[str]) -> Switch | None:
    libs = {k: v for k, v in threadpool_libraries().items() if k not in exclude}
    if not libs:
        return None

    def get() -> dict[str, int]:
        return {k: lib.num_threads for k, lib in libs.items()}

    def set_(value: Any) -> None:
        for k, lib in libs.items():
            lib.set_num_threads(value[k] if isinstance(value, dict) else value)

    sw = Switch("threadpoolctl", get, set_, dict.fromkeys(libs, threads),
                "BLAS and OpenMP split sums across threads; another count sums in another order")
    sw.extra["libraries"] = list(libs)
    return sw

