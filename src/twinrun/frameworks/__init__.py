"""Framework adapters: one package per framework, found through a documented registry.

``adapter_class(name)`` gives an adapter's class without importing its framework (what doctor needs);
``get(name)`` creates the adapter, importing the framework; ``loaded()`` gives the adapters of the
frameworks the program has already imported. Nothing here imports a framework at import time.
``when_imported`` runs a callback once a module is imported (now, or right after its import), which
is how twinrun seeds, switches and hooks a framework the program imports after twinrun started.

Adding a framework: write its package here (an ``Adapter`` subclass, see ``base.py``) and add its
name to ``NAMES``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from .._errors import FrameworkMissingError, UsageError
from .base import Adapter, EnvVar, FixWords, Intervention, RecorderLike, Switch, Variant

__all__ = [
    "NAMES",
    "Adapter",
    "EnvVar",
    "FixWords",
    "Intervention",
    "RecorderLike",
    "Switch",
    "Variant",
    "adapter_class",
    "end_process_groups",
    "env_vars",
    "get",
    "interventions",
    "is_loaded",
    "isa_variants",
    "launcher",
    "loaded",
    "module_of",
    "primary",
    "process_group",
    "thread_variant",
    "used",
    "when_imported",
    "words",
]

# The registry: twinrun's framework names, in the order adapters are consulted (numpy first: every
# program has it). Each name is a package of this folder.
NAMES = ("numpy", "torch", "tensorflow", "jax")
# Instances, created on first use (a cache: one adapter per framework and process).
_instances: dict[str, Adapter] = {}


def adapter_class(name: str) -> type[Adapter]:
    """The adapter class of ``name``; imports the adapter's package, never the framework."""
    if name not in NAMES:
        raise UsageError(f"unknown framework {name!r}; use one of {', '.join(NAMES)}")
    package = importlib.import_module(f"{__name__}.{name}")
    cls: type[Adapter] = package.ADAPTER
    return cls


def module_of(name: str) -> str:
    """The top-level module whose import activates framework ``name``."""
    return adapter_class(name).module


def is_loaded(name: str) -> bool:
    """Whether the user's program has imported the framework (twinrun never imports it for them)."""
    return module_of(name) in sys.modules


def get(name: str) -> Adapter:
    """The adapter for ``name``, importing its framework if needed."""
    adapter = _instances.get(name)
    if adapter is None:
        cls = adapter_class(name)
        try:
            importlib.import_module(cls.module)
        except ImportError:
            hint = f"pip install 'twinrun[{cls.extra}]'" if cls.extra else f"pip install {cls.module}"
            raise FrameworkMissingError(f"{name} is not installed; install it with: {hint}") from None
        adapter = _instances[name] = cls()
    return adapter


def loaded() -> list[Adapter]:
    """Adapters of the frameworks already imported, in registry order."""
    return [get(name) for name in NAMES if is_loaded(name)]


def used() -> list[str]:
    """The frameworks the program has used, by twinrun's names (plus ``keras``); a trace stores them
    at close, so doctor knows which kernels a run used."""
    names = [a.name for a in loaded() if a.in_use()]
    return names + (["keras"] if "keras" in sys.modules else [])


# --- multi-process runs --------------------------------------------------------------------------

def launcher(nproc: int) -> list[str]:
    """The command that starts ``nproc`` ranks of a Python module (before ``-m MODULE``): PyTorch's
    ``torch.distributed.run``, the one launcher twinrun drives. Never imports a framework."""
    cmd = adapter_class("torch").launcher(nproc)
    assert cmd is not None
    return cmd


def process_group() -> dict[str, Any] | None:
    """The started process group of a loaded framework (backend, rank, world size), or None."""
    for adapter in loaded():
        group = adapter.process_group()
        if group is not None:
            return group
    return None


def end_process_groups() -> list[str]:
    """Shut down the process groups the script left started; the frameworks that had one."""
    return [a.name for a in loaded() if a.end_process_group()]


# --- questions about several frameworks at once (doctor asks them) -------------------------------

