"""Many small calls: an ``LSTMCell`` unrolled over 200 time steps (hidden 32, batch 16, CPU).

Training steps (SGD) measured side by side in one process, modes interleaved step by step:

- untraced;
- twinrun, every phase (goal, issue 16: at most 1.5x untraced);
- twinrun, ``--capture param``;
- PyTorch's own ``torch.utils._debug_mode.DebugMode`` with ``DebugMode.log_tensor_hashes()``, hashing
  every op's output with ``hash_tensor`` and with ``norm`` (nothing stored; a weaker hash).

A traced step records about 400 events of 2 KB each (the cell's h and c at every time step), so this
workload measures the fixed cost per event.

    python benchmarks/bench_lstm.py             # 30 steps per mode, 3 repeats
    python benchmarks/bench_lstm.py --quick     # 6 steps, 1 repeat

One torch thread by default (``--threads``): the model is far too small to gain from a second one.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _interleave import (
    print_table,
    ratios,
    repeat_summary,
    run_interleaved,
    torch_header,
    traced_mode,
)

T, B, F_IN, HIDDEN, CLASSES = 200, 16, 32, 32, 10


def build_model():
    import torch
    from torch import nn

    class UnrolledLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = nn.LSTMCell(F_IN, HIDDEN)
            self.head = nn.Linear(HIDDEN, CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = c = x.new_zeros(x.shape[0], HIDDEN)
            for t in range(x.shape[1]):
                h, c = self.cell(x[:, t], (h, c))
            return self.head(h)

    return UnrolledLSTM()


def data(n: int = 4):
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn(n, B, T, F_IN, generator=g), torch.randint(0, CLASSES, (n, B), generator=g)


def make_step(model, opt, xs, ys):
    import torch.nn.functional as F

    def step(s: int) -> None:
        opt.zero_grad()
        F.cross_entropy(model(xs[s % len(xs)]), ys[s % len(ys)]).backward()
        opt.step()

    return step


def measure(steps: int, folder: Path, debugmode: bool = True) -> dict:
    import torch

    xs, ys = data()
    modes = []
    specs = [("untraced", None), ("twinrun, every phase", "all"), ("twinrun, --capture param", ("param",))]
    if debugmode:
        specs += [("DebugMode + hashes (hash_tensor)", "hash_tensor"), ("DebugMode + hashes (norm)", "norm")]
    for name, how in specs:
        torch.manual_seed(0)
        model = build_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        modes.append(traced_mode(name, make_step(model, opt, xs, ys), how, folder / f"{len(modes)}.trace"))
    run_interleaved(modes, steps)
    return ratios(modes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (default 1: on a shared 2-core machine two OpenMP threads "
                        "spin-wait on each other and a step of this tiny model takes 10x longer)")
    p.add_argument("--no-debugmode", action="store_true")
    a = p.parse_args()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    steps = a.steps or (6 if a.quick else 30)
    repeats = a.repeats or (1 if a.quick else 3)
    print(f"{torch_header()}; LSTMCell unrolled over {T} steps, hidden {HIDDEN}, batch {B}, "
          f"input {F_IN}; {steps} steps per mode, {repeats} repeat(s)")
    runs = []
    for r in range(repeats):
        with tempfile.TemporaryDirectory() as d:
            res = measure(steps, Path(d), debugmode=not a.no_debugmode)
        print(f"repeat {r + 1}:")
        print_table(res, {"twinrun, every phase": "<= 1.5"})
        runs.append(res)
    repeat_summary(runs)


if __name__ == "__main__":
    main()
