"""What the user limits PyTorch recording to, and which module names a trainer's models.

Registries, documented: ``watch`` (the models and optimizers recording is limited to) and ``own``
(a module whose submodules, called at the top level, are recorded under its names: a
``LightningModule`` whose ``training_step`` calls ``self.net(x)`` names ``net.0.weight``).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

__all__ = ["own", "unwatch", "watch"]

# A registry, documented: the models and optimizers the user limited recording to
# (twinrun.torch.watch); empty = everything.
_WATCHED_MODELS: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()
_WATCHED_OPTIMIZERS: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()


def watch(*objects: Any) -> None:
    """Limit recording to these models and optimizers (any mix, any number of calls).

    Without ``watch`` every ``nn.Module`` called at the top level is a root model and every
    ``torch.optim`` optimizer ends a step. After ``watch(model, optimizer)``, only ``model`` (and
    modules it calls) is recorded, only ``optimizer.step()`` ends a step, and only the parameters of
    watched models appear in ``grad``/``param`` events.

    >>> with twinrun.record("run.trace"):          # doctest: +SKIP
    ...     twinrun.torch.watch(model, optimizer)
    ...     train(model, optimizer, teacher)        # the teacher's forwards are not recorded
    """
    from ..._errors import UsageError

    for obj in objects:
        if isinstance(obj, torch.nn.Module):
            _WATCHED_MODELS.add(obj)
        elif isinstance(obj, torch.optim.Optimizer):
            _WATCHED_OPTIMIZERS.add(obj)
        else:
            raise UsageError(
                f"twinrun.torch.watch() takes nn.Module and torch.optim.Optimizer objects, not "
                f"{type(obj).__name__}; pass the model and its optimizer")


def unwatch() -> None:
    """Forget every ``watch()``: record all models and optimizers again."""
    _WATCHED_MODELS.clear()
    _WATCHED_OPTIMIZERS.clear()


_OWNERS: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()


def own(module: torch.nn.Module) -> None:
    """Name what ``module`` contains under ``module``, even when its submodules are called directly
    (a trainer's callback registers the model it trains)."""
    _OWNERS.add(module)


def owner_of(module: torch.nn.Module) -> torch.nn.Module | None:
    """The registered owner that contains ``module`` (itself included), if any."""
    for o in list(_OWNERS):
        if o is module or any(m is module for m in o.modules()):
            return o
    return None
