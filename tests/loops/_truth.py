"""What the loop scripts share: their options, the digits data, and the ground truth they write.

Every script here is plain framework code, written the way people write training loops, with no
twinrun import. When ``TWINRUN_LOOPS_TRUTH=/path/out.npz`` is set, a script also writes, by its
framework's own means, the ground truth a trace of it must agree with:

- ``meta``: a JSON string (a 0-d unicode array, so reading it needs no pickle) with ``loop``,
  ``framework``, ``steps`` (weight updates the script performed: optimizer steps, manual update
  rounds, train batches), ``grad_names`` (the names twinrun should ideally report for the step-0
  gradient events, in the order they are stored; a later backward pass within step 0 carries a
  call index, ``net.0.weight#1``), ``param_names`` (every trainable parameter by the name twinrun
  should ideally report), ``exact`` (whether the truth gradients are the very tensors the training
  used, so a trace must match them bit for bit, or a second, independent computation of them,
  which matches to rounding), ``grad_order`` (PyTorch: the order the first backward pass produced the
parameters' gradients), ``loss0`` (the step-0 loss, to tell a forward-pass difference from a
  backward-pass one) and ``notes``;
- ``g0000``, ``g0001``, ...: the step-0 gradients, in ``grad_names`` order.

Written with ``np.savez``; read with ``np.load(path, allow_pickle=False)`` (see :func:`load`).
This module imports no framework: the scripts hand it NumPy-convertible values.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

TRUTH_ENV = "TWINRUN_LOOPS_TRUTH"
BATCH = 64
NARROW, WIDE = 32, 2048  # --wide: a 2048-wide hidden layer, so the 2048 -> 10 weight gradient is a
# GEMM whose reduction MKL/Eigen split by thread count (FACTS.md: 1 vs 2 threads differ there)


def options(doc: str | None, steps: int = 6, **extra: Any) -> argparse.Namespace:
    """The options every loop script takes: --seed, --unseeded, --wide, --steps (plus ``extra``)."""
    p = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    p.add_argument("--seed", type=int, default=0, help="seed of every RNG the script seeds (default 0)")
    p.add_argument("--unseeded", action="store_true", help="drop every seed: initial weights differ per run")
    p.add_argument("--wide", action="store_true", help=f"a {WIDE}-wide hidden layer (thread-count dependent grads)")
    p.add_argument("--steps", type=int, default=steps, help=f"training steps (default {steps})")
    for flag, kwargs in extra.items():
        p.add_argument("--" + flag.replace("_", "-"), **kwargs)
    return p.parse_args()


def hidden(args: argparse.Namespace) -> int:
    return WIDE if args.wide else NARROW


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits: x float32 (1797, 64) in [0, 1], y int64 (1797,)."""
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def batch_slice(i: int, n: int, batch: int = BATCH) -> slice:
    """Batch ``i`` of a fixed order (the data order never depends on a seed)."""
    start = (i * batch) % (n - batch)
    return slice(start, start + batch)


class Truth:
    """The ground truth of one run; inert unless ``TWINRUN_LOOPS_TRUTH`` names a file."""

    def __init__(self, loop: str, framework: str, *, exact: bool = True, notes: str = ""):
        self.path = os.environ.get(TRUTH_ENV) or None
        self.enabled = self.path is not None
        self.meta: dict[str, Any] = {"loop": loop, "framework": framework, "exact": exact, "notes": notes,
                                     "param_names": [], "grad_names": [], "loss0": None}
        self._grads: list[np.ndarray] = []
        self._order: list[str] = []
        self._handles: list[Any] = []

    def params(self, names: Iterable[str]) -> None:
        """Every trainable parameter, by the name twinrun should report."""
        if self.enabled:
            self.meta["param_names"] = list(names)

    def watch_order(self, named: Iterable[tuple[str, Any]]) -> None:
        """PyTorch: note the order in which the first backward pass produces each parameter's gradient.

        A tensor hook on each parameter (it fires for ``backward()`` and ``torch.autograd.grad`` alike
        and returns None, so it changes nothing); removed at the first :meth:`grads` call.
        """
        if not self.enabled:
            return
        for name, p in named:
            self._handles.append(p.register_hook(lambda g, name=name: self._seen(name)))

    def _seen(self, name: str) -> None:
        if name not in self._order:
            self._order.append(name)

    def grads(self, named: Iterable[tuple[str, Any]], call: int = 0) -> None:
        """Step-0 gradients of backward pass ``call`` (0 for the first), copied now."""
        if not self.enabled:
            return
        for name, g in named:
            if g is None:  # a parameter backward did not reach has no gradient event
                continue
            self.meta["grad_names"].append(name if call == 0 else f"{name}#{call}")
            self._grads.append(np.array(g, copy=True))
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._order:
            self.meta["grad_order"] = list(self._order)

    def loss(self, value: Any) -> None:
        """The step-0 loss (the first one reported)."""
        if self.enabled and self.meta["loss0"] is None:
            self.meta["loss0"] = float(np.asarray(value))

    def save(self, steps: int, **meta: Any) -> None:
        """Write the truth file (the step count and anything else in ``meta``)."""
        if not self.enabled:
            return
        assert self.path is not None
        self.meta.update(steps=int(steps), **meta)
        arrays: dict[str, Any] = {f"g{i:04d}": g for i, g in enumerate(self._grads)}
        arrays["meta"] = np.array(json.dumps(self.meta))  # a unicode array: no pickle to write or read
        np.savez(self.path, **arrays)


def load(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A truth file: ``(meta, {grad event name: array})``, read without pickle."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        grads = {name: z[f"g{i:04d}"] for i, name in enumerate(meta["grad_names"])}
    return meta, grads


def keras_step0_grads(model: Any, loss_fn: Any, x: np.ndarray, y: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Keras 3, any backend: the gradients of ``loss_fn(y, model(x, training=True))`` by variable path.

    A second, independent pass over batch 0 with the backend's own autodiff (``tf.GradientTape`` in a
    ``tf.function``; ``torch.autograd.grad``; ``jax.grad`` of ``model.stateless_call`` under
    ``jax.jit``), taken before ``fit`` starts; it touches neither the weights nor any ``.grad``.
    """
    import keras  # type: ignore[import-untyped]

    variables = list(model.trainable_variables)
    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf  # type: ignore[import-untyped]

        @tf.function
        def grads_tf(xb: Any, yb: Any) -> Any:
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            return tape.gradient(loss, variables)

        grads = [g.numpy() for g in grads_tf(tf.constant(x), tf.constant(y))]
    elif name == "torch":
        import torch

        # twinrun records torch.autograd.grad taken on parameters (an autograd.grad loop's step); this
        # second pass is the test's, not the script's: call the function twinrun wrapped.
        grad = torch.autograd.grad
        grad = getattr(getattr(grad, "__self__", None), "_orig_grad", grad)
        loss = loss_fn(torch.from_numpy(y), model(torch.from_numpy(x), training=True))
        grads = [g.numpy() for g in grad(loss, [v.value for v in variables])]
    elif name == "jax":
        import jax

        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss_of(trainable: Any) -> Any:
            y_pred, _ = model.stateless_call(trainable, non_trainable, x, training=True)
            return loss_fn(y, y_pred)

        grads = [np.asarray(g) for g in jax.jit(jax.grad(loss_of))([v.value for v in variables])]
    else:
        raise SystemExit(f"unsupported KERAS_BACKEND {name!r}: use tensorflow, torch or jax")
    return [(v.path, g) for v, g in zip(variables, grads)]
