"""What the DDP case scripts share: digits data, a tiny MLP, one training loop, per-rank dumps.

The scripts are plain PyTorch (no twinrun import), so that ``twinrun run`` can later record them
unchanged. ``--dump DIR`` makes each process write what a replica check needs, computed here as a
stand-in for twinrun's own trace: ``DIR/rank<R>.jsonl``, one JSON line per step with the 128-bit
xxh3 digest of every parameter after the step (the same formula as ``twinrun.trace.digest``: dtype
and shape, then the bytes), the digest of the rank's input batch and the loss; and with
``--values`` ``DIR/rank<R>.npz`` with every parameter at every step (``step<K>/<name>``), for ULP
distances between runs. Steps count from 0, as in a twinrun trace.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xxhash
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=64, help="global batch: each of N ranks takes batch/N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=32, help="hidden width (2048: a thread-sensitive SGEMM)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--dump", metavar="DIR", help="write per-step digests to DIR/rank<R>.jsonl")
    p.add_argument("--values", action="store_true", help="with --dump: also every parameter, DIR/rank<R>.npz")
    return p


def digits() -> TensorDataset:
    d = load_digits()
    x = torch.from_numpy((d.data / 16.0).astype(np.float32))
    y = torch.from_numpy(d.target.astype(np.int64))
    return TensorDataset(x, y)


class MLP(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def digest(t: torch.Tensor) -> str:
    """xxh3-128 of dtype + shape + bytes: ``twinrun.trace.digest`` of the tensor's NumPy view."""
    a = t.detach().contiguous().numpy()
    h = xxhash.xxh3_128(f"{a.dtype}[{','.join(map(str, a.shape))}]".encode())
    h.update(a.data)  # the buffer itself, no copy
    return h.hexdigest()


class Dump:
    """One JSON line per step: parameter digests (after the step), input digest, loss."""

    def __init__(self, folder: str | None, rank: int, values: bool):
        self.rank = rank
        self.file = None
        self.values: dict[str, np.ndarray] | None = {} if values and folder else None
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.path = Path(folder) / f"rank{rank}.jsonl"
            self.file = self.path.open("w", encoding="utf-8")

    def write(self, step: int, net: nn.Module, x: torch.Tensor | None, loss: torch.Tensor | None) -> None:
        if self.file is None:
            return
        params = {name: digest(p) for name, p in net.named_parameters()}
        row = {"step": step, "rank": self.rank, "params": params,
               "input": digest(x) if x is not None else None,
               "loss": float(loss.detach()) if loss is not None else None,
               "threads": torch.get_num_threads()}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.values is not None:
            for name, p in net.named_parameters():
                self.values[f"step{step}/{name}"] = p.detach().numpy().copy()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            if self.values is not None:
                arrays: dict[str, Any] = dict(self.values)
                np.savez(self.path.with_suffix(".npz"), **arrays)


def batches(loader: DataLoader, sampler=None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches, epoch after epoch (``set_epoch`` on a DistributedSampler)."""
    epoch = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def train(model: nn.Module, net: nn.Module, data: Iterator, steps: int, lr: float, dump: Dump,
          before_step: Callable[[int], None] | None = None,
          after_step: Callable[[int], None] | None = None) -> float:
    """``steps`` SGD steps of ``model`` (``net`` is the bare module under a DDP wrapper).

    The dump is written from the optimizer's step post-hook, where twinrun records ``param``
    events. ``before_step(k)`` runs between backward (the all-reduce) and ``optimizer.step()``;
    ``after_step(k)`` after it returned. Both exist for the buggy scripts.
    """
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    dump.write(-1, net, None, None)  # the parameters before any step: the replicas' init
    now: dict = {}
    opt.register_step_post_hook(lambda *_: dump.write(now["step"], net, now["x"], now["loss"]))
    loss = torch.zeros(())
    for step in range(steps):
        x, y = next(data)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        now.update(step=step, x=x, loss=loss)
        if before_step is not None:
            before_step(step)
        opt.step()
        if after_step is not None:
            after_step(step)
    dump.close()
    return float(loss.detach())


def rank_and_world() -> tuple[int, int]:
    """The process group's rank and size; the group is started from torchrun's variables."""
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(os.environ.get("DDP_BACKEND", backend))
    return dist.get_rank(), dist.get_world_size()


# Set by ``ddp_harness`` for the launches it makes under plain torchrun (not under ``twinrun run``, which
# leaves each rank the same way itself, after writing its trace and report).
HARD_EXIT_ENV = "DDP_CASE_HARD_EXIT"


def finish() -> None:
    """``destroy_process_group()``; then, when the harness asks, leave by ``os._exit(0)``.

    A gloo rank can die of SIGABRT ("terminate called without an active exception") while the
    interpreter finalizes, after the script is done and the group destroyed: three launches in a row
    did so in one CI run (``--static-graph --find-unused-parameters``). Everything measured is written
    by then (the dumps are closed by ``train``), so the harness skips the finalization instead of
    relaunching.
    """
    import torch.distributed as dist

    dist.destroy_process_group()
    if os.environ.get(HARD_EXIT_ENV) == "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
