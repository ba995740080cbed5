"""``seed-loaders``: DataLoaders and random samplers built without a generator get a seeded one.

A ``torch.utils.data.DataLoader`` (or ``RandomSampler``, ``SubsetRandomSampler``,
``WeightedRandomSampler``) built without a ``generator`` gets one seeded from twinrun's stream, and a
loader with workers but no ``worker_init_fn`` gets twinrun's (``twinrun.torch.loader_kwargs``). The
patch waits for the program to import torch; nothing else changes.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..base import Intervention, InterventionContext

__all__ = ["INTERVENTIONS"]

_FIX = ("Give {where} a seeded generator and worker_init_fn: `DataLoader(..., **twinrun.torch.loader_kwargs())` "
        "after `twinrun.seed_everything(0)`.")


def _apply(ctx: InterventionContext) -> None:
    from .. import when_imported

    when_imported("torch", lambda torch: _patch(torch, ctx))


def _patch(torch: ModuleType, ctx: InterventionContext) -> None:
    import torch.utils.data as tud

    def with_generator(cls: type, label: str,
                       extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        original = cls.__init__  # type: ignore[misc]
        if getattr(original, "_twinrun_patched", False):
            return
        sig = inspect.signature(original)

        @functools.wraps(original)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                given = sig.bind_partial(self, *args, **kwargs).arguments
            except TypeError:   # let the real constructor report the bad call
                return original(self, *args, **kwargs)
            changes: dict[str, Any] = {}
            if given.get("generator") is None and "generator" in sig.parameters:
                seq = ctx.sequence(label)
                g = torch.Generator()
                g.manual_seed(int(seq.generate_state(1, "uint64")[0]))
                changes["generator"] = g
                ctx.note("seed-loaders", f"{label}(...) without a generator", f"{label}(...)")
            if extra is not None:
                changes.update(extra(given))
            if changes:
                args, kwargs = _rebind(sig, args, kwargs)
                kwargs.update(changes)
            return original(self, *args, **kwargs)

        __init__._twinrun_patched = True  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[misc]

    def worker_init(given: dict[str, Any]) -> dict[str, Any]:
        if (given.get("num_workers") or 0) > 0 and given.get("worker_init_fn") is None:
            from .data import STREAM, WorkerInit

            ctx.note("seed-loaders", "DataLoader(..., num_workers>0) without a worker_init_fn", "DataLoader(...)")
            from .data import _this_rank

            return {"worker_init_fn": WorkerInit(ctx.seeds(), STREAM, _this_rank())}
        return {}

    with_generator(tud.DataLoader, "DataLoader", worker_init)
    for cls in (tud.RandomSampler, tud.SubsetRandomSampler, tud.WeightedRandomSampler):
        with_generator(cls, cls.__name__)


def _rebind(sig: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[()], dict[str, Any]]:
    """All arguments as keywords, so that a keyword we supply replaces a positional one."""
    names = list(sig.parameters)[1:]   # after self
    merged = dict(zip(names, args))
    merged.update(kwargs)
    return (), merged


INTERVENTIONS = (
    Intervention("seed-loaders", "DataLoaders and random samplers without a generator get a seeded one (and a "
                 "worker_init_fn)", "order", _apply, _FIX, priority=1),
)
