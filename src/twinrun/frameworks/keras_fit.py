"""Keras 3 ``fit`` on the torch and jax backends: a ``twinrun.keras.Callback`` in every ``fit``.

Installed by the torch and jax adapters (Keras on either backend imports that framework), once per
recorder; Keras is not imported here: the patch waits for Keras's callback module, and the callback
class is imported at the first ``fit`` (Keras fully imported by then). On the tensorflow backend
nothing is added: ``tensorflow/keras_trace`` records ``fit`` as before.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .base import RecorderLike

__all__ = ["install"]

CALLBACK_LIST = "keras.src.callbacks.callback_list"
_installed: weakref.WeakSet[Any] = weakref.WeakSet()   # recorders whose fit callback is installed


def install(recorder: RecorderLike) -> Callable[[], None]:
    """Add a ``twinrun.keras.Callback`` to every training ``fit`` while ``recorder`` records."""
    from . import when_imported

    if recorder in _installed:
        return lambda: None
    _installed.add(recorder)
    state: dict[str, Any] = {"active": True, "undo": None}

    def patch(module: ModuleType) -> None:
        if not state["active"] or state["undo"] is not None:
            return
        cls = module.CallbackList
        original = cls.__init__

        def __init__(self: Any, callbacks: Any = None, *args: Any, **kwargs: Any) -> None:
            callbacks = list(callbacks or [])
            if kwargs.get("model") is not None and _backend() in ("torch", "jax"):
                from .tensorflow.keras_callback import Callback

                if not any(isinstance(c, Callback) for c in callbacks):
                    callbacks.append(Callback(recorder))
            original(self, callbacks, *args, **kwargs)

        cls.__init__ = __init__

        def undo() -> None:
            if cls.__init__ is __init__:
                cls.__init__ = original

        state["undo"] = undo

    when_imported(CALLBACK_LIST, patch)

    def uninstall() -> None:
        state["active"] = False
        _installed.discard(recorder)
        if state["undo"] is not None:
            state["undo"]()
            state["undo"] = None

    return uninstall


def _backend() -> str:
    import keras

    return str(keras.backend.backend())
