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


_TORCH_FIX = ("Seed {where}: draw from a generator seeded from twinrun's streams, e.g. "
              "`torch.Generator().manual_seed(seeds.int(\"augment\"))` with `seeds = twinrun.seed_everything(0)`{tail}")
_INIT = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
         "xavier_normal_", "orthogonal_", "sparse_")
# Dropout draws its mask from torch's global RNG inside the op (no torch.rand to see): watched by name.
_DROPOUTS = ("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout")
_DRAWS = {"rand": "content", "randn": "content", "randint": "content", "normal": "content", "bernoulli": "content",
          "multinomial": "content", "rand_like": "content", "randn_like": "content", "randint_like": "content",
          "randperm": "order"}


def _apply_torch(ctx: InterventionContext) -> None:
    from .. import when_imported

    when_imported("torch", lambda torch: _patch_torch(torch, ctx))


def _patch_torch(torch: ModuleType, ctx: InterventionContext) -> None:
    """``torch.Generator().seed()`` and ``torch.seed()`` take their seed from the stream instead of the OS;
    torch's global RNG is seeded; draws from it that the program did not seed are reported."""
    base = torch.Generator
    if getattr(base, "_twinrun_patched", False):
        return
    # global: the program seeded torch's global RNG itself (its draws are its business from then on);
    # drew: unseeded draws were reported before that
    seeded = {"global": False, "drew": False}

    def stream_seed(label: str) -> int:
        return int(ctx.sequence(label).generate_state(1, "uint64")[0] >> 1)

    class _Meta(type(base)):  # type: ignore[misc]
        # torch.default_generator and generators made before the patch are still torch.Generators
        def __instancecheck__(cls, obj: object) -> bool:
            return isinstance(obj, base)

    class Generator(base, metaclass=_Meta):  # type: ignore[misc, valid-type]
        _twinrun_patched = True

        def seed(self) -> int:
            ctx.draw("seed-torch", "torch.Generator.seed", "seed")
            value = stream_seed("torch.Generator.seed")
            self.manual_seed(value)
            return value

    Generator.__module__, Generator.__qualname__, Generator.__doc__ = "torch", "Generator", base.__doc__
    real_manual_seed = torch.manual_seed

    def seed() -> int:
        ctx.draw("seed-torch", "torch.seed", "seed")
        value = stream_seed("torch.seed")
        real_manual_seed(value)
        return value

    def manual_seed(value: Any) -> Any:
        if seeded["drew"] and not seeded["global"]:   # a seed that comes after the draws it was meant for
            ctx.draw("seed-torch", "torch.manual_seed", "late-seed")
        seeded["global"] = True
        return real_manual_seed(value)

    def watch(fn: Callable[..., Any], api: str, kind: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("generator") is None and not seeded["global"]:
                seeded["drew"] = True
                ctx.draw("seed-torch", api, kind)
            return fn(*args, **kwargs)
        return call

    setattr(torch, "Generator", Generator)   # noqa: B010 - ModuleType has no such attributes for mypy
    setattr(torch, "seed", seed)             # noqa: B010
    setattr(torch, "manual_seed", manual_seed)   # noqa: B010
    real_manual_seed(int(ctx.fixed_sequence("torch-global").generate_state(1, "uint64")[0] >> 1))
    for name, kind in _DRAWS.items():
        if hasattr(torch, name):
            setattr(torch, name, watch(getattr(torch, name), f"torch.{name}", kind))
    import torch.nn.init as init

    for name in _INIT:
        if hasattr(init, name):
            setattr(init, name, watch(getattr(init, name), f"torch.nn.init.{name}", "init"))

    def watch_dropout(fn: Callable[..., Any], api: str) -> Callable[..., Any]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            if not seeded["global"]:
                try:
                    bound = signature.bind(*args, **kwargs)
                except TypeError:
                    return fn(*args, **kwargs)
                bound.apply_defaults()
                if bound.arguments.get("training") and bound.arguments.get("p"):
                    seeded["drew"] = True
                    ctx.draw("seed-torch", api, "content")
            return fn(*args, **kwargs)
        return call

    import torch.nn.functional as functional  # nn.Dropout calls these through the module: patched there

    for name in _DROPOUTS:
        if hasattr(functional, name):
            setattr(functional, name, watch_dropout(getattr(functional, name), f"torch.nn.functional.{name}"))


INTERVENTIONS = (
    Intervention("seed-torch", "torch.Generator().seed() / torch.seed() take a seed from twinrun's data stream, "
                 "torch's global RNG is seeded, and unseeded draws are reported", "content", _apply_torch, _TORCH_FIX),
    Intervention("seed-loaders", "DataLoaders and random samplers without a generator get a seeded one (and a "
                 "worker_init_fn)", "order", _apply, _FIX, priority=1),
)
