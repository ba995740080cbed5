"""JAX helpers: ``twinrun.jax.Tracer`` records a functional training loop step by step.

Importing this module imports JAX (you asked for it by name).
"""

from __future__ import annotations

from .frameworks.jax.tracer import Tracer, tree_names

__all__ = ["Tracer", "tree_names"]
