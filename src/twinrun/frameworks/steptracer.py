"""The explicit recording API shared by ``twinrun.jax.Tracer`` and ``twinrun.keras.Tracer``.

Functional training loops (JAX) and custom loops (``tf.GradientTape``) have no hook twinrun could use
without guessing, so the user says where a step ends: ``tracer.step(batch=..., params=..., grads=...,
loss=...)``. Each argument is a pytree; its leaves become events named by their tree path.
Without an active recorder (the script run as plain ``python train.py``) every call returns at once.
"""

from __future__ import annotations

from typing import Any

from .base import RecorderLike

__all__ = ["StepTracer"]


def _recorder() -> RecorderLike | None:
    from .. import _active

    return _active.recorder()


class StepTracer:
    """Base class; a framework subclass gives ``_flatten(tree) -> [(path, leaf)]``."""

    #: the name of the framework, for error messages
    framework = ""

    def __init__(self, recorder=None):
        self._recorder = recorder

    # --- subclass API ----------------------------------------------------------------------------
    def _flatten(self, tree: Any) -> list[tuple[str, Any]]:
        raise NotImplementedError

    def _check_leaf(self, name: str, leaf: Any) -> None:
        """Raise a UsageError for a leaf that cannot be recorded (e.g. a traced value)."""

    # --- public ------------------------------------------------------------------------------------
    @property
    def recorder(self):
        """The recorder events go to: the one given, else the active one (None: recording is off)."""
        return self._recorder if self._recorder is not None else _recorder()

    @property
    def active(self) -> bool:
        """Whether calls record anything (a recorder is active)."""
        return self.recorder is not None

    def init(self, params: Any) -> None:
        """Record the initial parameters (phase ``init``); call once, before the first update."""
        rec = self.recorder
        if rec is None:
            return
        self._emit(rec, "init", params, prefix="")

    def step(self, *, batch: Any = None, params: Any = None, grads: Any = None, loss: Any = None,
             outputs: Any = None, **custom: Any) -> None:
        """Record one training step and end it.

        Events come in the contract's order: ``input`` (``batch``, with a digest per sample along the
        first axis), ``forward`` (``outputs``), ``loss``, ``grad``, ``param`` (the parameters after
        the update), then one ``custom`` event per extra keyword. Parameter and gradient leaves share
        names (their tree paths), so a divergence names the same weight in both phases.

        Under ``twinrun run --max-steps N`` the N-th call raises ``twinrun.recording.StopRun`` (a
        ``BaseException``): the script ends cleanly and the trace is marked as stopped.
        """
        rec = self.recorder
        if rec is None:
            return
        self._emit(rec, "input", batch, prefix="batch", per_sample=True)
        self._emit(rec, "forward", outputs, prefix="outputs")
        self._emit(rec, "loss", loss, prefix="loss")
        self._emit(rec, "grad", grads, prefix="")
        self._emit(rec, "param", params, prefix="")
        for key, value in custom.items():
            self._emit(rec, "custom", value, prefix=key)
        rec.end_step()

    # --- internals -------------------------------------------------------------------------------
    def _emit(self, rec, phase: str, tree: Any, *, prefix: str, per_sample: bool = False) -> None:
        if tree is None:
            return
        for path, leaf in self._flatten(tree):
            if leaf is None:
                continue
            name = ".".join(p for p in (prefix, path) if p) or phase
            self._check_leaf(name, leaf)
            ps = per_sample and getattr(leaf, "ndim", 0) >= 1
            rec.event(phase, name, leaf, per_sample=ps)
