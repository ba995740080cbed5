"""Inference time under ``batch_invariant()`` against default PyTorch, side by side.

Models: a 4-layer 512-wide GELU MLP and a small pre-norm transformer block (d=256, 4 heads, T=32,
MLP 4x, causal SDPA), at batch 1 and 64, under ``torch.no_grad()``. Modes, interleaved over rounds,
medians:

- ``default``: PyTorch's own kernels;
- ``library``: ``batch_invariant()`` (``torch.library`` overrides on the CPU key, registered on entry);
- ``library_rows32``: the same with every matrix product padded to 32 rows (no calibrated block),
  as before the calibration;
- ``dispatch_mode``: the same kernels routed through a ``TorchDispatchMode`` instead, to compare the
  two registration mechanisms (every aten op then passes through Python);
- ``threads1``: ``torch.set_num_threads(1)``, the other way to make thread count irrelevant.

    python benchmarks/bench_batch_invariant.py [--rounds 7] [--calls 20] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for every mode (default: torch's own); on a busy machine 1 "
                         "keeps OpenMP waits out of the ratios")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils._python_dispatch import TorchDispatchMode

    from twinrun.frameworks.torch import batch_invariant as bi

    class Block(nn.Module):
        def __init__(self, d: int = 256, heads: int = 4) -> None:
            super().__init__()
            self.heads = heads
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
            x = x + self.proj(a)
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

    class Mode(TorchDispatchMode):
        """The same kernels as batch_invariant(), found per call by op name."""

        table: ClassVar[dict[str, Any]] = dict(bi._KERNELS)

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            name = func._overloadpacket.__name__
            overload = func._overloadname
            fn = self.table.get(f"{name}.{overload}") or (self.table.get(name) if overload == "default" else None)
            return (fn or func)(*args, **(kwargs or {}))

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    mlp = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(512, 512), nn.GELU())]).eval()
    block = Block().eval()
    cases = {
        "mlp_b64": (mlp, torch.randn(64, 512)),
        "mlp_b1": (mlp, torch.randn(1, 512)),
        "block_b64": (block, torch.randn(64, 32, 256)),
        "block_b1": (block, torch.randn(1, 32, 256)),
    }
    default_threads = torch.get_num_threads()

    class Threads1:
        def __enter__(self) -> None:
            torch.set_num_threads(1)

        def __exit__(self, *exc: object) -> None:
            torch.set_num_threads(default_threads)

    class Nothing:
        def __enter__(self) -> None:
            pass

        def __exit__(self, *exc: object) -> None:
            pass

    class Rows32:
        """batch_invariant() with the fixed 32-row padding block of before the calibration."""

        def __enter__(self) -> None:
            self.saved = bi.CANDIDATES, dict(bi._blocks)
            bi.CANDIDATES = ()
            bi._blocks.clear()
            self.ctx = bi.batch_invariant()
            self.ctx.__enter__()

        def __exit__(self, *exc: object) -> None:
            self.ctx.__exit__(*exc)
            bi.CANDIDATES = self.saved[0]
            bi._blocks.clear()
            bi._blocks.update(self.saved[1])

    modes: dict[str, Callable[[], Any]] = {
        "default": Nothing, "library": bi.batch_invariant, "library_rows32": Rows32, "dispatch_mode": Mode,
        "threads1": Threads1,
    }

    def timed(model: nn.Module, x: torch.Tensor, mode: Callable[[], Any]) -> float:
        with torch.no_grad(), mode():
            model(x)  # warm-up inside the mode
            t = time.perf_counter()
            for _ in range(args.calls):
                model(x)
            return (time.perf_counter() - t) / args.calls

    times: dict[str, dict[str, list[float]]] = {c: {m: [] for m in modes} for c in cases}
    for _ in range(args.rounds):
        for case, (model, x) in cases.items():
            for name, mode in modes.items():
                times[case][name].append(timed(model, x, mode))
    result = {}
    for case in cases:
        med = {m: statistics.median(v) for m, v in times[case].items()}
        result[case] = {"default_ms": round(med["default"] * 1e3, 3),
                        **{f"{m}_x": round(med[m] / med["default"], 2) for m in modes if m != "default"}}
    enter = []
    for _ in range(200):
        t = time.perf_counter()
        with bi.batch_invariant():
            pass
        enter.append(time.perf_counter() - t)
    result["enter_exit_ms"] = round(statistics.median(enter) * 1e3, 3)
    result["threads"] = default_threads
    if args.json:
        print(json.dumps(result))
        return
    print(f"batch_invariant() cost, no_grad inference, {default_threads} threads, medians of {args.rounds} rounds")
    print(f"{'case':10s} {'default ms':>10s} {'library':>8s} {'rows32':>8s} {'disp.mode':>9s} {'threads1':>8s}")
    for case in cases:
        r = result[case]
        print(f"{case:10s} {r['default_ms']:10.3f} {r['library_x']:7.2f}x {r['library_rows32_x']:7.2f}x "
              f"{r['dispatch_mode_x']:8.2f}x {r['threads1_x']:7.2f}x")
    print(f"entering and leaving batch_invariant(): {result['enter_exit_ms']} ms")


if __name__ == "__main__":
    main()
