"""``twinrun.keras.Callback``: Keras 3 ``fit`` recorded on every backend (tensorflow, torch, jax).

Each training batch is one step, ended at ``on_train_batch_end`` unless something already ended it:

- **tensorflow**: twinrun's ``fit`` hooks (``keras_trace``) record the batch and end the step inside
  the train function; the callback then does nothing (traces are as without it).
- **torch**: Keras layers are ``torch.nn.Module``s, so the PyTorch hooks record inputs, layer
  outputs, the loss and the gradients (named by Keras paths, ``cnn/conv/kernel``); Keras's optimizer
  is not a ``torch.optim`` one, so the callback ends the step (the parameters are recorded then).
- **jax**: nothing is visible inside the jitted train step, so the callback wraps the optimizer's
  ``stateless_apply`` to copy the gradients out (``jax.debug.callback``, which changes no value:
  measured bitwise, tests/loops/README.md) and records ``init`` (before the first batch), ``grad``
  and ``param`` (the trainable variables after the batch). Inputs and layer outputs are not recorded.

Under ``twinrun run`` the callback is added to every ``fit`` on the torch and jax backends without a
code change (``frameworks.keras_fit.install``); add it yourself under ``with twinrun.record(...)`` if you prefer:
``model.fit(x, y, callbacks=[twinrun.keras.Callback()])``. Outside a recording it does nothing.
Importing this module imports Keras only (not TensorFlow).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from ..base import RecorderLike

__all__ = ["Callback"]


def _recorder() -> RecorderLike | None:
    from ... import _active

    return _active.recorder()


def _path(v: Any) -> str:
    return str(getattr(v, "path", None) or getattr(v, "name", "variable"))


class Callback(keras.callbacks.Callback):
    """End each training batch's step and record what the backend's hooks cannot see (see the module)."""

    def __init__(self, recorder: RecorderLike | None = None) -> None:
        super().__init__()
        self._given = recorder
        self._rec: RecorderLike | None = None
        self._step = -1
        self._grads: list[tuple[str, np.ndarray]] = []
        self._wrapped: Any = None

    def _backend(self) -> str:
        return str(keras.backend.backend())

    def on_train_begin(self, logs: Any = None) -> None:
        self._rec = self._given if self._given is not None else _recorder()
        if self._rec is None or self._backend() != "jax":
            return
        rec = self._rec
        if rec.step == 0 and rec.wants("init"):
            for v in self.model.trainable_variables:
                rec.event("init", _path(v), np.asarray(v.value))
        if rec.wants("grad"):
            self._wrap_optimizer()

    def _wrap_optimizer(self) -> None:
        import jax

        opt = self.model.optimizer
        if opt is None or getattr(opt.stateless_apply, "_twinrun", False):
            return
        original = opt.stateless_apply
        names = [_path(v) for v in self.model.trainable_variables]
        sink = self._grads

        def take(*grads: Any) -> None:
            sink.extend((n, np.asarray(g)) for n, g in zip(names, grads))

        def stateless_apply(optimizer_variables: Any, grads: Any, trainable_variables: Any) -> Any:
            jax.debug.callback(take, *grads)   # a host copy of each gradient; the values used are untouched
            return original(optimizer_variables, grads, trainable_variables)

        stateless_apply._twinrun = True  # type: ignore[attr-defined]
        opt.stateless_apply = stateless_apply
        self._wrapped = (opt, original)

    def on_train_end(self, logs: Any = None) -> None:
        if self._wrapped is not None:
            opt, original = self._wrapped
            opt.stateless_apply = original
            self._wrapped = None

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self._step = self._rec.step if self._rec is not None else -1
        self._grads.clear()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        rec = self._rec
        if rec is None or rec.step != self._step:
            return   # no recording, or the step already ended (TensorFlow's fit hooks, a torch.optim step)
        if self._backend() == "jax":
            import jax

            jax.effects_barrier()    # the debug callbacks of this batch have run
            for name, g in self._grads:
                rec.event("grad", name, g)
            self._grads.clear()
            if rec.wants("param"):
                for v in self.model.trainable_variables:   # self.model syncs the jitted state back first
                    rec.event("param", _path(v), np.asarray(v.value))
        rec.saw("keras train batch end")
        rec.end_step()   # torch: the PyTorch hooks record the parameters first; may raise StopRun
