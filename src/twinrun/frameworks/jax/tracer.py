"""``twinrun.jax.Tracer``: record a functional JAX training loop, one explicit call per step.

>>> tracer = Tracer()                                                        # doctest: +SKIP
>>> tracer.init(params)                                                      # doctest: +SKIP
>>> for batch in batches:                                                    # doctest: +SKIP
...     params, opt_state, loss, grads = update(params, opt_state, batch)
...     tracer.step(batch=batch, params=params, grads=grads, loss=loss)

Leaves are named by their tree path (``dense1.w``, ``batch.0``). Outside ``twinrun run`` /
``twinrun.record`` the calls do nothing.
"""

from __future__ import annotations

from typing import Any

import jax

from ..._errors import UsageError
from ..steptracer import StepTracer

__all__ = ["Tracer", "tree_names"]


def _key_name(k: Any) -> str:
    tu = jax.tree_util
    if isinstance(k, tu.DictKey):
        return str(k.key)
    if isinstance(k, tu.SequenceKey):
        return str(k.idx)
    if isinstance(k, tu.GetAttrKey):
        return str(k.name)
    if isinstance(k, tu.FlattenedIndexKey):
        return str(k.key)
    return str(k).strip(".[]'\"")


def tree_names(tree: Any) -> list[tuple[str, Any]]:
    """``[(dotted tree path, leaf)]`` of a pytree, in JAX's flattening order (sorted dict keys).

    >>> tree_names({"b": 1, "a": (2, 3)})
    [('a.0', 2), ('a.1', 3), ('b', 1)]
    """
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(".".join(_key_name(k) for k in path), leaf) for path, leaf in leaves]


class Tracer(StepTracer):
    """Records pytrees of a JAX training loop; see ``StepTracer.step`` for the order of events."""

    framework = "jax"

    def _flatten(self, tree: Any) -> list[tuple[str, Any]]:
        return tree_names(tree)

    def _check_leaf(self, name: str, leaf: Any) -> None:
        if isinstance(leaf, jax.core.Tracer):
            raise UsageError(
                f"twinrun.jax.Tracer got a traced value for {name!r} (called inside jax.jit, grad or vmap); "
                "call tracer.step(...) outside the transformed function, with the arrays it returns")
