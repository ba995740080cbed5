"""Callbacks for the PyTorch trainers: ``twinrun.lightning.Callback`` and ``twinrun.huggingface.Callback``.

PyTorch's global hooks already record both trainers with no code (a ``torch.optim`` step, with or
without Lightning's closure, ends each step; gradients come from backward as it produces them). The
callbacks add what those hooks cannot see:

- names under the trained model: the trainer's model is registered as the owner of its submodules
  (``watching.own``), so a ``training_step`` that calls ``self.net(x)`` records ``net.0.weight``;
- a step per optimizer step of any kind: when the trainer counted an optimizer step
  (``trainer.global_step`` / ``state.global_step`` moved) that no ``torch.optim`` hook ended (an
  optimizer that is not a ``torch.optim.Optimizer``), the callback ends it.

Each class is built on first use from the installed package (``lightning`` or ``pytorch_lightning``;
``transformers``): importing twinrun never imports a trainer.
"""

from __future__ import annotations

from typing import Any

from ..base import RecorderLike
from .watching import own

__all__ = ["huggingface_callback", "lightning_callback"]


def _recorder() -> RecorderLike | None:
    from ... import _active

    return _active.recorder()


class _Steps:
    """What both callbacks do: remember the step at a batch's start, end it if the trainer stepped."""

    def __init__(self) -> None:
        self._rec: RecorderLike | None = None
        self._step = -1
        self._global = -1

    def _begin(self, global_step: int) -> None:
        self._rec = _recorder()
        self._step = self._rec.step if self._rec is not None else -1
        self._global = global_step

    def _end(self, global_step: int, what: str) -> None:
        rec = self._rec
        if rec is None or rec.step != self._step or global_step == self._global:
            return   # no recording; a torch.optim step already ended it; or no optimizer step (accumulation)
        rec.saw(what)
        rec.end_step()   # may raise StopRun (--max-steps): it ends the trainer and the script


def _lightning_base() -> type:
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback  # type: ignore[assignment]
        except ImportError:
            from ..._errors import UsageError

            raise UsageError("twinrun.lightning.Callback needs Lightning: pip install lightning") from None
    return Callback


def lightning_callback() -> type:
    """The class ``twinrun.lightning.Callback`` (a ``lightning.pytorch.Callback``)."""
    base = _lightning_base()

    class Callback(base, _Steps):  # type: ignore[valid-type,misc]
        """``Trainer(callbacks=[twinrun.lightning.Callback()])``: names under the LightningModule, and
        a step per optimizer step (see ``twinrun.frameworks.torch.trainers``)."""

        def __init__(self) -> None:
            super().__init__()
            _Steps.__init__(self)

        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            own(pl_module)

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            self._begin(int(trainer.global_step))

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            self._end(int(trainer.global_step), "lightning optimizer step")

    Callback.__module__ = "twinrun.lightning"
    Callback.__qualname__ = "Callback"
    return Callback


def huggingface_callback() -> type:
    """The class ``twinrun.huggingface.Callback`` (a ``transformers.TrainerCallback``)."""
    try:
        from transformers import TrainerCallback
    except ImportError:
        from ..._errors import UsageError

        raise UsageError("twinrun.huggingface.Callback needs transformers: pip install transformers") from None

    class Callback(TrainerCallback, _Steps):
        """``Trainer(..., callbacks=[twinrun.huggingface.Callback()])``: names under the model, and a step
        per optimizer step. A trainer's keyword arguments that the model's ``forward`` takes only
        through ``**kwargs`` (``num_items_in_batch``) are not recorded as inputs, with or without it."""

        def __init__(self) -> None:
            _Steps.__init__(self)

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if model is not None:
                own(model)

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._begin(int(state.global_step))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._end(int(state.global_step), "huggingface optimizer step")

    Callback.__module__ = "twinrun.huggingface"
    Callback.__qualname__ = "Callback"
    return Callback
