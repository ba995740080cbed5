"""Big parameters: a 100 M-parameter model traced with ``--capture param``.

Goal (issue 16): the time tracing adds to a training step is at most 1.2x the time raw ``xxh3_128``
takes over the same parameter bytes (digest at memory speed, no float64 or contiguous copies of whole
tensors). Measured in one process on one model (8 ``Linear(3536, 3536)`` layers, 100.0 M float32
parameters, 400 MB; SGD without momentum, batch 8), rounds interleaved:

- an untraced training step, and a traced one (``capture=("param",)``): the difference is what
  tracing adds;
- raw ``xxhash.xxh3_128`` over every parameter's memory (``memoryview`` of ``.numpy()``: no copy);
- twinrun's ``digest()`` alone and ``stats()`` alone over the same parameters (what the added time
  is made of), and a traced step with the stats patched out (what tracing would add if they were
  free).

    python benchmarks/bench_bigparams.py             # 8 rounds
    python benchmarks/bench_bigparams.py --quick     # 3 rounds
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _interleave import stats_patched_out, torch_header, twinrun_hooks, twinrun_recorder

WIDTH, LAYERS, BATCH = 3536, 8, 8


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=None)
    a = p.parse_args()

    import torch
    import torch.nn.functional as F
    import xxhash
    from torch import nn

    from twinrun.trace import digest, stats

    torch.set_num_threads(1)
    rounds = a.rounds or (3 if a.quick else 8)
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(WIDTH, WIDTH, bias=False) for _ in range(LAYERS)])
    n_params = sum(q.numel() for q in model.parameters())
    nbytes = sum(q.numel() * q.element_size() for q in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)
    x = torch.randn(BATCH, WIDTH)

    def train_step() -> None:
        opt.zero_grad()
        F.mse_loss(model(x), x).backward()
        opt.step()

    folder = Path(tempfile.mkdtemp())
    rec = twinrun_recorder(folder / "big.trace", ("param",))
    hooks = twinrun_hooks(rec)

    def timed(fn: Callable[[], object]) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - t0, time.process_time() - c0

    def untraced() -> tuple[float, float]:
        return timed(train_step)

    def traced() -> tuple[float, float]:
        with hooks():
            return timed(train_step)

    def traced_digest_only() -> tuple[float, float]:
        """What tracing would add if the float64 stats were free: they are patched out."""
        with stats_patched_out():
            return traced()

    arrays = [q.detach().numpy() for q in model.parameters()]  # views: the same memory, no copy

    def over_params(fn: Callable) -> Callable[[], tuple[float, float]]:
        def f() -> tuple[float, float]:
            return timed(lambda: [fn(arr) for arr in arrays])
        return f

    parts: dict[str, Callable[[], tuple[float, float]]] = {
        "untraced step": untraced,
        "traced step, --capture param": traced,
        "traced step, stats patched out": traced_digest_only,
        "raw xxh3_128 over the parameters": over_params(lambda arr: xxhash.xxh3_128(memoryview(arr)).digest()),
        "twinrun digest() alone": over_params(lambda arr: digest(arr, "float32")),
        "twinrun stats() alone": over_params(lambda arr: stats(arr, "float32")),
    }
    for fn in parts.values():
        fn()  # warm-up; the first traced step also learns the names
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in parts}
    names = list(parts)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            got[name].append(parts[name]())
    rec.close()
    print(f"{torch_header()}; {LAYERS} x Linear({WIDTH}, {WIDTH}): {n_params / 1e6:.1f} M parameters, "
          f"{nbytes / 1e6:.0f} MB; {rounds} rounds, medians")
    print(f"  {'part':<36} {'wall ms':>8} {'CPU ms':>8}  GB/s (CPU)  spread (wall)")
    med = {}
    for k, v in got.items():
        wall, cpu = statistics.median(w for w, _ in v), statistics.median(c for _, c in v)
        med[k] = (wall, cpu)
        spread = (max(w for w, _ in v) - min(w for w, _ in v)) / wall
        print(f"  {k:<36} {wall * 1e3:8.1f} {cpu * 1e3:8.1f}  {nbytes / cpu / 1e9:9.1f}  {spread * 100:5.0f}%")
    for i, clock in ((0, "wall"), (1, "CPU")):
        added = med["traced step, --capture param"][i] - med["untraced step"][i]
        raw = med["raw xxh3_128 over the parameters"][i]
        free = med["traced step, stats patched out"][i] - med["untraced step"][i]
        print(f"{clock}: added by tracing {added * 1e3:.1f} ms per step = {added / raw:.2f}x raw xxh3_128 "
              f"(goal <= 1.2x); untraced step {med['untraced step'][i] * 1e3:.0f} ms; with the stats patched "
              f"out {free * 1e3:.1f} ms = {free / raw:.2f}x")


if __name__ == "__main__":
    main()
