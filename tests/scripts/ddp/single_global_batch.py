"""One process at the global batch of an N-rank ddp_train.py run: the topology comparison.

    python single_global_batch.py --world 2 --dump out/

The same init (``torch.manual_seed(seed)``) and, at every step, the same samples as all N ranks of
``ddp_train.py`` together: the batch is the ranks' batches concatenated in rank order, drawn from the
same ``DistributedSampler`` shards. The loss is the mean over the global batch, so the gradient is
mathematically the average DDP computes; the numbers part only by summation order (one GEMM over B
rows here, N GEMMs over B/N rows and an all-reduce there).
"""

from typing import Any

import torch
from ddp_common import MLP, Dump, digits, parser, train
from torch.utils.data import DataLoader, DistributedSampler


def global_batches(ds, world: int, batch: int, seed: int):
    samplers: list[DistributedSampler[Any]] = [
        DistributedSampler(ds, num_replicas=world, rank=r, shuffle=True, seed=seed, drop_last=True)
        for r in range(world)]
    loaders = [DataLoader(ds, batch_size=batch // world, sampler=s, drop_last=True) for s in samplers]
    epoch = 0
    while True:
        for s in samplers:
            s.set_epoch(epoch)
        for parts in zip(*loaders):
            yield torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])
        epoch += 1


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--world", type=int, default=2, help="the rank count of the run to match")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    net = MLP(args.hidden)
    data = global_batches(digits(), args.world, args.batch, args.seed)
    loss = train(net, net, data, args.steps, args.lr, Dump(args.dump, 0, args.values))
    print(f"final loss {loss:.6f}")


if __name__ == "__main__":
    main()
