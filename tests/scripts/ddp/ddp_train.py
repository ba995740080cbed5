"""Seeded DDP training on digits: data differs across ranks, init is identical. The correct case.

    python -m torch.distributed.run --standalone --nproc-per-node 2 ddp_train.py --dump out/

``torch.manual_seed(seed)`` on every rank makes init identical (DDP also broadcasts rank 0's
parameters at construction); ``DistributedSampler(seed=seed)`` gives each rank its own shard of one
shuffled order. The DDP options expose the bucket settings that could change numerics.
"""

from typing import Any

import torch
from ddp_common import MLP, Dump, batches, digits, finish, parser, rank_and_world, train
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--bucket-cap-mb", type=float, default=None)
    p.add_argument("--gradient-as-bucket-view", action="store_true")
    p.add_argument("--static-graph", action="store_true")
    p.add_argument("--find-unused-parameters", action="store_true")
    p.add_argument("--init-seed-per-rank", action="store_true",
                   help="seed init with seed + rank (DDP's broadcast at construction should hide it)")
    args = p.parse_args()
    rank, world = rank_and_world()

    torch.manual_seed(args.seed + (rank if args.init_seed_per_rank else 0))
    net = MLP(args.hidden)
    ddp_kw = {}
    if args.bucket_cap_mb is not None:
        ddp_kw["bucket_cap_mb"] = args.bucket_cap_mb
    model = DDP(net, gradient_as_bucket_view=args.gradient_as_bucket_view, static_graph=args.static_graph,
                find_unused_parameters=args.find_unused_parameters, **ddp_kw)
    ds = digits()
    sampler: DistributedSampler[Any] = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True,
                                                          seed=args.seed, drop_last=True)
    loader = DataLoader(ds, batch_size=args.batch // world, sampler=sampler, drop_last=True)
    loss = train(model, net, batches(loader, sampler), args.steps, args.lr, Dump(args.dump, rank, args.values))
    if rank == 0:
        print(f"final loss {loss:.6f}")
    finish()


if __name__ == "__main__":
    main()
