"""Tracing overhead of ``twinrun run`` on a small ResNet-style CNN (3x32x32 images, batch 64, CPU).

Measured side by side in one process, rounds interleaved so that machine load hits every mode alike:

- untraced vs traced with every phase (goal: ratio <= 1.3) and with ``capture=("param",)``
  (goal: <= 1.05): median time per training step; and the CPU time the training thread spends
  inside the recorder (digests, stats, SQLite; hooks excluded), which load on a shared machine
  disturbs far less than the wall-clock ratio;
- the trace's size per step;
- ``check --against`` on a run that parts at step k: it stops in about the time of k steps
  (compared with a full run and with a run of k+1 steps, each in a fresh process).

    python benchmarks/bench_tracing.py            # all of it (about a minute on 2 cores)
    python benchmarks/bench_tracing.py --quick    # fewer rounds

The same file is the training script the --against part runs (``--as-script``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "src"))


def build_model():
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                          if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            h = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(h)) + self.short(x))

    class ResNetSmall(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
            self.layer1 = nn.Sequential(Block(32, 32, 1), Block(32, 32, 1))
            self.layer2 = nn.Sequential(Block(32, 64, 2), Block(64, 64, 1))
            self.layer3 = nn.Sequential(Block(64, 128, 2), Block(128, 128, 1))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(128, 10)

        def forward(self, x):
            h = self.layer3(self.layer2(self.layer1(self.stem(x))))
            return self.fc(self.pool(h).flatten(1))

    return ResNetSmall()


def data(n_batches: int, batch: int = 64):
    import torch

    g = torch.Generator().manual_seed(0)
    xs = torch.randn(n_batches, batch, 3, 32, 32, generator=g)
    ys = torch.randint(0, 10, (n_batches, batch), generator=g)
    return xs, ys


def train_steps(model, opt, xs, ys, steps: int, flip_at: int | None = None) -> list[float]:
    import torch.nn.functional as F

    times = []
    for s in range(steps):
        t0 = time.perf_counter()
        x, y = xs[s % len(xs)], ys[s % len(ys)]
        if s == flip_at:
            x, y = x.flip(0), y.flip(0)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def as_script(argv) -> None:
    """The training script for the --against measurement (a user's script: no twinrun in it)."""
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--flip-at", type=int, default=None)
    a = p.parse_args(argv)
    torch.manual_seed(0)
    model = build_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    xs, ys = data(4)
    train_steps(model, opt, xs, ys, a.steps, flip_at=a.flip_at if os.environ.get("BENCH_FLIP") else None)


def overhead(steps: int, folder: Path) -> dict:
    """Median step time of three identical models trained step by step in turn: untraced, traced
    with every phase, traced with ``param`` only. Interleaving by step keeps a loaded machine fair."""
    import torch
    import torch.nn.functional as F

    from twinrun.frameworks.torch.tracing import install
    from twinrun.recording import Recorder, build_header
    from twinrun.trace import TraceWriter

    class TimedRecorder(Recorder):
        """Adds up the CPU time the training thread spends in the recorder (digests, stats, SQLite):
        a figure that load on the machine disturbs far less than wall-clock ratios."""

        cpu = 0.0

        def event(self, *args, **kwargs):
            t0 = time.thread_time()
            try:
                return super().event(*args, **kwargs)
            finally:
                self.cpu += time.thread_time() - t0

        def end_step(self):
            t0 = time.thread_time()
            try:
                return super().end_step()
            finally:
                self.cpu += time.thread_time() - t0

    xs, ys = data(4)
    modes = {"untraced": None, "all phases": None, "param only": ("param",)}
    runs = {}
    for mode in modes:
        torch.manual_seed(0)
        model = build_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        rec, path = None, None
        if mode != "untraced":
            path = folder / f"{mode.replace(' ', '-')}.trace"
            writer = TraceWriter(path, build_header())
            rec = TimedRecorder(writer, capture=modes[mode]) if modes[mode] else TimedRecorder(writer)
        runs[mode] = (model, opt, rec, path)
    per_step: dict[str, list[float]] = {m: [] for m in modes}
    cpu_step: dict[str, list[float]] = {m: [] for m in modes}
    rec_step: dict[str, list[float]] = {m: [] for m in modes}
    for s in range(steps + 1):
        order = list(modes)[s % 3:] + list(modes)[:s % 3]
        for mode in order:
            model, opt, rec, _ = runs[mode]
            uninstall = install(rec) if rec is not None else None
            x, y = xs[s % len(xs)], ys[s % len(ys)]
            r0 = rec.cpu if rec is not None else 0.0
            t0, c0 = time.perf_counter(), time.process_time()
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if uninstall is not None:
                uninstall()
            if s > 0:  # step 0: warm-up, and the traced runs record init
                per_step[mode].append(dt)
                cpu_step[mode].append(dc)
                rec_step[mode].append(rec.cpu - r0 if rec is not None else 0.0)
    sizes = {}
    for mode, (_, _, rec, path) in runs.items():
        if rec is not None:
            rec.close()
            sizes[mode] = path.stat().st_size / (steps + 1)
    med = {m: statistics.median(v) for m, v in per_step.items()}
    cpu = {m: statistics.median(v) for m, v in cpu_step.items()}
    recording = {m: statistics.median(v) for m, v in rec_step.items() if runs[m][2] is not None}
    return {"median_step_s": med, "median_step_cpu_s": cpu, "bytes_per_step": sizes,
            "median_recording_cpu_s": recording,
            "cpu_ratio_all": cpu["all phases"] / cpu["untraced"],
            "cpu_ratio_param": cpu["param only"] / cpu["untraced"],
            "ratio_all": med["all phases"] / med["untraced"],
            "ratio_param": med["param only"] / med["untraced"]}


def against(steps: int, k: int, folder: Path) -> dict:
    from twinrun import runner

    script = str(HERE)
    args = ["--as-script", "--steps", str(steps), "--flip-at", str(k)]
    ref = runner.launch(script, args, trace_path=folder / "ref.trace")
    assert ref.exit_code == 0, ref.stderr
    full = runner.launch(script, args, trace_path=folder / "full.trace")
    short = runner.launch(script, args, trace_path=folder / "short.trace", max_steps=k + 1)
    live = runner.launch(script, args, trace_path=folder / "live.trace", against=ref.trace_path,
                         env={"BENCH_FLIP": "1"})
    assert live.status == "diverged", (live.status, live.stderr)
    return {"steps": steps, "k": k, "full_s": full.seconds, "k_plus_1_steps_s": short.seconds,
            "against_s": live.seconds}


def main() -> None:
    if "--as-script" in sys.argv:
        sys.argv.remove("--as-script")
        return as_script(sys.argv[1:])
    p = argparse.ArgumentParser(description="twinrun tracing overhead")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-against", action="store_true", help="skip the fresh-process --against part")
    a = p.parse_args()
    import torch

    steps = 8 if a.quick else 30
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{torch.backends.cpu.get_cpu_capability()}; ResNet-style CNN, 3x32x32, batch 64")
    with tempfile.TemporaryDirectory() as d:
        o = overhead(steps, Path(d))
        for m, s in o["median_step_s"].items():
            size = o["bytes_per_step"].get(m)
            rec = o["median_recording_cpu_s"].get(m)
            print(f"  {m:>11}: {s * 1e3:7.1f} ms/step wall, {o['median_step_cpu_s'][m] * 1e3:7.1f} ms/step CPU"
                  + (f", of which recording {rec * 1e3:5.1f} ms" if rec is not None else "")
                  + (f", trace {size / 1e6:.2f} MB/step" if size else ""))
        print(f"traced/untraced, all phases: {o['ratio_all']:.2f} wall, {o['cpu_ratio_all']:.2f} CPU  (goal <= 1.3)")
        print(f"traced/untraced, --capture param: {o['ratio_param']:.3f} wall, {o['cpu_ratio_param']:.3f} CPU  "
              "(goal <= 1.05)")
        if a.no_against:
            return
        ag = against(20 if not a.quick else 12, 3, Path(d))
        print(f"check --against, parts at step {ag['k']} of {ag['steps']}: stopped after {ag['against_s']:.1f} s; "
              f"{ag['k'] + 1} steps take {ag['k_plus_1_steps_s']:.1f} s, the full run {ag['full_s']:.1f} s "
              "(fresh processes, start-up included)")


if __name__ == "__main__":
    main()
