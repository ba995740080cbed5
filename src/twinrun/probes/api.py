"""``twinrun.probe(fn, batch)``: does a model give each input row the same bits on a second call,
inside batches of other sizes, and with another thread count? In this process, any framework.

>>> report = twinrun.probe(model, batch)                         # doctest: +SKIP
>>> report.to_dict()["checks"]["batch_invariance"]               # doctest: +SKIP
{'stable': False, 'max_ulp': 3, 'first_layer': '0', 'rows_differing': 64, 'ulp_per_row': [...], ...}

``fn`` is a PyTorch module or any callable taking the batch: a Keras model, a JAX function, a
NumPy function. ``batch`` is an array or tensor (``fn(batch)``), a tuple or list (``fn(*batch)``)
or a dict (``fn(**batch)``) whose arrays share their first dimension, the batch dimension. Outputs
may be arrays, tensors or nests of them (tuples, lists, dicts); every leaf whose first dimension is
the batch is compared row by row, bit for bit. Keras and JAX outputs are read through NumPy.

The checks:

- ``repeat``: the same call twice gives the same bits.
- ``batch_invariance``: each row computed alone, and in sub-batches of other sizes, equals the same
  row inside the whole batch.
- ``threads``: one thread against the current thread count (PyTorch only: TensorFlow and JAX fix
  their thread pools at start-up, so for them this needs fresh processes).
- ``isa``: lower CPU instruction sets need fresh processes with other environment variables; this
  in-process API leaves it unrun (``stable`` None) with a note to run ``twinrun probe SCRIPT``.

For a PyTorch module, forward hooks on its submodules (only during the probe) name the first
submodule, in the order their outputs are produced, whose output rows part: ``first_layer``.
``max_ulp`` is the largest distance at the output, in units in the last place of its dtype.
PyTorch calls run under ``torch.no_grad()``, and the RNG state is restored after the probe; the
model's train/eval mode is left as it is (a model in training mode with dropout fails ``repeat``).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import UsageError
from .bits import LayerOutputs, Leaf, as_leaf, layer_leaves, leaves
from .checks import CheckResult, Runner, check_names, run_checks

__all__ = ["ProbeReport", "call", "probe"]


@dataclass(frozen=True)
class ProbeReport:
    """The checks' results, in the order asked, and what was probed."""

    checks: dict[str, CheckResult]
    framework: str
    batch_size: int
    threads: int | None = None

    @property
    def stable(self) -> bool | None:
        """True when every check that ran is stable, False when one is not, None when none ran."""
        ran = [c.stable for c in self.checks.values() if c.stable is not None]
        return all(ran) if ran else None

    def to_dict(self) -> dict[str, Any]:
        return {"checks": {name: c.to_dict() for name, c in self.checks.items()},
                "stable": self.stable, "framework": self.framework, "batch": self.batch_size,
                "threads": self.threads}


# --- batches ----------------------------------------------------------------------------------------

def _batch_size(batch: Any) -> int:
    items = list(batch.values()) if isinstance(batch, dict) else list(batch) if isinstance(batch, (tuple, list)) \
        else [batch]
    sizes = {int(x.shape[0]) for x in items if hasattr(x, "shape") and len(x.shape) > 0}
    if len(sizes) != 1:
        raise UsageError("probe: the batch must be an array or tensor (or a tuple, list or dict of them) "
                         f"whose first dimensions agree; found first dimensions {sorted(sizes) or 'none'}")
    return sizes.pop()


