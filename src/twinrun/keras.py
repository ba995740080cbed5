"""Keras / TensorFlow helpers.

``model.fit`` needs nothing: under ``twinrun run train.py`` (or ``with twinrun.record(...)``) every
training batch is recorded. Custom loops with ``tf.GradientTape`` say where a step ends with
``twinrun.keras.Tracer``; ``seed_generator`` gives a Keras ``SeedGenerator`` on a named stream.

Importing this module imports TensorFlow and Keras (you asked for them by name).
"""

from __future__ import annotations

from .frameworks.tensorflow.keras_trace import Tracer, seed_generator, variable_name

__all__ = ["Tracer", "seed_generator", "variable_name"]
