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

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax

from ..._errors import UsageError
from ..steptracer import StepTracer

__all__ = ["Tracer", "record_step", "tree_names"]

_OUTPUTS = ("params", "grads", "loss", "outputs", "batch")


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
    variable = _nnx_variable()
    if variable is None:
        leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
        return [(".".join(_key_name(k) for k in path), leaf) for path, leaf in leaves]
    # Flax nnx: a Variable (Param) is a pytree node holding its array under `.value`; the user's name
    # is the Variable's path (conv.kernel), not the wrapper's field (conv.kernel.value).
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, variable))
    return [(".".join(_key_name(k) for k in path), leaf.get_value() if isinstance(leaf, variable) else leaf)  # type: ignore[attr-defined]
            for path, leaf in leaves]


def _nnx_variable() -> type | None:
    nnx = sys.modules.get("flax.nnx")   # imported by the user's program; twinrun never imports Flax
    variable = getattr(nnx, "Variable", None)
    return variable if isinstance(variable, type) else None


def record_step(fn: Callable[..., Any] | None = None, *, returns: Sequence[str | None],
                params: Callable[[], Any] | None = None, params_arg: int | None = None,
                batch_arg: int | Sequence[int] | None = None, tracer: Tracer | None = None) -> Any:
    """Wrap a (jitted) train step so that each call is one recorded step.

    ``returns`` names the step's outputs in order: ``"params"``, ``"grads"``, ``"loss"``,
    ``"outputs"``, or ``None`` for one not recorded (an optimizer state). The parameters after the
    update come from the output named ``"params"``, else from ``params()`` (Flax nnx, where the step
    updates the model in place: ``params=lambda: nnx.state(model, nnx.Param)``). The initial
    parameters are recorded before the first call, from ``params()`` or from positional argument
    ``params_arg``; the batch from positional argument(s) ``batch_arg``. Without an active recording
    the wrapper only calls ``fn``.

    >>> step = twinrun.jax.record_step(train_step, returns=("params", None, "loss", "grads"),   # doctest: +SKIP
    ...                                params_arg=0, batch_arg=(2, 3))
    >>> step = twinrun.jax.record_step(train_step, returns=("loss", "grads"),                  # doctest: +SKIP
    ...                                params=lambda: nnx.state(model, nnx.Param), batch_arg=(2, 3))
    """
    from ..._errors import UsageError

    names = list(returns)
    bad = [n for n in names if n is not None and n not in _OUTPUTS]
    if bad or len({n for n in names if n}) != len([n for n in names if n]):
        raise UsageError(f"twinrun.jax.record_step: returns={tuple(returns)!r} must name each output once, from "
                         f"{', '.join(_OUTPUTS)} or None (not recorded)")
    if fn is None:
        return functools.partial(record_step, returns=returns, params=params, params_arg=params_arg,
                                 batch_arg=batch_arg, tracer=tracer)
    t = tracer if tracer is not None else Tracer()
    started: list[bool] = []

    @functools.wraps(fn)
    def step(*args: Any, **kwargs: Any) -> Any:
        if not t.active:
            return fn(*args, **kwargs)
        if not started:
            started.append(True)
            first = params() if params is not None else args[params_arg] if params_arg is not None else None
            if first is not None:
                t.init(first)
        out = fn(*args, **kwargs)
        values = out if len(names) > 1 else (out,)
        if not isinstance(values, (tuple, list)) or len(values) != len(names):
            raise UsageError(f"twinrun.jax.record_step: the step returned {type(out).__name__}, not the "
                             f"{len(names)} outputs named by returns={tuple(returns)!r}")
        got = {n: v for n, v in zip(names, values) if n is not None}
        if "params" not in got and params is not None:
            got["params"] = params()
        if batch_arg is not None and "batch" not in got:
            idx = [batch_arg] if isinstance(batch_arg, int) else list(batch_arg)
            got["batch"] = args[idx[0]] if len(idx) == 1 else tuple(args[i] for i in idx)
        t.step(**got)
        return out

    return step


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
