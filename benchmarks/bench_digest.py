"""Digest throughput against raw xxh3_128, the cost of stats, and a trace's size per step.

    python benchmarks/bench_digest.py

Goal (issue 3): ``twinrun.trace.digest`` within 80% of raw ``xxhash.xxh3_128`` on the same bytes
(no extra copies). Every number is measured side by side in this one run; best of several repeats.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from twinrun.trace import TraceWriter, digest, stats


def best(fn, repeats=7):
    """Seconds per call, best of ``repeats``; fast calls are timed in loops of at least ~5 ms."""
    t0 = time.perf_counter()
    fn()
    number = max(1, min(10_000, int(0.005 / max(time.perf_counter() - t0, 1e-7))))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return min(times)


def throughput():
    print("digest throughput (GB/s, best of 7)")
    print(f"{'tensor':>22} {'raw xxh3_128':>13} {'digest()':>9} {'ratio':>6} {'stats()':>8} {'add()':>7}")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        w = TraceWriter(os.path.join(tmp, "b.trace"), {}, value_threshold=0)
        for n in (1 << 14, 1 << 20, 1 << 24):
            a = rng.standard_normal(n).astype(np.float32)
            gb = a.nbytes / 1e9
            raw = best(lambda a=a: xxhash.xxh3_128(memoryview(a)).digest())
            ours = best(lambda a=a: digest(a, "float32"))
            st = best(lambda a=a: stats(a, "float32"))
            step = [0]

            def add(a=a, step=step):
                w.add(step[0], "forward", "x", a)
                w.commit_step(step[0])
                step[0] += 1

            ad = best(add)
            print(f"{f'float32[{n}]':>22} {gb / raw:13.1f} {gb / ours:9.1f} {raw / ours:6.2f} {gb / st:8.2f} "
                  f"{gb / ad:7.2f}")
        w.close()
    try:
        import torch
    except ImportError:
        return
    from twinrun.frameworks import get

    adapter = get("torch")
    for dt in (torch.float32, torch.bfloat16):
        t = torch.randn(1 << 24).to(dt)
        arr = adapter.to_numpy(t)
        gb = arr.nbytes / 1e9
        raw = best(lambda arr=arr: xxhash.xxh3_128(memoryview(arr)).digest())
        ours = best(lambda t=t: digest(adapter.to_numpy(t), adapter.dtype_name(t)))
        label = f"torch {str(dt).removeprefix('torch.')}[{t.numel()}]"
        print(f"{label:>22} {gb / raw:13.1f} "
              f"{gb / ours:9.1f} {raw / ours:6.2f}   (adapter.to_numpy + digest)")


# A small ResNet-style CNN on 3x32x32 images, batch 64: the shapes a PyTorch trace of it records.
def resnet_events():
    B = 64
    params, forwards = [], []
    params.append(("conv1.weight", (16, 3, 3, 3)))
    params += [("bn1.weight", (16,)), ("bn1.bias", (16,))]
    forwards += [("conv1", (B, 16, 32, 32)), ("bn1", (B, 16, 32, 32)), ("relu", (B, 16, 32, 32))]
    cin = 16
    for i, (cout, hw) in enumerate([(16, 32), (32, 16), (64, 8)], 1):
        for j in range(2):
            p = f"layer{i}.{j}"
            params += [(f"{p}.conv1.weight", (cout, cin if j == 0 else cout, 3, 3)),
                       (f"{p}.bn1.weight", (cout,)), (f"{p}.bn1.bias", (cout,)),
                       (f"{p}.conv2.weight", (cout, cout, 3, 3)),
                       (f"{p}.bn2.weight", (cout,)), (f"{p}.bn2.bias", (cout,))]
            forwards += [(f"{p}.conv1", (B, cout, hw, hw)), (f"{p}.bn1", (B, cout, hw, hw)),
                         (f"{p}.conv2", (B, cout, hw, hw)), (f"{p}.bn2", (B, cout, hw, hw)),
                         (p, (B, cout, hw, hw))]
            if j == 0 and cin != cout:
                params.append((f"{p}.shortcut.0.weight", (cout, cin, 1, 1)))
                forwards.append((f"{p}.shortcut", (B, cout, hw, hw)))
        forwards.append((f"layer{i}", (B, cout, hw, hw)))
        cin = cout
    params += [("fc.weight", (10, 64)), ("fc.bias", (10,))]
    forwards += [("pool", (B, 64)), ("fc", (B, 10)), ("", (B, 10))]
    return params, forwards


def size_per_step(steps=5):
    params, forwards = resnet_events()
    rng = np.random.default_rng(0)
    pv = {n: rng.standard_normal(s).astype(np.float32) for n, s in params}
    fv = [(n, rng.standard_normal(s).astype(np.float32)) for n, s in forwards]
    x = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
    n_params = sum(v.size for v in pv.values())
    print(f"\ntrace size per step: ResNet-style CNN, {n_params:,} parameters, batch 64 of 3x32x32, "
          f"{len(params)} parameter tensors, {len(forwards)} module outputs")
    print(f"{'capture':>12} {'events/step':>12} {'bytes/step':>11} {'of which values':>16} {'record ms/step':>15}")
    for label, phases in (("all", {"input", "forward", "loss", "grad", "param"}), ("param", {"param"})):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "s.trace"
            w = TraceWriter(path, {"command": ["bench"]})
            # step 0 is written but not counted (table creation, init events)
            t_total = 0.0
            sizes = []
            for s in range(steps + 1):
                t0 = time.perf_counter()
                n = 0
                if "input" in phases:
                    w.add(s, "input", "x", x, per_sample=True)
                    n += 1
                if "forward" in phases:
                    for name, v in fv:
                        w.add(s, "forward", name, v)
                        n += 1
                if "loss" in phases:
                    w.add(s, "loss", "loss", np.float32(2.3))
                    n += 1
                for ph in ("grad", "param"):
                    if ph in phases:
                        for name, v in pv.items():
                            w.add(s, ph, name, v)
                            n += 1
                w.commit_step(s)
                if s:
                    t_total += time.perf_counter() - t0
                sizes.append(os.path.getsize(path) + _size(path.with_name(path.name + "-wal")))
            values = w.value_bytes
            w.close()
            per_step = (os.path.getsize(path) - sizes[0]) / steps
            print(f"{label:>12} {n:12d} {per_step:11,.0f} {values / (steps + 1):16,.0f} "
                  f"{t_total / steps * 1e3:15.1f}")


def _size(p: Path) -> int:
    return p.stat().st_size if p.exists() else 0


if __name__ == "__main__":
    throughput()
    size_per_step()
