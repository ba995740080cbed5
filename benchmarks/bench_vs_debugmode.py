"""twinrun against PyTorch's own ``DebugMode`` on the ResNet-style CNN of ``bench_tracing.py``.

Training steps (3x32x32 images, batch 64, SGD) measured side by side in one process, modes
interleaved step by step: untraced; twinrun with every phase (goal, issue 16: at most 1.10x) and
with ``--capture param`` (goal: at most 1.02x); ``torch.utils._debug_mode.DebugMode`` with
``DebugMode.log_tensor_hashes()`` hashing every op's output with ``hash_tensor`` and with ``norm``.

    python benchmarks/bench_vs_debugmode.py             # 20 steps per mode, 3 repeats
    python benchmarks/bench_vs_debugmode.py --quick     # 5 steps, 1 repeat

One torch thread by default (``--threads``), as in ``bench_lstm.py``: on a shared 2-core machine
two OpenMP threads wait on each other and the untraced step's time swings by 2x from step to step.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from _interleave import (
    print_table,
    ratios,
    repeat_summary,
    run_interleaved,
    stats_patched_out,
    torch_header,
    traced_mode,
)
from bench_tracing import build_model, data


@contextlib.contextmanager
def with_stats_patched_out(around) -> Iterator[None]:
    with stats_patched_out(), around():
        yield


def measure(steps: int, folder: Path, debugmode: bool = True, patched: bool = False) -> dict:
    import torch
    import torch.nn.functional as F

    xs, ys = data(4)
    specs = [("untraced", None), ("twinrun, every phase", "all"), ("twinrun, --capture param", ("param",))]
    if patched:
        specs.append(("twinrun, every phase, stats patched out", "patched"))
    if debugmode:
        specs += [("DebugMode + hashes (hash_tensor)", "hash_tensor"), ("DebugMode + hashes (norm)", "norm")]
    modes = []
    for name, how in specs:
        torch.manual_seed(0)
        model = build_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

        def step(s: int, model=model, opt=opt) -> None:
            opt.zero_grad()
            F.cross_entropy(model(xs[s % len(xs)]), ys[s % len(ys)]).backward()
            opt.step()

        mode = traced_mode(name, step, "all" if how == "patched" else how, folder / f"{len(modes)}.trace")
        if how == "patched":
            hooks = mode.around
            mode.around = lambda hooks=hooks: with_stats_patched_out(hooks)
        modes.append(mode)
    run_interleaved(modes, steps)
    return ratios(modes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--no-debugmode", action="store_true")
    p.add_argument("--stats-patched-out", action="store_true",
                   help="add a mode with the float64 stats of big tensors patched out (what they cost)")
    a = p.parse_args()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    steps = a.steps or (5 if a.quick else 20)
    repeats = a.repeats or (1 if a.quick else 3)
    print(f"{torch_header()}; ResNet-style CNN, 3x32x32, batch 64; {steps} steps per mode, {repeats} repeat(s)")
    runs = []
    for r in range(repeats):
        with tempfile.TemporaryDirectory() as d:
            res = measure(steps, Path(d), debugmode=not a.no_debugmode, patched=a.stats_patched_out)
        print(f"repeat {r + 1}:")
        print_table(res, {"twinrun, every phase": "<= 1.10", "twinrun, --capture param": "<= 1.02"})
        runs.append(res)
    repeat_summary(runs)


if __name__ == "__main__":
    main()
