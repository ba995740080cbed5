"""The open step of a recording, held in memory: its events in program order, finished all at once.

A step of an RNN records its cell hundreds of times, each a few kilobytes: the fixed cost per event,
not the bytes, is what tracing costs there. So a small float32 tensor (at most ``SMALL`` elements) is
only copied at the call, into the step's arena (the tensor may change in place later in the step), and
its digest and float64 stats are computed at the end of the step for all of them at once
(``segment_sums``); any other tensor is digested at the call, as it is then. ``TraceWriter.append_step``
turns a finished batch into rows.

>>> import numpy as np
>>> b = StepBatch()
>>> e = b.add("forward", "cell", np.ones(4, np.float32), "float32", per_sample=False, same_as=None,
...           step=0, keep_up_to=65_536, budget_left=1 << 20)
>>> e.digest is None, len(b.take()[0]), e.l2
(True, 1, 2.0)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xxhash

from .digest import SMALL, STORAGE, contiguous, digest_and_stats, digest_prefix, sample_digests, segment_sums, stats

__all__ = ["ARENA_LIMIT", "BATCH", "Pending", "StepBatch"]

BATCH = 1 << 20           # float32 elements whose stats are reduced in one go (bounded float64 scratch)
ARENA_LIMIT = 64 << 20    # bytes of small tensors held before the step so far goes to the writer

_F32 = np.dtype(np.float32)


class Pending:
    """An event of the open step; ``Recorder.event`` returns it, and hooks pass it back as ``same_as``.

    A small float32 tensor has ``offset`` >= 0 (its bytes in the arena) and gets ``digest`` and
    ``stats`` when the batch is taken; any other is finished at once (``offset`` -1), with ``value``
    the bytes to keep, if any. ``source``: the earlier event of the very same, unchanged tensor.
    """

    __slots__ = ("digest", "dtype", "name", "offset", "phase", "samples", "shape", "size", "source", "stats",
                 "step", "value")

    def __init__(self, phase: str, name: str, dtype: str, shape: tuple[int, ...], offset: int, size: int,
                 step: int):
        self.phase, self.name, self.dtype, self.shape = phase, name, dtype, shape
        self.offset, self.size, self.step = offset, size, step
        self.source: Pending | None = None
        self.digest: str | None = None
        self.stats: tuple[float, float, float, int] = (math.nan, math.nan, math.nan, 0)
        self.value: Any = None          # bytes to keep (finished at once), then the offset it was kept at
        self.samples: bytes | None = None

    @property
    def l2(self) -> float:
        return self.stats[0]

    @property
    def mean(self) -> float:
        return self.stats[1]

    @property
    def maxabs(self) -> float:
        return self.stats[2]

    @property
    def nonfinite(self) -> int:
        return self.stats[3]


class StepBatch:
    """The events of one open step and the arena of its small float32 tensors."""

    def __init__(self) -> None:
        self.pending: list[Pending] = []
        self.arena = bytearray()
        self._scratch = np.empty(0)

    @property
    def full(self) -> bool:
        """Whether the arena passed ``ARENA_LIMIT``: the step so far should go to the writer now."""
        return len(self.arena) >= ARENA_LIMIT

    def add(self, phase: str, name: str, array: np.ndarray, dtype: str, *, per_sample: bool, same_as: Any,
            step: int, keep_up_to: int, budget_left: int) -> Pending:
        """Add one event of ``step``: a small float32 tensor is copied, any other digested now (its
        value copied when it has at most ``keep_up_to`` elements and ``budget_left`` bytes would hold
        it: the writer decides at the end of the step whether the budget keeps it)."""
        if (type(array) is np.ndarray and array.dtype == _F32 and dtype == "float32" and 0 < array.size <= SMALL
                and not per_sample):
            src = same_as if (type(same_as) is Pending and same_as.offset >= 0 and same_as.step == step
                              and same_as.shape == array.shape) else None
            if src is not None:
                ev = Pending(phase, name, "float32", src.shape, src.offset, src.size, step)
                ev.source = src
            else:
                if not array.flags.c_contiguous:
                    array = np.ascontiguousarray(array)
                ev = Pending(phase, name, "float32", array.shape, len(self.arena), array.size, step)
                self.arena += array.data
        else:
            ev = self._now(phase, name, array, dtype, per_sample, same_as, step, keep_up_to, budget_left)
        self.pending.append(ev)
        return ev

    def _now(self, phase: str, name: str, array: np.ndarray, dtype: str, per_sample: bool, same_as: Any,
             step: int, keep_up_to: int, budget_left: int) -> Pending:
        """An event finished at once (big, another dtype, per-sample): read while it is as it is."""
        array = contiguous(np.asarray(array))
        shape = tuple(int(s) for s in array.shape)
        ev = Pending(phase, name, dtype, shape, -1, array.size, step)
        if (same_as is not None and same_as.dtype == dtype and tuple(same_as.shape) == shape
                and getattr(same_as, "digest", None) is not None):
            # The very tensor of an earlier event, unchanged (a Sequential's output is its last child's).
            ev.digest, ev.stats = same_as.digest, (same_as.l2, same_as.mean, same_as.maxabs, same_as.nonfinite)
        else:
            ev.digest, ev.stats = digest_and_stats(array, dtype)
        if per_sample and array.ndim >= 1:
            ev.samples = sample_digests(array, dtype)
        storage = STORAGE.get(dtype)
        if (storage is not None and array.size <= keep_up_to and array.nbytes <= budget_left
                and array.dtype.itemsize == np.dtype(storage).itemsize):
            ev.value = array.tobytes()  # a copy: the tensor may change before the step ends
        return ev

    def take(self) -> tuple[list[Pending], bytearray]:
        """The events so far, every one finished, and the arena their small values are in; the batch
        starts empty again. The handles taken no longer point into an arena (``step`` -1): a later
        ``same_as`` of one copies its tensor again."""
        pending, self.pending = self.pending, []
        arena, self.arena = self.arena, bytearray()
        small = [e for e in pending if e.offset >= 0 and e.source is None]
        if small:
            self._finish(small, arena)
        for e in pending:
            src = e.source
            if src is not None:
                e.digest, e.stats = src.digest, src.stats
            e.step = -1
        return pending, arena

    def _finish(self, small: list[Pending], arena: bytearray) -> None:
        """Digest and float64 stats of the small tensors, all at once, in blocks of at most ``BATCH``
        elements (the float64 scratch stays bounded however many a step has)."""
        x32 = np.frombuffer(arena, np.float32)
        starts = np.fromiter((e.offset >> 2 for e in small), np.intp, len(small))
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        k = 0
        while k < len(small):
            first = int(starts[k])
            j = max(int(np.searchsorted(starts, first + BATCH, side="right")), k + 1)
            end = int(starts[j]) if j < len(small) else x32.size
            block = x32[first:end]
            if self._scratch.size < 2 * block.size:
                self._scratch = np.empty(2 * block.size)
            with np.errstate(over="ignore", invalid="ignore"):
                parts.append(segment_sums(block, starts[k:j] - first, self._scratch))
            k = j
        ss, total, hi, lo = (np.concatenate(p) if len(parts) > 1 else p[0] for p in zip(*parts))
        # What digest._finish does for one tensor, for all of them at once (the same IEEE operations:
        # correctly rounded sqrt and division, max of exact values, so the same bits).
        with np.errstate(over="ignore", invalid="ignore"):
            finite = (np.isfinite(ss) & np.isfinite(total)).tolist()
            sizes = np.fromiter((e.size for e in small), np.float64, len(small))
            l2, mean, maxabs = np.sqrt(ss).tolist(), (total / sizes).tolist(), np.maximum(hi, -lo).tolist()
        prefixes: dict[tuple[int, ...], Any] = {}
        with memoryview(arena) as mv:
            for k, e in enumerate(small):
                a = e.offset
                base = prefixes.get(e.shape)
                if base is None:
                    base = prefixes[e.shape] = xxhash.xxh3_128(digest_prefix("float32", e.shape))
                h = base.copy()
                h.update(mv[a:a + 4 * e.size])
                e.digest = h.hexdigest()
                if finite[k]:
                    e.stats = (l2[k], mean[k], maxabs[k], 0)
                else:   # a non-finite value: the general path counts them
                    e.stats = stats(x32[a >> 2:(a >> 2) + e.size], "float32")
        del x32, block   # views of the arena: it may grow into the step's value blob
