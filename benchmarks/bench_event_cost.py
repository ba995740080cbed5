"""The fixed cost of one trace event for a small tensor (float32 16x32, 2 KB), in microseconds.

Goal (issue 16): at most 10 microseconds per event. Measured in one process, in CPU time
(``time.process_time``: all threads, so a background writer would count too), each figure the
median of several rounds of K events, the rounds of all parts interleaved:

- end to end: a root module calling one small module K times per training step (an RNN cell),
  and one calling K distinct small modules once each, traced with
  ``capture=("forward",)`` minus untraced, per call (hooks, naming, conversion, digest, stats, value,
  SQLite and the per-step commit: everything a user pays);
- its parts: PyTorch's own dispatch of global module hooks (empty hooks); twinrun's hook code
  (stack, naming, same-tensor check) with the recorder's ``event`` stubbed out; ``Recorder.event``
  at the call (call index, conversion to NumPy, and whatever the recorder does then) and, within
  it, the conversion; ``Recorder.end_step`` shared out over the step's K events (whatever the call
  left to the end of the step, and the commit);
- for reference, the writer's pieces one event at a time: ``digest``, ``stats``, ``TraceWriter.add``
  with and without the kept value.

The parts are measured one by one, so they add up to about, not exactly, the end-to-end figure.

    python benchmarks/bench_event_cost.py            # K = 400 events per step, 15 rounds
    python benchmarks/bench_event_cost.py --quick    # 5 rounds
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _interleave import torch_header, twinrun_hooks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--events", type=int, default=400, help="events per step (K)")
    p.add_argument("--rounds", type=int, default=None)
    a = p.parse_args()

    import torch
    from torch import nn
    from torch.nn.modules import module as nn_module

    from twinrun.frameworks import get
    from twinrun.frameworks.torch.tracing import install
    from twinrun.recording import Recorder
    from twinrun.trace import TraceWriter, digest, stats

    torch.set_num_threads(1)
    K = a.events
    rounds = a.rounds or (5 if a.quick else 15)
    x = torch.randn(16, 32)
    adapter = get("torch")
    arr = adapter.to_numpy(x)

    class Leaf(nn.Module):
        def forward(self, h: torch.Tensor) -> torch.Tensor:
            return h + 1.0

    class Root(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.leaf = Leaf()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            for _ in range(K):
                h = self.leaf(h)
            return h * self.w

    class Distinct(nn.Module):
        """K different modules, each called once: no name repeats within a step."""

        def __init__(self) -> None:
            super().__init__()
            self.leaves = nn.ModuleList(Leaf() for _ in range(K))
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            for leaf in self.leaves:
                h = leaf(h)
            return h * self.w

    root = Root()
    opt = torch.optim.SGD(root.parameters(), lr=0.0)
    droot = Distinct()
    dopt = torch.optim.SGD(droot.parameters(), lr=0.0)
    folder = Path(tempfile.mkdtemp())
    n_traces = [0]

    def new_writer(**kw) -> TraceWriter:
        n_traces[0] += 1
        return TraceWriter(folder / f"{n_traces[0]}.trace", {}, **kw)

    # --- the measured things: each returns CPU seconds per event for one round of K events ---
    def timed(fn: Callable[[], None]) -> float:
        c0 = time.process_time()
        fn()
        return (time.process_time() - c0) / K

    def forward_only() -> None:
        root(x)

    def untraced() -> float:
        return timed(forward_only)

    def empty_hooks() -> float:
        hs = [nn_module.register_module_forward_pre_hook(lambda m, a: None),
              nn_module.register_module_forward_hook(lambda m, a, o: None, always_call=True)]
        try:
            return timed(forward_only)
        finally:
            for h in hs:
                h.remove()

    class Stub:
        """A recorder that wants every phase and records nothing: twinrun's hook code alone."""
        capture = frozenset({"forward"})
        step = 0
        closed = False

        def wants(self, phase: str) -> bool:
            return True

        def event(self, *args, **kwargs) -> None:
            return None

        def end_step(self) -> None:
            pass

        def add_step_listener(self, callback: Callable[[], None]) -> None:
            pass

        def add_close_listener(self, callback: Callable[[], None]) -> None:
            pass

        def saw(self, what: str) -> None:
            pass

        def note(self, text: str) -> None:
            pass

    def hooks_stubbed() -> float:
        uninstall = install(Stub())
        try:
            return timed(forward_only)
        finally:
            uninstall()

    traced_rec = Recorder(new_writer(), capture=("forward",))
    traced_hooks = twinrun_hooks(traced_rec)
    commit_share: list[float] = []

    def traced() -> float:
        with traced_hooks():
            c0 = time.process_time()
            root(x)
            opt.step()  # ends the step: commit
            return (time.process_time() - c0) / K

    distinct_rec = Recorder(new_writer(), capture=("forward",))
    novalue_rec = Recorder(new_writer(value_budget=0), capture=("forward",))

    def untraced_distinct() -> float:
        return timed(lambda: droot(x))

    hooks = {id(r): twinrun_hooks(r) for r in (distinct_rec, novalue_rec)}

    def traced_distinct(rec=distinct_rec) -> float:
        with hooks[id(rec)]():
            c0 = time.process_time()
            droot(x)
            dopt.step()
            return (time.process_time() - c0) / K

    event_rec = Recorder(new_writer(), capture=("forward",))

    def recorder_event() -> float:
        c0 = time.process_time()
        for _ in range(K):
            event_rec.event("forward", "leaf", x)
        c1 = time.process_time()
        event_rec.end_step()
        commit_share.append((time.process_time() - c1) / K)
        return (c1 - c0) / K

    def conversion() -> float:
        def f() -> None:
            for _ in range(K):
                adapter.to_numpy(x), adapter.dtype_name(x)
        return timed(f)

    def digest_only() -> float:
        def f() -> None:
            for _ in range(K):
                digest(arr, "float32")
        return timed(f)

    def stats_only() -> float:
        def f() -> None:
            for _ in range(K):
                stats(arr, "float32")
        return timed(f)

    writers = {True: new_writer(), False: new_writer()}
    steps = {True: 0, False: 0}

    def add(keep: bool) -> Callable[[], float]:
        def f() -> float:
            w = writers[keep]
            s = steps[keep]
            c0 = time.process_time()
            for _ in range(K):
                w.add(s, "forward", "leaf", arr, dtype="float32", keep_value=keep)
            c1 = time.process_time()
            w.commit_step(s)
            steps[keep] = s + 1
            return (c1 - c0) / K
        return f

    parts: dict[str, Callable[[], float]] = {
        "untraced call": untraced,
        "with empty global hooks": empty_hooks,
        "twinrun hooks, recorder stubbed": hooks_stubbed,
        "traced (forward), commit included": traced,
        "untraced, K distinct modules": untraced_distinct,
        "traced, K distinct modules": traced_distinct,
        "traced, K distinct modules, no values": lambda: traced_distinct(novalue_rec),
        "Recorder.event": recorder_event,
        "conversion to NumPy": conversion,
        "digest()": digest_only,
        "stats()": stats_only,
        "TraceWriter.add, value kept": add(True),
        "TraceWriter.add, no value": add(False),
    }
    for fn in parts.values():  # warm-up (first calls build caches, first step records init)
        fn()
    commit_share.clear()
    got: dict[str, list[float]] = {k: [] for k in parts}
    names = list(parts)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            got[name].append(parts[name]())
    med = {k: statistics.median(v) * 1e6 for k, v in got.items()}
    mean = {k: statistics.fmean(v) * 1e6 for k, v in got.items()}
    spread = {k: (max(v) - min(v)) / max(statistics.median(v), 1e-12) for k, v in got.items()}
    commit = statistics.median(commit_share) * 1e6
    distinct_rec.close()
    novalue_rec.close()
    traced_rec.close()
    event_rec.close()
    for w in writers.values():
        w.close()

    end_to_end = med["traced (forward), commit included"] - med["untraced call"]
    distinct = med["traced, K distinct modules"] - med["untraced, K distinct modules"]
    # The log is folded into the file every few steps (a WAL checkpoint copies what the last steps
    # wrote): a periodic cost the median of the rounds leaves out and their mean shares out.
    amortized = {
        "traced (forward), commit included": mean["traced (forward), commit included"] - mean["untraced call"],
        "traced, K distinct modules": mean["traced, K distinct modules"] - mean["untraced, K distinct modules"],
        "traced, K distinct modules, no values": mean["traced, K distinct modules, no values"]
        - mean["untraced, K distinct modules"],
    }
    rows = [
        ("end to end: one module called K times (an RNN cell)", end_to_end, "traced (forward), commit included"),
        ("end to end: K distinct modules, each called once", distinct, "traced, K distinct modules"),
        ("end to end: K distinct modules, values not kept (budget spent)",
         med["traced, K distinct modules, no values"] - med["untraced, K distinct modules"],
         "traced, K distinct modules, no values"),
        ("parts:", None, None),
        ("  PyTorch's dispatch of global hooks", med["with empty global hooks"] - med["untraced call"],
         "with empty global hooks"),
        ("  twinrun hook code (stack, naming, same-tensor)", med["twinrun hooks, recorder stubbed"]
         - med["with empty global hooks"], "twinrun hooks, recorder stubbed"),
        ("  Recorder.event, at the call", med["Recorder.event"], "Recorder.event"),
        ("    of which conversion to NumPy (adapter.to_numpy)", med["conversion to NumPy"], "conversion to NumPy"),
        ("  Recorder.end_step, per event (what the call left: commit)", commit, None),
        ("reference: the writer's own pieces, one event at a time:", None, None),
        ("  digest()", med["digest()"], "digest()"),
        ("  stats()", med["stats()"], "stats()"),
        ("  TraceWriter.add, value kept", med["TraceWriter.add, value kept"], "TraceWriter.add, value kept"),
        ("  TraceWriter.add, no value", med["TraceWriter.add, no value"], "TraceWriter.add, no value"),
    ]
    print(f"{torch_header()}; float32[16, 32] (2 KB) events, K = {K} per step, {rounds} rounds, CPU time")
    print(f"  {'part':<62} {'us/event':>9}  spread  mean of rounds")
    for label, us, key in rows:
        if us is None:
            print(f"  {label}")
            continue
        sp = f"  {spread[key] * 100:4.0f}%" if key else ""
        if key in amortized:
            sp += f"  {amortized[key]:6.2f}"
        print(f"  {label:<62} {us:9.2f}{sp}")
    print(f"goal: end to end <= 10 us per event; measured {end_to_end:.1f} us (one module K times), "
          f"{distinct:.1f} us (K modules), medians; means of the rounds (WAL checkpoints shared out): "
          f"{amortized['traced (forward), commit included']:.1f} and {amortized['traced, K distinct modules']:.1f} us")
    print("(spread: (max - min) / median over the rounds of that part)")


if __name__ == "__main__":
    main()