def _slice(batch: Any, start: int, stop: int) -> Any:
    def cut(x: Any) -> Any:
        return x[start:stop] if hasattr(x, "shape") and len(x.shape) > 0 else x
    if isinstance(batch, dict):
        return {k: cut(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(cut(v) for v in batch)
    return cut(batch)


def _as_call(batch: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(batch, dict):
        return (), dict(batch)
    if isinstance(batch, (tuple, list)):
        return tuple(batch), {}
    return (batch,), {}


def call(fn: Callable[..., Any], batch: Any) -> Any:
    """``fn(batch)``, ``fn(*batch)`` for a tuple or list, ``fn(**batch)`` for a dict."""
    args, kwargs = _as_call(batch)
    return fn(*args, **kwargs)


def _leaves(out: Any, rows: int) -> list[Leaf]:
    """The output's arrays whose first dimension is the batch, in a fixed order."""
    found: list[Leaf] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for k in sorted(x, key=str):
                walk(x[k])
        elif isinstance(x, (tuple, list)):
            for v in x:
                walk(v)
        elif hasattr(x, "shape") and len(x.shape) > 0 and int(x.shape[0]) == rows:
            leaf = as_leaf(x)
            if leaf is not None:
                found.append(leaf)
    walk(out)
    return found


# --- runners ------------------------------------------------------------------------------------------

class CallableRunner(Runner):
    """Any callable of the batch; outputs read through NumPy."""

    def __init__(self, fn: Callable[..., Any], batch: Any, rows: int) -> None:
        super().__init__(rows)
        self.fn, self.batch = fn, batch

    def run(self, start: int, stop: int) -> tuple[list[Leaf], LayerOutputs]:
        return _leaves(call(self.fn, _slice(self.batch, start, stop)), stop - start), []


class TorchRunner(Runner):
    """A PyTorch module or function: calls under no_grad, submodules' outputs kept for a module."""

    framework = "torch"

    def __init__(self, fn: Callable[..., Any], batch: Any, rows: int) -> None:
        from ..frameworks.torch import probe as tp

        super().__init__(rows)
        self._tp = tp
        self.fn = fn
        self.args, self.kwargs = _as_call(batch)
        self.training = tp.trains_differently(fn)
        if not tp.is_module(fn):
            self.layers_note = "pass the torch.nn.Module itself (not a function) to have the first layer named"
        elif not tp.has_submodules(fn):
            self.layers_note = "the model has no submodules to name"
        else:
            self.layers_note = None

    def run(self, start: int, stop: int) -> tuple[list[Leaf], LayerOutputs]:
        args, kwargs = self._tp.slice_call(self.args, self.kwargs, self.rows, start, stop)
        out, layers = self._tp.run_call(self.fn, args, kwargs, stop - start, keep_layers=True)
        return leaves(out), layer_leaves(layers)

    def threads(self) -> int | None:
        return self._tp.num_threads()

    def run_with_threads(self, n: int) -> tuple[list[Leaf], LayerOutputs]:
        with self._tp.with_threads(n):
            return self.run(0, self.rows)

    def kept(self) -> contextlib.AbstractContextManager[Any]:
        return self._tp.rng_kept()


_FRAMEWORK_OF_MODULE = {"keras": "keras", "tf_keras": "keras", "tensorflow": "tensorflow",
                        "jax": "jax", "jaxlib": "jax", "flax": "jax"}


def _runner(fn: Callable[..., Any], batch: Any, rows: int) -> Runner:
    torch = sys.modules.get("torch")   # a torch model or tensor exists only if torch is imported already
    if torch is not None and (isinstance(fn, torch.nn.Module) or _has_tensor(batch, torch.Tensor)):
        return TorchRunner(fn, batch, rows)
    runner = CallableRunner(fn, batch, rows)
    # only a label for the report: where the callable (or its class) comes from
    for mod in (type(fn).__module__, getattr(fn, "__module__", None) or ""):
        top = mod.split(".")[0]
        if top in _FRAMEWORK_OF_MODULE:
            runner.framework = _FRAMEWORK_OF_MODULE[top]
            break
    return runner


def _has_tensor(batch: Any, kind: type) -> bool:
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (tuple, list)) else [batch]
    return any(isinstance(x, kind) for x in items)


def probe(fn: Callable[..., Any], batch: Any, *,
          checks: str | Sequence[str] = ("repeat", "batch_invariance", "threads"),
          sub_batches: Sequence[int] | None = None) -> ProbeReport:
    """Run ``fn`` on ``batch`` and check that its output rows repeat bit for bit (see the module doc).

    ``checks``: some of ``repeat``, ``batch_invariance``, ``threads``, ``isa`` (a list or a comma
    string). ``sub_batches``: the sub-batch sizes for ``batch_invariance`` (default: 1, 3 and half
    the batch).
    """
    try:
        names = check_names(checks)
    except UsageError as exc:
        raise UsageError(f"probe: {exc}") from None
    if not callable(fn):
        raise UsageError(f"probe: {type(fn).__name__} is not callable; pass a model or a function of the batch")
    rows = _batch_size(batch)
    runner = _runner(fn, batch, rows)
    with runner.kept():
        ref, ref_layers = runner.run(0, rows)
        if not ref:
            raise UsageError(f"probe: the output has no numeric array whose first dimension is the batch ({rows}); "
                             "return the model's outputs for the batch")
        results = run_checks(runner, names, ref, ref_layers, sub_batches)
    return ProbeReport(checks=results, framework=runner.framework, batch_size=rows, threads=runner.threads())
