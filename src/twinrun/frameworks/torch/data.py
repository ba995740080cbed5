"""PyTorch data-loader seeding: a seeded ``generator`` and a ``worker_init_fn`` from twinrun's streams.

Each worker seeds Python ``random``, NumPy's global RNG and torch from the SeedSequences
``(stream, "worker", rank, worker_id, base_seed, "python" | "numpy" | "torch")`` of the active Seeds
(``worker_rng()``: ``..., "worker_rng"``), where ``base_seed`` is the
number torch draws from the loader's (seeded) generator at the start of every epoch: so workers
differ from each other, epochs differ from each other (also with non-persistent workers, which
restart every epoch), ranks differ from each other, and a fresh process repeats all of it.

A ``numpy.random.Generator`` the dataset creates in ``__init__`` is copied into every worker as is;
twinrun does not reach into the dataset to reseed it. Use ``worker_rng()`` (or create the Generator
inside the worker) instead.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ... import _active
from ..._errors import UsageError

if TYPE_CHECKING:
    from ...seeding import Seeds

__all__ = ["STREAM", "WorkerInit", "generator", "loader_kwargs", "worker_rng"]

STREAM = "data"
_M64 = (1 << 64) - 1
# Process state, documented: in a DataLoader worker, WorkerInit leaves (pid, its numpy Generator)
# here (the pid tells a worker's own from a forked copy); in the main process, worker_rng() keeps
# one Generator per (Seeds, stream, rank), so that its draws continue from call to call.
_worker_state: tuple[int, np.random.Generator] | None = None
_main_rngs: dict[tuple[int, str, int], tuple[Any, np.random.Generator]] = {}


def generator(seed: int, device: str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (0 <= seed < 2**64)."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def _active_seeds() -> Seeds:
    seeds = _active.current_seeds()
    if seeds is None:
        raise UsageError("no root seed yet: call twinrun.seed_everything() before twinrun.torch.loader_kwargs()")
    return seeds


class WorkerInit:
    """The ``worker_init_fn`` of ``loader_kwargs``: picklable, so it also works with spawn/forkserver workers.

    Call it first from your own ``worker_init_fn`` when you need one: ``kw["worker_init_fn"](worker_id)``.
    """

    def __init__(self, seeds: Seeds, stream: str, rank: int):
        self.seeds, self.stream, self.rank = seeds, stream, rank

    def sequence(self, worker_id: int, base_seed: int, rng: str) -> np.random.SeedSequence:
        """The worker's sequence for ``rng`` ("python", "numpy", "torch" or "worker_rng")."""
        return self.seeds.sequence(self.stream, "worker", self.rank, worker_id, base_seed & _M64, rng)

    def __call__(self, worker_id: int) -> None:
        global _worker_state
        info = torch.utils.data.get_worker_info()
        if info is None:
            raise UsageError("twinrun's worker_init_fn runs only in DataLoader workers; pass it to DataLoader")
        base_seed = info.seed - info.id   # torch gives worker i the seed base_seed + i
        # One sequence per RNG: seeding Python's and NumPy's Mersenne Twisters from the same words
        # would make random.random() and np.random.rand() draw the same numbers.
        random.seed(int.from_bytes(self.sequence(worker_id, base_seed, "python").generate_state(4).tobytes(), "little"))
        np.random.seed(self.sequence(worker_id, base_seed, "numpy").generate_state(4))
        torch.manual_seed(int(self.sequence(worker_id, base_seed, "torch").generate_state(1, np.uint64)[0]))
        rng = np.random.Generator(np.random.PCG64(self.sequence(worker_id, base_seed, "worker_rng")))
        _worker_state = (os.getpid(), rng)
        if _active.current_seeds() is None:   # spawned workers start without it
            _active.set_seeds(self.seeds)


def loader_kwargs(stream: str = STREAM, *, rank: int | None = None) -> dict[str, Any]:
    """``DataLoader`` keyword arguments that make shuffling and worker randomness repeat exactly.

    ``generator`` (from the stream's ``("loader", rank)`` path) fixes the shuffle order and the base
    seed torch draws each epoch; ``worker_init_fn`` seeds each worker's Python, NumPy and torch RNGs from
    (root, stream, rank, worker id, epoch). ``TWINRUN_SEED_<STREAM>`` overrides the stream. ``rank``
    defaults to this process's (``RANK`` under torchrun, else 0), so workers differ across ranks; under
    DDP give the DataLoader a ``DistributedSampler(seed=seeds.int("data"))``, the same seed on every
    rank, which decides the order (the generator then only seeds the workers).

    >>> loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=4,
    ...                     **twinrun.torch.loader_kwargs("data", rank=rank))   # doctest: +SKIP
    """
    seeds = _active_seeds()
    if rank is None:
        rank = _this_rank()
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise UsageError(f"rank must be a non-negative integer, got {rank!r}")
    seeds.stream_root(stream)   # validates the name
    return {"generator": seeds.torch(stream, "loader", rank), "worker_init_fn": WorkerInit(seeds, stream, rank)}


def _this_rank() -> int:
    """``RANK`` under a launcher, else the started process group's rank, else 0 (``seeding.current_rank``)."""
    from ...ranks import current
    from .distributed import process_group

    info = current()
    if info is not None:
        return info.rank
    group = process_group()
    return int(group["rank"]) if group is not None else 0


def worker_rng(stream: str = STREAM, *, rank: int | None = None) -> np.random.Generator:
    """A NumPy Generator for data augmentation, own to this DataLoader worker and epoch.

    In a worker started with ``loader_kwargs``: derived from (root, stream, rank, worker, epoch) as the
    loader's ``worker_init_fn`` set it up (the arguments are the loader's, not read here). In the main
    process (``num_workers=0``): the ``("main", rank)`` generator of ``stream``, one per process, whose
    draws continue from call to call (``rank`` defaults to this process's, so ranks draw differently).
    Call it where you draw (in ``__getitem__``), not in ``__init__``.
    """
    info = torch.utils.data.get_worker_info()
    if info is not None:
        if _worker_state is None or _worker_state[0] != os.getpid():
            raise UsageError("worker_rng() was called in a DataLoader worker not started by twinrun; "
                             "pass **twinrun.torch.loader_kwargs() to the DataLoader")
        return _worker_state[1]
    seeds = _active_seeds()
    rank = _this_rank() if rank is None else rank
    key = (id(seeds), stream, rank)
    held = _main_rngs.get(key)
    if held is None or held[0] is not seeds:
        held = _main_rngs[key] = (seeds, seeds.numpy(stream, "main", rank))
    return held[1]
