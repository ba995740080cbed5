"""PyTorch's multi-process facts: how ranks are launched, the process group a script started, and
the DDP bucket layout doctor can change (``ddp-small-buckets``).

Launching is ``python -m torch.distributed.run --standalone --nproc-per-node N -m MODULE ARGS``,
exactly what ``torchrun --standalone --nproc-per-node N`` does with this interpreter: a c10d
rendezvous on a free port of this machine (several launches can run at once), ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ... and ``TORCHELASTIC_RUN_ID`` in each rank's environment, and
``OMP_NUM_THREADS=1`` when the user has not set it. The backend is the script's choice
(``init_process_group("gloo")`` on CPU, ``"nccl"`` on CUDA); it is read once the group exists.
Measured facts: ``docs/distributed.md``.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..._errors import FrameworkMissingError
from ..base import Intervention, InterventionContext

__all__ = ["BUCKET_INTERVENTIONS", "end_process_group", "launcher", "process_group"]


def launcher(nproc: int) -> list[str]:
    """``[python, -m, torch.distributed.run, --standalone, --nproc-per-node, N]``; torch is not imported."""
    if importlib.util.find_spec("torch") is None:
        raise FrameworkMissingError("--nproc launches the ranks through torch.distributed, and torch is not "
                                    "installed: pip install 'twinrun[torch]'")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]


def process_group() -> dict[str, Any] | None:
    """The backend, rank and size of the default process group, once the script has started it."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return None
    return {"backend": str(dist.get_backend()), "rank": int(dist.get_rank()),
            "world_size": int(dist.get_world_size())}


def end_process_group() -> bool:
    """``destroy_process_group()`` when the script left the group started (a ``--max-steps`` stop gives it
    no chance to): a rank that exits with gloo's threads alive can abort at interpreter exit."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return False
    dist.destroy_process_group()
    return True


# --- the bucket layout, for doctor on 3+ ranks ------------------------------------------------------

# One parameter per bucket: a layout far from the default (one bucket of up to 25 MB, rebuilt in
# gradient-ready order before the second iteration), so that gloo sums each gradient at another
# place of another buffer. On 2 ranks a + b == b + a and no layout can change a number.
_SMALL_BUCKET_MB = 1e-6


def _apply_small_buckets(ctx: InterventionContext) -> None:
    from .. import when_imported

    when_imported("torch", lambda torch: _patch_ddp(torch, ctx))


def _patch_ddp(torch: ModuleType, ctx: InterventionContext) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    original: Callable[..., None] = DDP.__init__
    if getattr(original, "_twinrun_patched", False):
        return
    sig = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            bound = sig.bind_partial(self, *args, **kwargs).arguments
        except TypeError:   # let the real constructor report the bad call
            return original(self, *args, **kwargs)
        if "bucket_cap_mb" not in bound:
            kwargs["bucket_cap_mb"] = _SMALL_BUCKET_MB
            ctx.note("ddp-small-buckets", "DistributedDataParallel(...) with the default bucket size",
                     "DistributedDataParallel(...)")
        return original(self, *args, **kwargs)

    __init__._twinrun_patched = True  # type: ignore[attr-defined]
    DDP.__init__ = __init__  # type: ignore[method-assign]


_BUCKET_FIX = ("Pin DDP's bucket layout the same on every machine and rank count ({where}: `bucket_cap_mb`, "
               "`static_graph`, `find_unused_parameters`): on 3 or more ranks gloo sums each gradient in an order "
               "that depends on its place in the bucket.")

BUCKET_INTERVENTIONS = (
    Intervention("ddp-small-buckets", "DistributedDataParallel gets one parameter per gradient bucket "
                 "(bucket_cap_mb, unless the script sets it): another all-reduce layout", "reduction",
                 _apply_small_buckets, _BUCKET_FIX),
)
