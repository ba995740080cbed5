"""Does a gloo all-reduce sum each element in an order that depends on where it sits in the buffer?

    python -m torch.distributed.run --standalone --nproc-per-node 4 ddp_allreduce_order.py

Every rank all-reduces the same per-rank random float32 vector twice: alone, and inside a larger
buffer at an offset (as a parameter's gradient sits in a DDP bucket whose layout the bucket settings
decide). Rank 0 prints, per offset and buffer length, how many elements differ between the two
results, and whether each equals a left-to-right sum over ranks. With 2 ranks the sum of two numbers
is the same in either order, so nothing can differ.
"""

import json

import torch
import torch.distributed as dist
from ddp_common import finish


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    n = 4096
    xs = [torch.randn(n, generator=torch.Generator().manual_seed(100 + r)) for r in range(world)]
    left_to_right = xs[0].clone()
    for r in range(1, world):
        left_to_right += xs[r]
    alone = xs[rank].clone()
    dist.all_reduce(alone)
    rows = []
    for offset, total in ((0, n), (1, n + 1), (7, n + 64), (1000, n + 5000), (0, 4 * n)):
        buf = torch.zeros(total)
        buf[offset:offset + n] = xs[rank]
        dist.all_reduce(buf)
        got = buf[offset:offset + n]
        rows.append({"offset": offset, "buffer": total, "differ_from_alone": int((got != alone).sum()),
                     "differ_from_left_to_right": int((got != left_to_right).sum())})
    if rank == 0:
        print(json.dumps({"world": world, "alone_differs_from_left_to_right": int((alone != left_to_right).sum()),
                          "placements": rows}), flush=True)
    finish()


if __name__ == "__main__":
    main()
