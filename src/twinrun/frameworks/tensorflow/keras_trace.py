"""Recording Keras training (TensorFlow backend) with zero code changes.

While a recorder is installed, ``Model.make_train_function`` builds a train function whose step returns,
next to Keras's logs, the tensors twinrun records: the input batch, every layer's output, the loss,
every gradient and every trainable variable after the update. The step stays a ``tf.function`` (graph
mode, as without twinrun); the extra tensors are collected while Keras traces ``train_step``:

- layer outputs: ``Layer.__call__`` is wrapped and notes each output of a layer called inside the model
  being trained, named by its path in that model (``block/conv2d``, ``dense#1`` for a second call);
- the loss: the value returned by the outermost ``Model.compute_loss`` (or ``_compute_loss``);
- gradients and updated variables: ``Optimizer.apply`` (which ``apply_gradients`` calls) is wrapped; the
  variables are read after the update, ordered after it by TensorFlow's automatic control dependencies.

A custom ``train_step`` is covered as long as it calls ``compute_loss`` and the optimizer; events it
does not produce are simply absent. Metadata (phase, name, per-sample flag) travels in the keys of the
returned dict, so every retrace (a last, smaller batch) carries its own.

Caveat, documented in docs/keras-and-jax.md: returning layer outputs from the step keeps Grappler
from fusing ops across them (e.g. a conv with its bias and activation), so a run recorded with the
``forward`` phase can round differently from an unrecorded one. Traces compare with traces made the
same way; ``--capture`` without ``forward`` keeps the graph as Keras built it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["install", "layer_outputs", "variable_name"]

_PHASES = ("init", "input", "forward", "loss", "grad", "param")
_SEP = "\x1f"  # separates the fields of an extras key; cannot occur in a Keras name

# The collector of the train_step being traced on this thread, or None (then wrappers pass through).
_local = threading.local()


def _collector() -> _Collector | None:
    return getattr(_local, "collector", None)


def variable_name(v: Any) -> str:
    """The stable name of a Keras or TensorFlow variable: its Keras path, else its TF name."""
    path = getattr(v, "path", None)
    if path:
        return str(path)
    return str(getattr(v, "name", "variable")).removesuffix(":0")


def _as_tensor(v: Any):
    """A tf.Tensor of a Keras variable, tf.Variable, IndexedSlices or tensor (read now, in program order)."""
    value = getattr(v, "value", None)  # KerasVariable -> its tf.Variable
    if value is not None and not callable(value):
        v = value
    if isinstance(v, tf.IndexedSlices):
        return tf.convert_to_tensor(v)
    return tf.identity(v)


def _symbolic(value: Any) -> bool:
    """Whether ``value`` holds a KerasTensor: a placeholder of a model being built (a ``Sequential``
    without ``keras.Input`` builds itself on its first call, inside the traced step), not a value the
    step computes."""
    import keras

    return any(isinstance(leaf, keras.KerasTensor) for leaf in keras.tree.flatten(value))


class _Collector:
    """Tensors noted while one train_step is traced, in program order."""

    def __init__(self, root, capture: frozenset[str]):
        self.root = root
        self.capture = capture
        self.items: list[tuple[str, str, bool, Any]] = []
        self.stack: list[Any] = []
        self.calls: dict[str, int] = {}
        self.in_loss = 0
        self.in_apply = 0
        # The step's graph: Keras builds unbuilt layers by calling them in a scratch graph, whose
        # tensors cannot leave it (and are not the step's computation).
        self.graph = tf.compat.v1.get_default_graph()

    def here(self) -> bool:
        return tf.compat.v1.get_default_graph() is self.graph

    def add(self, phase: str, name: str, value: Any, per_sample: bool = False) -> None:
        if phase in self.capture and value is not None and not _symbolic(value):
            self.items.append((phase, name, per_sample, _as_tensor(value)))

    def add_tree(self, phase: str, name: str, value: Any, per_sample: bool = False) -> None:
        import keras

        if value is None:
            return
        flat = keras.tree.flatten_with_path(value)
        if len(flat) == 1 and not flat[0][0]:
            self.add(phase, name, flat[0][1], per_sample)
            return
        for path, leaf in flat:
            if leaf is not None and tf.is_tensor(leaf):
                self.add(phase, "/".join([name, *map(str, path)]), leaf, per_sample)

    def keys(self) -> dict[str, Any]:
        return {f"{i:06d}{_SEP}{phase}{_SEP}{int(ps)}{_SEP}{name}": t
                for i, (phase, name, ps, t) in enumerate(self.items)}


def _unkey(key: str) -> tuple[str, str, bool]:
    _, phase, ps, name = key.split(_SEP, 3)
    return phase, name, ps == "1"


def layer_outputs(extras: dict[str, Any]) -> list[tuple[str, str, bool, Any]]:
    """Decode the extras dict a recorded train step returns: ``[(phase, name, per_sample, tensor)]``."""
    return [(*_unkey(k), extras[k]) for k in sorted(extras)]


# --- wrappers installed on Keras classes --------------------------------------------------------

def _wrap_layer_call(original: Callable) -> Callable:
    def __call__(self, *args, **kwargs):
        c = _collector()
        if c is None or "forward" not in c.capture or not c.here():
            return original(self, *args, **kwargs)
        c.stack.append(self)
        try:
            out = original(self, *args, **kwargs)
        finally:
            c.stack.pop()
        if _symbolic(out):   # the model building itself: not a call of the step
            return out
        if self is c.root:
            base = self.name
        elif c.stack and any(s is c.root for s in c.stack):
            below = c.stack[[i for i, s in enumerate(c.stack) if s is c.root][-1] + 1:]
            base = "/".join([s.name for s in below] + [self.name])
        else:  # a layer called outside the model (e.g. by a custom train_step): still the step's compute
            base = self.name
        n = c.calls.get(base, 0)
        c.calls[base] = n + 1
        c.add_tree("forward", base if n == 0 else f"{base}#{n}", out)
        return out

    __call__.__wrapped__ = original  # type: ignore[attr-defined]
    return __call__


def _wrap_loss(original: Callable) -> Callable:
    def compute_loss(self, *args, **kwargs):
        c = _collector()
        if c is None or not c.here():
            return original(self, *args, **kwargs)
        c.in_loss += 1
        try:
            loss = original(self, *args, **kwargs)
        finally:
            c.in_loss -= 1
        if c.in_loss == 0:
            c.add("loss", "loss", loss)
        return loss

    compute_loss.__wrapped__ = original  # type: ignore[attr-defined]
    return compute_loss


def _wrap_apply(original: Callable) -> Callable:
    def apply(self, grads, trainable_variables=None):
        c = _collector()
        if c is None or c.in_apply or not c.here():
            return original(self, grads, trainable_variables)
        variables = list(trainable_variables) if trainable_variables is not None else \
            list(getattr(self, "_trainable_variables", []))
        grads = list(grads)
        for g, v in zip(grads, variables):
            c.add("grad", variable_name(v), g)
        c.in_apply += 1
        try:
            result = original(self, grads, trainable_variables)
        finally:
            c.in_apply -= 1
        if "param" in c.capture:
            for v in variables:
                c.add("param", variable_name(v), v)
        return result

    apply.__wrapped__ = original  # type: ignore[attr-defined]
    return apply


# --- the train function --------------------------------------------------------------------------

def _unpack(data):
    from keras.src.trainers.data_adapters import data_adapter_utils

    return data_adapter_utils.unpack_x_y_sample_weight(data)


def _recording_step(model, step_function: Callable, capture: frozenset[str]) -> Callable:
    """``step_function`` (Keras's train_step) returning ``(logs, extras)``."""

    def step(data):
        c = _Collector(model, capture)
        if "input" in capture:
            x, y, sw = _unpack(data)
            c.add_tree("input", "x", x, per_sample=True)
            c.add_tree("input", "y", y, per_sample=True)
            c.add_tree("input", "sample_weight", sw, per_sample=True)
        _local.collector = c
        try:
            logs = step_function(data)
        finally:
            _local.collector = None
        return logs, c.keys()

    return step


def _emit_init(recorder, model) -> None:
    for v in model.trainable_variables:
        recorder.event("init", variable_name(v), _as_numpy(v))


def _as_numpy(v) -> np.ndarray:
    value = getattr(v, "value", None)
    if value is not None and not callable(value):
        v = value
    return v.numpy() if hasattr(v, "numpy") else np.asarray(v)


def install(recorder) -> Callable[[], None]:
    """Hook Keras so that every ``fit`` batch is recorded; return the uninstall callable."""
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
    from keras.src.layers.layer import Layer
    from keras.src.optimizers.base_optimizer import BaseOptimizer
    from keras.src.trainers.trainer import Trainer

    capture = frozenset(getattr(recorder, "capture", None) or _PHASES)
    touched: weakref.WeakSet = weakref.WeakSet()
    initialised: weakref.WeakSet = weakref.WeakSet()
    saved = [
        (Layer, "__call__", Layer.__dict__["__call__"]),
        (Trainer, "compute_loss", Trainer.__dict__["compute_loss"]),
        (Trainer, "_compute_loss", Trainer.__dict__["_compute_loss"]),
        (BaseOptimizer, "apply", BaseOptimizer.__dict__["apply"]),
        (TensorFlowTrainer, "make_train_function", TensorFlowTrainer.__dict__["make_train_function"]),
    ]

    def make_train_function(self, force=False):
        fn = self.train_function
        if fn is not None and not force and getattr(fn, "_twinrun_recorder", None) is recorder:
            return fn
        inner = self._make_function(_recording_step(self, self.train_step, capture))
        model = self

        def function(iterator):
            if model not in initialised:
                initialised.add(model)
                if "init" in capture and not model.trainable_variables and hasattr(recorder, "note"):
                    # built on its first call, inside this step: no value before the first update to record
                    recorder.note(f"the model `{model.name}` was built inside its first training step (no "
                                  "keras.Input), so its initial weights are not recorded; step 0's first "
                                  "layer output shows them")
                elif "init" in capture:
                    _emit_init(recorder, model)
            logs, extras = inner(iterator)
            for phase, name, per_sample, tensor in layer_outputs(extras):
                recorder.event(phase, name, tensor.numpy(), per_sample=per_sample)
            recorder.end_step()  # may raise StopRun (max steps, divergence): ends fit and the script
            return logs

        function._twinrun_recorder = recorder  # type: ignore[attr-defined]
        self.train_function = function
        touched.add(self)
        return function

    Layer.__call__ = _wrap_layer_call(saved[0][2])
    Trainer.compute_loss = _wrap_loss(saved[1][2])
    Trainer._compute_loss = _wrap_loss(saved[2][2])
    BaseOptimizer.apply = _wrap_apply(saved[3][2])
    TensorFlowTrainer.make_train_function = make_train_function

    def uninstall() -> None:
        for cls, attr, original in saved:
            setattr(cls, attr, original)
        for model in list(touched):  # rebuild an unrecorded train function on the next fit
            model.train_function = None

    return uninstall


# --- custom loops ---------------------------------------------------------------------------------

from ..steptracer import StepTracer  # noqa: E402


def _is_variable(x: Any) -> bool:
    return isinstance(x, tf.Variable) or (type(x).__name__.endswith("Variable") and hasattr(x, "path"))


class Tracer(StepTracer):
    """Records a custom TensorFlow/Keras training loop, one ``step`` call per batch.

    >>> tracer = twinrun.keras.Tracer(model)                                   # doctest: +SKIP
    >>> tracer.init()                                  # the model's trainable variables, before training
    >>> for x, y in dataset:                                                   # doctest: +SKIP
    ...     with tf.GradientTape() as tape:
    ...         loss = loss_fn(y, model(x, training=True))
    ...     grads = tape.gradient(loss, model.trainable_variables)
    ...     optimizer.apply_gradients(zip(grads, model.trainable_variables))
    ...     tracer.step(batch=(x, y), loss=loss, grads=grads)

    ``params`` defaults to the model's trainable variables (read after the update); a list of
    gradients is named after the variables it belongs to. Call ``step`` outside ``tf.function``.
    """

    framework = "tensorflow"

    def __init__(self, model=None, recorder=None):
        super().__init__(recorder)
        self.model = model

    def _variables(self, params):
        if params is None and self.model is not None:
            return list(self.model.trainable_variables)
        return params

    def init(self, params: Any = None) -> None:
        super().init(self._variables(params))

    def step(self, *, batch: Any = None, params: Any = None, grads: Any = None, loss: Any = None,
             outputs: Any = None, **custom: Any) -> None:
        if self.recorder is None:
            return
        params = self._variables(params)
        if isinstance(grads, (list, tuple)) and isinstance(params, (list, tuple)) and len(grads) == len(params) \
                and all(_is_variable(v) for v in params):
            grads = {variable_name(v): g for v, g in zip(params, grads)}
        super().step(batch=batch, params=params, grads=grads, loss=loss, outputs=outputs, **custom)

    def _flatten(self, tree: Any) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []

        def walk(path: tuple, node: Any) -> None:
            if node is None:
                return
            if isinstance(node, dict):
                for k, v in node.items():
                    walk((*path, str(k)), v)
            elif isinstance(node, (list, tuple)) and not hasattr(node, "_fields"):
                for i, v in enumerate(node):
                    walk((*path, variable_name(v) if _is_variable(v) else str(i)), v)
            elif hasattr(node, "_fields"):  # namedtuple
                for k in node._fields:
                    walk((*path, k), getattr(node, k))
            else:
                out.append((".".join(path), _leaf(node)))

        walk((), tree)
        return out

    def _check_leaf(self, name: str, leaf: Any) -> None:
        if not tf.executing_eagerly():
            from ..._errors import UsageError

            raise UsageError(
                f"twinrun.keras.Tracer got a symbolic tensor for {name!r} (called inside tf.function); "
                "call tracer.step(...) outside the function, with the tensors it returns")


def _leaf(x: Any) -> Any:
    if isinstance(x, tf.IndexedSlices):
        return tf.convert_to_tensor(x)
    if _is_variable(x):
        value = getattr(x, "value", None)
        return value if value is not None and not callable(value) else x
    return x


def seed_generator(stream: str = "augment", *path: Any, seeds=None):
    """A ``keras.random.SeedGenerator`` seeded from twinrun's named stream (default: the last
    ``seed_everything``), for custom random layers: ``self.seed_gen = seed_generator("dropout", "block1")``.
    """
    import keras

    from ..._errors import UsageError

    if seeds is None:
        from ... import _active

        seeds = _active.current_seeds()
        if seeds is None:
            raise UsageError("no seeds yet: call twinrun.seed_everything(...) before "
                             "twinrun.keras.seed_generator(...), or pass seeds=")
    return keras.random.SeedGenerator(seeds.int(stream, *path))
