"""DDP where every rank shuffles the data with the same seed: all ranks train on identical batches.

    python -m torch.distributed.run --standalone --nproc-per-node 2 ddp_same_data_seed.py --dump out/

The classic bug: a plain ``DataLoader(shuffle=True)`` with a generator seeded identically on every
rank, instead of a ``DistributedSampler``. Nothing fails and the replicas stay identical (the
gradients are still all-reduced), but the run is a 1-rank run at batch/N that costs N times as much:
the input digests of every step are the same on every rank.
"""

import torch
from ddp_common import MLP, Dump, batches, digits, finish, parser, rank_and_world, train
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader


def main() -> None:
    args = parser(__doc__).parse_args()
    rank, world = rank_and_world()

    torch.manual_seed(args.seed)
    net = MLP(args.hidden)
    model = DDP(net)
    gen = torch.Generator().manual_seed(args.seed)  # the same on every rank: the bug
    loader = DataLoader(digits(), batch_size=args.batch // world, shuffle=True, generator=gen, drop_last=True)
    loss = train(model, net, batches(loader), args.steps, args.lr, Dump(args.dump, rank, args.values))
    if rank == 0:
        print(f"final loss {loss:.6f}")
    finish()


if __name__ == "__main__":
    main()
