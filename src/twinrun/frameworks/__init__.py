"""Framework adapters, created lazily.

``loaded()`` gives the adapters of frameworks the program has already imported; ``get(name)``
imports one on request. Nothing here imports a framework at import time.
"""

from __future__ import annotations

import importlib
import sys

from .._errors import FrameworkMissingError, UsageError
from ._base import Adapter, Switch

__all__ = ["Adapter", "Switch", "NAMES", "get", "loaded", "is_loaded"]

# twinrun name -> (top-level module that activates it, adapter module, class, pip extra)
_REGISTRY = {
    "numpy": ("numpy", "twinrun.frameworks.numpy", "NumpyAdapter", None),
    "torch": ("torch", "twinrun.frameworks.torch", "TorchAdapter", "torch"),
    "tensorflow": ("tensorflow", "twinrun.frameworks.tensorflow", "TensorflowAdapter", "tensorflow"),
    "jax": ("jax", "twinrun.frameworks.jax", "JaxAdapter", "jax"),
}
NAMES = tuple(_REGISTRY)
_cache: dict[str, Adapter] = {}


def is_loaded(name: str) -> bool:
    """Whether the user's program has imported the framework (twinrun never imports it for them)."""
    return _REGISTRY[name][0] in sys.modules


def get(name: str) -> Adapter:
    """The adapter for ``name``, importing its framework if needed."""
    if name not in _REGISTRY:
        raise UsageError(f"unknown framework {name!r}; use one of {', '.join(NAMES)}")
    if name not in _cache:
        top, modname, cls, extra = _REGISTRY[name]
        try:
            importlib.import_module(top)
        except ImportError:
            hint = f"pip install 'twinrun[{extra}]'" if extra else f"pip install {top}"
            raise FrameworkMissingError(f"{name} is not installed; install it with: {hint}") from None
        _cache[name] = getattr(importlib.import_module(modname), cls)()
    return _cache[name]


def loaded() -> list[Adapter]:
    """Adapters of the frameworks already imported, in registry order."""
    return [get(name) for name in NAMES if is_loaded(name)]


# --- acting on a framework imported later -------------------------------------------------------
import importlib.abc  # noqa: E402
import importlib.machinery  # noqa: E402
import threading  # noqa: E402

_pending: dict[str, list] = {}
_lock = threading.Lock()


class _AfterImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of a watched module to run callbacks after it."""

    def find_spec(self, fullname, path, target=None):
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

        def exec_module(module, _original=original, _name=fullname):
            _original(module)
            with _lock:
                callbacks = _pending.pop(_name, [])
            for cb in callbacks:
                cb(module)

        loader.exec_module = exec_module
        return spec


_finder = _AfterImportFinder()


def when_imported(module_name: str, callback) -> None:
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


__all__ += ["when_imported"]
