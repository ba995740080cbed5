"""Shared by the tracing benchmarks: modes timed step by step in turn, in one process.

Each mode owns its model and optimizer (built from the same seed) and, optionally, a context entered
around each step *outside* the timed region (twinrun's global hooks or PyTorch's ``DebugMode``: both
are process-global, so only the mode being timed may have them installed). Rounds rotate the order of
the modes, so that load from other users of the machine hits every mode alike. A ratio is reported
two ways: median step of a mode / median untraced step, and the median of the per-round ratios (each
traced step against the untraced step of the same round); their spread says how noisy the run was.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))


@dataclass
class Mode:
    """One way of running a training step: ``step(s)`` runs step ``s``; ``around()`` is entered
    before and left after each step, untimed; ``close()`` runs once at the end."""

    name: str
    step: Callable[[int], None]
    around: Callable[[], ContextManager[object]] = contextlib.nullcontext
    close: Callable[[], None] = lambda: None
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def run_interleaved(modes: list[Mode], steps: int, warmup: int = 1) -> None:
    """``warmup + steps`` rounds; each round runs one step of every mode, in a rotating order."""
    n = len(modes)
    for s in range(warmup + steps):
        k = s % n
        for mode in modes[k:] + modes[:k]:
            with mode.around():
                t0, c0 = time.perf_counter(), time.process_time()
                mode.step(s)
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if s >= warmup:
                mode.wall.append(dt)
                mode.cpu.append(dc)
    for mode in modes:
        mode.close()


def ratios(modes: list[Mode], base: str = "untraced") -> dict[str, dict[str, float]]:
    """Per mode: median wall and CPU seconds per step, and ratios to ``base`` (see module doc)."""
    ref = next(m for m in modes if m.name == base)
    out = {}
    for m in modes:
        per_round = sorted(a / b for a, b in zip(m.wall, ref.wall))
        q = statistics.quantiles(per_round, n=4) if len(per_round) >= 2 else [per_round[0]] * 3
        out[m.name] = {
            "wall_s": statistics.median(m.wall),
            "cpu_s": statistics.median(m.cpu),
            "ratio": statistics.median(m.wall) / statistics.median(ref.wall),
            "cpu_ratio": statistics.median(m.cpu) / statistics.median(ref.cpu),
            "round_ratio": statistics.median(per_round),
            "round_q1": q[0],
            "round_q3": q[2],
        }
    return out


def print_table(result: dict[str, dict[str, float]], goals: dict[str, str] | None = None) -> None:
    goals = goals or {}
    print(f"  {'mode':<34} {'ms/step':>8} {'CPU ms':>7} {'ratio':>6} {'CPU':>5}  per-round ratio (IQR)")
    for name, r in result.items():
        goal = f"   goal {goals[name]}" if name in goals else ""
        print(f"  {name:<34} {r['wall_s'] * 1e3:8.2f} {r['cpu_s'] * 1e3:7.2f} {r['ratio']:6.2f} "
              f"{r['cpu_ratio']:5.2f}  {r['round_ratio']:.2f} ({r['round_q1']:.2f}-{r['round_q3']:.2f}){goal}")


def repeat_summary(runs: list[dict[str, dict[str, float]]]) -> None:
    """Across repeats of the whole measurement: min / median / max of each mode's wall ratio."""
    if len(runs) < 2:
        return
    print("  across repeats, wall ratio min / median / max:")
    for name in runs[0]:
        xs = [r[name]["ratio"] for r in runs]
        print(f"    {name:<32} {min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f}")


class TwinrunHooks:
    """twinrun's PyTorch hooks of one recorder, on only while its mode's step runs.

    One ``TorchTracer`` for the whole run, as in a real one (its names, parameter hooks and step state
    persist); only the process-global hooks (module and optimizer hooks, ``torch.autograd.backward``)
    are added before and removed after each step, outside the timed region, so that the other modes
    run untraced. (Reaches into the tracer's handles: benchmark glue, not an API.)"""

    def __init__(self, recorder) -> None:
        from twinrun.frameworks.torch.tracing import TorchTracer

        self.recorder = recorder
        self.tracer = TorchTracer(recorder)
        self.tracer.install()   # registers the step and close listeners, once
        self.tracer.uninstall()
        self._kept: list[object] = []   # parameter hooks: they stay, as in a real run

    @contextlib.contextmanager
    def around(self) -> Iterator[None]:
        rec, t = self.recorder, self.tracer
        listeners = len(rec._step_listeners), len(rec._close_listeners)
        t.install()
        del rec._step_listeners[listeners[0]:], rec._close_listeners[listeners[1]:]
        n = len(t._handles)
        try:
            yield
        finally:
            self._kept += t._handles[n:]
            t._handles = t._handles[:n]
            t.uninstall()


def traced_mode(name: str, step: Callable[[int], None], how: str | tuple[str, ...] | None, trace: Path) -> Mode:
    """A mode running ``step`` as ``how`` says: None untraced; ``"hash_tensor"``/``"norm"`` under
    ``DebugMode`` with tensor hashes; ``"all"`` (every phase) or a capture tuple under twinrun's
    hooks, recording to ``trace``."""
    mode = Mode(name, step)
    if how in ("hash_tensor", "norm"):
        mode.around = lambda: debug_mode(str(how))
    elif how is not None:
        rec = twinrun_recorder(trace, None if how == "all" else tuple(how))
        mode.around = twinrun_hooks(rec)
        mode.close = rec.close
    return mode


def twinrun_hooks(recorder) -> Callable[[], ContextManager[object]]:
    """``Mode.around`` for a recorder: see ``TwinrunHooks``."""
    return TwinrunHooks(recorder).around


def twinrun_recorder(path: Path, capture: tuple[str, ...] | None = None):
    from twinrun.recording import Recorder, build_header
    from twinrun.trace import TraceWriter

    writer = TraceWriter(path, build_header())
    return Recorder(writer, capture=capture) if capture else Recorder(writer)


@contextlib.contextmanager
def stats_patched_out() -> Iterator[None]:
    """The float64 stats of tensors digested at the call (big ones, other dtypes) replaced by zeros:
    what tracing would cost if they were free (a measurement, not a mode of twinrun)."""
    import importlib

    from twinrun.trace import digest

    def fake(arr, dtype):
        return digest(arr, dtype), (0.0, 0.0, 0.0, 0)

    patched = []   # the modules that call digest_and_stats (another set in an older twinrun)
    for name in ("batch", "writer", "store"):
        try:
            module = importlib.import_module(f"twinrun.trace.{name}")
        except ImportError:
            continue
        if hasattr(module, "digest_and_stats"):
            patched.append((module, module.digest_and_stats))
            module.digest_and_stats = fake
    try:
        yield
    finally:
        for module, real in patched:
            module.digest_and_stats = real


@contextlib.contextmanager
def debug_mode(hash_fn: str) -> Iterator[None]:
    """PyTorch's own ``DebugMode`` logging a hash of every op's output (``hash_tensor`` or ``norm``);
    its log is dropped after each step (it keeps every op of the step in memory)."""
    from torch.utils._debug_mode import DebugMode

    with DebugMode() as dm, DebugMode.log_tensor_hashes(hash_fn=hash_fn):
        yield
    dm.operators.clear()


def torch_header() -> str:
    import torch

    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{torch.backends.cpu.get_cpu_capability()}")
