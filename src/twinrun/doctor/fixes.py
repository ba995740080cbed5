"""Doctor's fix sentences: what to change, at which call site, in the words of the run's framework.

Framework wording comes from the adapters (``FixWords``, each intervention's ``fix``); this module
only puts the evidence (the call sites the interventions reported, the layer, the phase) into them.
"""

from __future__ import annotations

from ..frameworks.base import FixWords, Intervention
from .model import Act

__all__ = ["data_fix", "op_class", "op_short"]


def _pick(acts: list[Act], registry: dict[str, Intervention]) -> Intervention | None:
    """The intervention whose fix speaks for these acts (the most specific one: highest priority)."""
    known = [registry[a.name] for a in acts if a.name in registry]
    return max(known, key=lambda iv: iv.priority, default=None)


def data_fix(acts: list[Act], kind: str, script: str, words: FixWords, registry: dict[str, Intervention]) -> str:
    """The fix for unseeded data randomness of ``kind`` ("order" or "content") found at ``acts``."""
    chosen = _pick(acts, registry)
    if chosen is None or not chosen.fix:
        if kind == "order":
            return (f"Give the DataLoader in {script} a seeded generator and worker_init_fn: "
                    "`DataLoader(..., **twinrun.torch.loader_kwargs())` after `twinrun.seed_everything(0)`.")
        return (f"Seed the data randomness of {script}: draw augmentations from a seeded generator, e.g. "
                "`seeds.numpy(\"augment\")` with `seeds = twinrun.seed_everything(0)`.")
    shown = [a for a in acts if a.name == chosen.name] if kind == "order" else acts
    if shown and not any(a.direct for a in shown):
        # a library drew on the line's behalf (Keras's fit shuffling with tf.random.shuffle): no argument of
        # the line is the draw's, so the intervention's advice about the draw's own call does not apply
        where = ", ".join(f"`{a.shown_api}` at {a.site}" for a in shown)
        return (f"{where} draws from an RNG that nothing seeds, inside the library call: seed every RNG before it, "
                f"`import twinrun; twinrun.seed_everything(0)` at the top of {script} (it also sets the "
                "framework's global seed), or pass that call's own seed or shuffle option where it has one.")
    where = ", ".join(f"`{a.api}` at {a.site}" for a in shown)
    return chosen.fix.format(where=where, tail=words.content_tail)


_OP_CLASS = {
    "grad": "a backward kernel that accumulates gradients in parallel "
            "(e.g. index_put_/scatter-add of advanced indexing)",
    "forward": "a forward kernel with a parallel reduction",
    "loss": "the loss reduction",
    "param": "the optimizer's update kernel",
}
_OP_SHORT = {"grad": "backward: parallel gradient accumulation", "forward": "forward: parallel reduction",
             "loss": "loss reduction", "param": "optimizer update"}


def op_class(phase: str | None) -> str:
    """The kind of kernel that can part run to run in ``phase``, in words."""
    return _OP_CLASS.get(str(phase), "a kernel")


def op_short(phase: str | None) -> str:
    return _OP_SHORT.get(str(phase), "a kernel")
