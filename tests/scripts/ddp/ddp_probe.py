"""What a launched process knows about its rank, before and after ``init_process_group``.

    python -m torch.distributed.run --standalone --nproc-per-node 2 ddp_probe.py [--no-torch]

Prints one JSON line per rank: torchrun's variables at start, ``torch.distributed.is_initialized()``
before and after ``init_process_group("gloo")``, the group's rank, size and backend, the thread
count, and the seconds from interpreter start to each point. ``--no-torch`` prints the variables
and exits without importing torch (the launcher's own cost).
"""

import json
import os
import sys
import time

T0 = time.time()
VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
        "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
        "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_USE_AGENT_STORE",
        "TORCHELASTIC_ERROR_FILE", "TORCH_NCCL_ASYNC_ERROR_HANDLING", "OMP_NUM_THREADS")


def emit(out: dict) -> None:
    # one write of the whole line: the ranks share the launcher's stdout, and print() writes the
    # newline separately, so two ranks printing at once could interleave their lines
    os.write(1, (json.dumps(out) + "\n").encode())


def main() -> None:
    out: dict = {"argv": sys.argv, "env": {k: os.environ[k] for k in VARS if k in os.environ}}
    if "--no-torch" in sys.argv:
        emit(out)
        return
    import torch
    import torch.distributed as dist

    out["import_s"] = round(time.time() - T0, 3)
    out["initialized_before"] = dist.is_initialized()
    out["torchelastic_launched"] = dist.is_torchelastic_launched()
    dist.init_process_group("gloo")
    out["init_s"] = round(time.time() - T0, 3)
    out.update(initialized_after=dist.is_initialized(), rank=dist.get_rank(), world_size=dist.get_world_size(),
               backend=dist.get_backend(), threads=torch.get_num_threads())
    emit(out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
