"""Keras helpers.

``model.fit`` needs nothing: under ``twinrun run train.py`` every training batch is recorded, on the
tensorflow, torch and jax backends. Under ``with twinrun.record(...)`` on torch or jax, or to be
explicit, pass ``callbacks=[twinrun.keras.Callback()]``. Custom loops with ``tf.GradientTape`` say where
a step ends with ``twinrun.keras.Tracer``; ``seed_generator`` gives a Keras ``SeedGenerator`` on a named
stream.

``Callback`` imports Keras only; ``Tracer``, ``seed_generator`` and ``variable_name`` import TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .frameworks.tensorflow.keras_callback import Callback
    from .frameworks.tensorflow.keras_trace import Tracer, seed_generator, variable_name

__all__ = ["Callback", "Tracer", "seed_generator", "variable_name"]


def __getattr__(name: str) -> Any:
    # Loaded on first use, so that Keras on the torch or jax backend never imports TensorFlow for the callback.
    if name == "Callback":
        from .frameworks.tensorflow.keras_callback import Callback

        return Callback
    if name in ("Tracer", "seed_generator", "variable_name"):
        from .frameworks.tensorflow import keras_trace

        return getattr(keras_trace, name)
    raise AttributeError(f"module 'twinrun.keras' has no attribute {name!r}")


def __dir__() -> list[str]:
    return list(__all__)
