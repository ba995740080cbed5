r"""DDP where one rank leaves early: what the other ranks and the launcher do then.

    python -m torch.distributed.run --standalone --nproc-per-node 2 ddp_early_exit.py \
        --exit-rank 1 --exit-step 2 --code 0

Rank ``--exit-rank`` stops after step ``--exit-step`` with exit code ``--code`` (``raise`` to raise
instead) while the others go on into the next all-reduce. This is what a recorder does to a rank
when it stops one rank only (``--max-steps`` reached on one rank, ``--against`` diverging on one
rank): it shows whether the rest hang, fail, and how the launcher reports it. With
``EARLY_EXIT_HARD=1`` the rank leaves by ``os._exit`` (no interpreter finalization).
"""

import os
import sys
import time
from typing import Any

import torch
import torch.distributed as dist
from ddp_common import MLP, Dump, batches, digits, parser, rank_and_world, train
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--exit-rank", type=int, default=1, help="-1: every rank (as --max-steps does)")
    p.add_argument("--exit-step", type=int, default=2)
    p.add_argument("--code", default="0", help="exit code, or 'raise'")
    p.add_argument("--destroy-first", action="store_true", help="destroy_process_group() before leaving")
    p.add_argument("--no-destroy", action="store_true", help="end normally without destroy_process_group()")
    args = p.parse_args()
    rank, world = rank_and_world()
    torch.manual_seed(args.seed)
    net = MLP(args.hidden)
    model = DDP(net)
    ds = digits()
    sampler: DistributedSampler[Any] = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True,
                                                          seed=args.seed, drop_last=True)
    loader = DataLoader(ds, batch_size=args.batch // world, sampler=sampler, drop_last=True)
    t0 = time.perf_counter()

    def leave(step: int) -> None:
        if step == args.exit_step and args.exit_rank in (rank, -1):
            print(f"rank {rank}: leaving after step {step}", file=sys.stderr, flush=True)
            if args.code == "raise":
                raise RuntimeError(f"rank {rank} raised after step {step}")
            if args.destroy_first:
                dist.destroy_process_group()
            os._exit(int(args.code)) if os.environ.get("EARLY_EXIT_HARD") else sys.exit(int(args.code))

    try:
        train(model, net, batches(loader, sampler), args.steps, args.lr, Dump(args.dump, rank, False),
              after_step=leave)
    finally:
        print(f"rank {rank}: ended after {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    if not args.no_destroy:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
