"""DDP where one rank updates a parameter outside DDP's all-reduce: the replicas part. A buggy case.

    python -m torch.distributed.run --standalone --nproc-per-node 2 ddp_rogue_rank.py --dump out/

Everything as in ddp_train.py, except that at step ``--rogue-step`` (default 2) rank
``--rogue-rank`` (default 1) applies its gradient of ``--rogue-param`` (default ``fc2.bias``) a
second time: ``before`` (default) between backward and ``optimizer.step()``, so the parameters after
that step already differ; ``after`` once ``optimizer.step()`` has returned, where a recorder hooked
on the optimizer step sees it only in the next step's parameters. The gradients stay all-reduced,
so the other parameters remain identical on every rank: only the rogue one parts.
"""

from typing import Any

import torch
from ddp_common import MLP, Dump, batches, digits, finish, parser, rank_and_world, train
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--rogue-step", type=int, default=2)
    p.add_argument("--rogue-rank", type=int, default=1)
    p.add_argument("--rogue-param", default="fc2.bias")
    p.add_argument("--rogue-when", choices=("before", "after"), default="before")
    args = p.parse_args()
    rank, world = rank_and_world()

    torch.manual_seed(args.seed)
    net = MLP(args.hidden)
    model = DDP(net)
    ds = digits()
    sampler: DistributedSampler[Any] = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True,
                                                          seed=args.seed, drop_last=True)
    loader = DataLoader(ds, batch_size=args.batch // world, sampler=sampler, drop_last=True)
    param = net.get_parameter(args.rogue_param)

    def rogue(step: int) -> None:
        if step == args.rogue_step and rank == args.rogue_rank:
            with torch.no_grad():
                param.sub_(args.lr * param.grad)  # a local update no other rank makes

    hooks = {"before_step": rogue} if args.rogue_when == "before" else {"after_step": rogue}
    loss = train(model, net, batches(loader, sampler), args.steps, args.lr, Dump(args.dump, rank, args.values),
                 **hooks)
    if rank == 0:
        print(f"final loss {loss:.6f}")
    finish()


if __name__ == "__main__":
    main()
