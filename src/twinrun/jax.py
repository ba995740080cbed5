"""JAX helpers: ``twinrun.jax.Tracer`` records a functional training loop step by step;
``twinrun.jax.record_step`` wraps a jitted train step (Flax nnx or linen with Optax) so each call is one.

Importing this module imports JAX (you asked for it by name).
"""

from __future__ import annotations

from .frameworks.jax.tracer import Tracer, record_step, tree_names

__all__ = ["Tracer", "record_step", "tree_names"]