def primary(names: Sequence[str]) -> str:
    """The framework whose words a fix uses for a run that used ``names``: the one that trains (Keras
    counts as TensorFlow's), else NumPy."""
    present = {"tensorflow" if n == "keras" else n for n in names}
    return next((n for n in ("torch", "tensorflow", "jax") if n in present), "numpy")


def words(names: Sequence[str]) -> FixWords:
    """How fix sentences speak of the run's main framework."""
    return adapter_class(primary(names)).words


def env_vars() -> list[EnvVar]:
    """Every framework's environment variables (exclusions first, so that they win)."""
    found = [v for name in NAMES for v in adapter_class(name).env_vars]
    return sorted(found, key=lambda v: v.rank != "excluded")


def interventions() -> dict[str, Intervention]:
    """Every framework's interventions, by name."""
    out: dict[str, Intervention] = {}
    for name in NAMES:
        for iv in adapter_class(name).interventions():
            out[iv.name] = iv
    return out


def isa_variants(names: Sequence[str], flags: set[str],
                 environ: Mapping[str, str]) -> tuple[list[Variant], list[str]]:
    """The lower-instruction-set reruns of the frameworks in ``names`` (a setting two frameworks share,
    such as ``ONEDNN_MAX_CPU_ISA``, once), and why others cannot be tried here."""
    variants: list[Variant] = []
    why_not: list[str] = []
    present = {"tensorflow" if n == "keras" else n for n in names}
    for name in NAMES:
        if name not in present:
            continue
        vs, why = adapter_class(name).isa_variants(flags, environ)
        seen = [dict(v.env) for v in variants]
        variants += [v for v in vs if dict(v.env) not in seen]
        why_not += why
    return variants, why_not


def thread_variant(names: Sequence[str], count: int) -> tuple[Variant | None, list[str]]:
    """One rerun with ``count`` threads for every framework in ``names`` at once, and why some cannot
    be set. NumPy's thread setting is used only when no other framework brings one (another framework's
    would be a second change: TensorFlow's ``--threads`` also switches on op determinism)."""
    present = [n for n in NAMES if n in {"tensorflow" if x == "keras" else x for x in names}]
    parts: list[Variant] = []
    notes: list[str] = []
    for name in present:
        if name == "numpy":
            continue
        v = adapter_class(name).thread_variant(count)
        if isinstance(v, Variant):
            parts.append(v)
        elif isinstance(v, str):
            notes.append(v)
    if not parts and not notes:
        v = adapter_class("numpy").thread_variant(count)
        if isinstance(v, Variant):
            parts.append(v)
    if not parts:
        return None, notes
    env: dict[str, str] = {}
    for p in parts:
        env.update(p.env)
    threads = next((p.threads for p in parts if p.threads is not None), None)
    merged = Variant("+".join(p.name for p in parts), "thread-count",
                     f"{count} thread{'s' if count > 1 else ''} ({', '.join(p.name for p in parts)})",
                     env=env, threads=threads,
                     interventions=tuple(i for p in parts for i in p.interventions))
    return merged, notes


def default_threads(names: Sequence[str]) -> int:
    """The thread count the run's main framework uses by default here."""
    from ..cpu import usable_cpus

    count = adapter_class(primary(names)).default_threads()
    return count or usable_cpus()


# --- acting on a framework imported later -------------------------------------------------------
# Callbacks waiting for a module, by module name (a registry; guarded by _lock).
_pending: dict[str, list[Callable[[ModuleType], Any]]] = {}
_lock = threading.Lock()


class _AfterImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of a watched module to run callbacks after it."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module: ModuleType, _original: Callable[[ModuleType], None] = original,
                        _name: str = fullname) -> None:
            _original(module)
            with _lock:
                callbacks = _pending.pop(_name, [])
            for cb in callbacks:
                cb(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


_finder = _AfterImportFinder()


def when_imported(module_name: str, callback: Callable[[ModuleType], Any]) -> None:
    """Call ``callback(module)`` once ``module_name`` is imported: now if it already is, else right after.

    twinrun uses this to seed or hook a framework the user's program imports after twinrun started,
    without importing it itself.
    """
    mod = sys.modules.get(module_name)
    if mod is not None:
        callback(mod)
        return
    with _lock:
        _pending.setdefault(module_name, []).append(callback)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
