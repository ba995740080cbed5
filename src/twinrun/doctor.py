"""Doctor: name the cause of a divergence by experiment, and test portability across threads and CPUs.

``diagnose(script)`` runs the script twice as the user would (the baseline). When the runs part, it
changes one thing at a time, reruns twice, and names a cause only when the change that removes the
divergence was observed (or when the trace itself proves it: the same samples in another order).
When the baseline repeats, it reruns with another thread count and with each lower CPU instruction
set this CPU can emulate, and says where those part. With ``against=`` it compares a live run with
a trace made on another machine and tries to reproduce that trace here by emulating its environment.

>>> d = diagnose("train.py", max_steps=20)      # doctest: +SKIP
>>> d.verdict, d.cause, d.first_divergence["phase"]
('not-reproducible', 'unseeded-init', 'init')
>>> print(d.fix)
Seed every RNG before the model is built: ...
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ._errors import ScriptFailedError, StructuralMismatchError, UsageError
from .env import cpu_flags
from .interventions import DATA_NAMES, ORDER_NAMES, parse_lines

__all__ = ["CAUSES", "Diagnosis", "Experiment", "Plan", "diagnose", "framework_isa_plans", "frameworks_of",
           "isa_emulations"]

CAUSES = ("reproducible", "unseeded-init", "data-pipeline", "hash-seed", "nondeterministic-kernel",
          "environment", "unknown")
PARALLEL = 2 if (os.cpu_count() or 1) >= 2 else 1

# ATen kernel levels per architecture, lowest first (ATEN_CPU_CAPABILITY values).
_ATEN_LADDERS = {
    "x86": ["default", "avx2", "avx512"],
    "arm": ["default", "sve256"],
}
# oneDNN ISA caps worth emulating, highest first, with the /proc/cpuinfo flags each needs.
_ONEDNN_LEVELS = [("AVX2", {"avx2", "fma"}), ("AVX", {"avx"}), ("SSE41", {"sse4_1"})]
_ONEDNN_ORDER = ["SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
                 "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
                 "AVX10_1_512_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16", "DEFAULT", "ALL"]


# --- plain results ------------------------------------------------------------------------------
@dataclass
class Experiment:
    """One experiment: what was changed, its runs, and whether they were identical (and where they part)."""

    name: str
    changed: str
    identical: bool | None = None
    first_divergence: dict | None = None
    compared_with: str = "its own second run"
    runs: int = 0
    seconds: float = 0.0
    acted: list[dict] = field(default_factory=list)   # what the interventions changed, and where
    traces: list[str] = field(default_factory=list)
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Diagnosis:
    """What doctor found. ``to_dict()`` is the ``--json`` document."""

    script: str
    verdict: str
    cause: str
    detail: str | None
    first_divergence: dict | None
    fix: str
    evidence: list[Experiment]
    portability: dict | None
    confirmed: bool
    summary: str
    reruns: int = 0
    seconds: float = 0.0
    max_steps: int = 20
    against: str | None = None
    environment: list[dict] | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict == "reproducible" else 1

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict, "cause": self.cause, "detail": self.detail,
            "first_divergence": self.first_divergence, "fix": self.fix,
            "evidence": [e.to_dict() for e in self.evidence], "portability": self.portability,
            "confirmed": self.confirmed, "summary": self.summary, "script": self.script,
            "max_steps": self.max_steps, "reruns": self.reruns, "seconds": round(self.seconds, 2),
            "against": self.against, "environment": self.environment,
        }


@dataclass
class Plan:
    """One rerun: launch options plus a label that says what was changed."""

    name: str
    changed: str
    seed: int | None = None
    env: dict = field(default_factory=dict)
    deterministic: bool = False
    threads: int | None = None
    interventions: tuple[str, ...] = ()


# --- the experiment runner ------------------------------------------------------------------------
class _Runner:
    def __init__(self, script, args, max_steps, workdir, parallel, timeout, say):
        self.script, self.args, self.max_steps = script, list(args), max_steps
        self.workdir, self.parallel, self.timeout, self.say = workdir, parallel, timeout, say
        self.launched = 0
        self._n = 0

    def run(self, jobs: list[tuple[Plan, int]]):
        """Launch each (plan, copy) — ``parallel`` at a time — and return their RunResults in order."""
        from .runner import launch

        def one(job):
            plan, copy = job
            self._n += 1
            path = os.path.join(self.workdir, f"{self._n:02d}-{_slug(plan.name)}-{copy}.trace")
            return launch(self.script, self.args, trace_path=path, seed=plan.seed, env=plan.env or None,
                          max_steps=self.max_steps, deterministic=plan.deterministic, threads=plan.threads,
                          interventions=plan.interventions, timeout=self.timeout)

        # A failed run stops the diagnosis: runs not started yet are cancelled.
        with ThreadPoolExecutor(max_workers=max(1, self.parallel)) as pool:
            futures = [pool.submit(one, job) for job in jobs]
            results = []
            try:
                for job, fut in zip(jobs, futures):
                    r = fut.result()
                    self.launched += 1
                    _check_run(job[0], job[1], r)
                    results.append(r)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return results

    def pairs(self, plans: list[Plan]) -> list[Experiment]:
        """Each plan twice; an experiment per plan comparing its two runs."""
        t0 = time.perf_counter()
        for p in plans:
            self.say(f"doctor: {p.name}: {p.changed} (2 runs)")
        results = self.run([(p, c) for p in plans for c in (1, 2)])
        out = []
        for i, p in enumerate(plans):
            a, b = results[2 * i], results[2 * i + 1]
            exp = Experiment(p.name, p.changed, runs=2, traces=[a.trace_path, b.trace_path],
                             acted=parse_lines(a.stderr + "\n" + b.stderr))
            _fill(exp, _compare(a.trace_path, b.trace_path))
            exp.seconds = round(time.perf_counter() - t0, 2)
            out.append(exp)
        return out

    def singles(self, plans: list[Plan], reference: str, label: str) -> list[Experiment]:
        """Each plan once, compared with ``reference`` (a trace path)."""
        t0 = time.perf_counter()
        for p in plans:
            self.say(f"doctor: {p.name}: {p.changed} (1 run)")
        results = self.run([(p, 1) for p in plans])
        out = []
        for p, r in zip(plans, results):
            exp = Experiment(p.name, p.changed, runs=1, traces=[r.trace_path], compared_with=label,
                             acted=parse_lines(r.stderr))
            _fill(exp, _compare(reference, r.trace_path))
            exp.seconds = round(time.perf_counter() - t0, 2)
            out.append(exp)
        return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "run"


def _check_run(plan: Plan, copy: int, r) -> None:
    """A run that failed stops the diagnosis with exit 3, naming the experiment."""
    if r.status == "timeout":
        raise ScriptFailedError(f"the script did not finish in experiment '{plan.name}' ({plan.changed}), "
                                f"run {copy}: killed after the time limit; raise --timeout or lower --max-steps")
    if r.returncode in (0, 1) and r.status not in ("failed", "missing"):
        return
    lines = [ln for ln in (r.stderr or "").splitlines() if ln.strip() and not ln.startswith(
        ("twinrun intervention", "twinrun run:"))]
    last = lines[-1].strip() if lines else f"exit code {r.returncode}"
    if r.returncode == 2:
        raise UsageError(f"twinrun could not start the script in experiment '{plan.name}': {last}")
    raise ScriptFailedError(f"the script failed in experiment '{plan.name}' ({plan.changed}), run {copy}: "
                            f"{last} (its trace: {r.trace_path})")


def _compare(a: str, b: str):
    from .compare import compare

    return compare(a, b)


def _where(c) -> dict | None:
    """The short first divergence of a Comparison: step, phase, name (+ what we need to reason)."""
    if c.first_divergence is not None:
        d = c.first_divergence
        return {"step": d["step"], "phase": d["phase"], "name": d["name"], "shape": d.get("shape"),
                "differing": d.get("differing"), "max_abs": d.get("max_abs"), "max_ulp": d.get("max_ulp"),
                "before_identical": d.get("before_identical"), "input_order_only": d.get("input_order_only"),
                "samples": d.get("samples"), "structural": False}
    if c.structural:
        s = c.structural[0]
        side = s.get("a") or s.get("b") or {}
        return {"step": s.get("step"), "phase": side.get("phase"), "name": side.get("name"),
                "structural": True, "kind": s.get("kind")}
    return None


def _fill(exp: Experiment, c) -> None:
    exp.identical = bool(c.identical)
    exp.first_divergence = None if c.identical else _where(c)
    if not c.identical:
        exp.note = c.sentence()


# --- the diagnosis ---------------------------------------------------------------------------------
def diagnose(script, args: Sequence[str] = (), *, max_steps: int = 20, against=None, portability: bool | Sequence[str] = True,
             parallel: int | None = None, timeout: float | None = None, keep: str | os.PathLike | None = None,
             progress: Callable[[str], None] | None = None) -> Diagnosis:
    """Run the experiments on ``script`` and return a :class:`Diagnosis`.

    ``portability``: True (thread count and CPU ISA), False, or a subset of ``("thread-count",
    "cpu-isa")``. ``against``: a trace made elsewhere (two-machine mode). ``keep``: a folder to keep
    the traces in (default: a temporary folder, removed). A run that fails raises
    :class:`ScriptFailedError` naming the experiment; bad input raises :class:`UsageError`.
    """
    from .runner import check_script

    path = check_script(script)
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        raise UsageError(f"--max-steps must be a whole number >= 1, not {max_steps!r}")
    if portability is True:
        checks = ("thread-count", "cpu-isa")
    elif not portability:
        checks = ()
    else:
        checks = tuple(portability)
        bad = [c for c in checks if c not in ("thread-count", "cpu-isa")]
        if bad:
            raise UsageError(f"unknown portability check {bad[0]!r}; choose thread-count and/or cpu-isa")
    reference = _open_against(against) if against is not None else None
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    workdir = str(keep) if keep else tempfile.mkdtemp(prefix="twinrun-doctor-")
    os.makedirs(workdir, exist_ok=True)
    runner = _Runner(path, args, max_steps, workdir, parallel or PARALLEL, timeout, say)
    try:
        if reference is not None:
            d = _two_machines(runner, path, reference, str(against))
        else:
            d = _one_machine(runner, path, checks)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    d.reruns, d.seconds, d.max_steps = runner.launched, time.perf_counter() - t0, max_steps
    return d


def _open_against(against):
    from .runner import open_reference

    with open_reference(against) as t:   # BadTraceError (exit 2) when missing or not a trace
        if not t.steps():
            raise UsageError(f"--against trace {str(against)!r} has no recorded step; record one with "
                             "'twinrun run -o FILE script.py'")
        return {"header": t.header, "steps": len(t.steps()), "status": t.status}


def _one_machine(runner: _Runner, path: Path, checks) -> Diagnosis:
    baseline = runner.pairs([Plan("baseline", "nothing: two runs as you run the script")])[0]
    if baseline.identical:
        return _reproducible(runner, path, baseline, checks)
    return _attribute(runner, path, baseline)


def frameworks_of(trace_path) -> list[str]:
    """The frameworks a traced run imported (stored at close); a trace without that record is read as
    a PyTorch run, as traces were before TensorFlow and JAX were covered."""
    from .trace import Trace

    try:
        with Trace.open(trace_path) as t:
            names = t.meta("frameworks")
    except Exception:   # noqa: BLE001 - a missing record must not stop the diagnosis
        names = None
    return list(names) if isinstance(names, list) else ["numpy", "torch"]


def _api(fws) -> str:
    """Which framework the fix sentences speak of: jax, tensorflow (Keras) or torch."""
    fws = set(fws)
    if "torch" in fws:
        return "torch"
    if "tensorflow" in fws or "keras" in fws:
        return "tensorflow"
    if "jax" in fws:
        return "jax"
    return "numpy"


# --- attribution ---------------------------------------------------------------------------------
_SEED = Plan("seed", "every RNG seeded before the script starts (twinrun run --seed 0)", seed=0)
_DATA = Plan("data", "unseeded data randomness seeded (" + ", ".join(DATA_NAMES) + ")",
             interventions=DATA_NAMES)
_CLOCK = Plan("clock", "every RNG seeded and the program's clock fixed (--seed 0, fixed-clock)", seed=0,
              interventions=("fixed-clock",))
_CONTENT_NAMES = tuple(n for n in DATA_NAMES if n not in ORDER_NAMES)
_HASH = Plan("hash-seed", "PYTHONHASHSEED fixed to 0", env={"PYTHONHASHSEED": "0"})
_DET = Plan("deterministic", "deterministic kernels (twinrun run --deterministic)", deterministic=True)
_THREADS1 = Plan("threads-1", "one thread (twinrun run --threads 1)", threads=1)


def _attribute(runner: _Runner, path: Path, baseline: Experiment) -> Diagnosis:
    fd = baseline.first_divergence or {}
    phase = fd.get("phase")
    evidence = [baseline]
    proven_order = bool(fd.get("input_order_only"))
    if proven_order:
        evidence.append(Experiment("trace", "nothing: read from the baseline traces", identical=False,
                                   first_divergence=fd, runs=0,
                                   note=f"the inputs of step {fd['step']} hold the same samples in another order "
                                        "(equal per-sample digests, another sequence)"))
    if phase == "init":
        order = [_SEED, _CLOCK, _HASH]
    elif phase == "input":
        order = [_DATA] if proven_order else [_DATA, _HASH, _SEED]
    else:
        order = [_DET, _THREADS1, _SEED, _DATA, _HASH]
    tried: list[Experiment] = []
    for plan in order:
        exp = runner.pairs([plan])[0]
        evidence.append(exp)
        tried.append(exp)
        if exp.identical:
            break
    fixed = next((e for e in tried if e.identical), None)
    if fixed is None and not proven_order and len(order) > 1:
        both = Plan("all", "all of the above at once", seed=0, env=dict(_HASH.env), deterministic=True,
                    interventions=(*DATA_NAMES, "fixed-clock"))
        exp = runner.pairs([both])[0]
        evidence.append(exp)
        tried.append(exp)
        if exp.identical:
            fixed = exp

    if fixed is not None and fixed.name == "data" and not proven_order:
        kinds = {("order" if a["name"] in ORDER_NAMES else "content") for a in fixed.acted}
        if kinds == {"order", "content"}:   # which one was it? seed only the content randomness
            only = Plan("data-content", "only the content randomness seeded (" + ", ".join(_CONTENT_NAMES) + ")",
                        interventions=_CONTENT_NAMES)
            exp = runner.pairs([only])[0]
            evidence.append(exp)
            if exp.identical:
                fixed = exp
    return _verdict_from(path, baseline, evidence, fixed, proven_order)


def _verdict_from(path: Path, baseline: Experiment, evidence, fixed, proven_order) -> Diagnosis:
    fd = baseline.first_divergence
    where = _where_words(fd)
    script = path.name
    api = _api(frameworks_of(baseline.traces[0])) if baseline.traces else "torch"
    tried = [e for e in evidence if e.name not in ("baseline", "trace")]
    tried_words = "; ".join(f"{e.changed}: {'identical' if e.identical else 'still part'}" for e in tried)

    def make(cause, detail, fix, confirmed, summary):
        return Diagnosis(str(path), "not-reproducible", cause, detail, _short(fd), fix, evidence, None,
                         confirmed, summary)

    if proven_order:
        sites = [a for a in (fixed.acted if fixed else []) if a["name"] in ORDER_NAMES]
        if fixed is not None and fixed.name == "data":
            fix = _loader_fix(sites, script)
            return make("data-pipeline", "order", fix, True,
                        f"The runs part {where}: the same samples arrive in another order, and seeding the data "
                        "loaders removes it.")
        calls = _unordered_calls(path)
        if calls:
            how = "; ".join(f"`{c['call']}` at {c['site']}" for c in calls)
            fix = (f"Gather the samples in a fixed order: {how} yields results in completion order — use the ordered "
                   "variant (`Pool.imap`/`Pool.map`, `Executor.map`) or sort the results by sample index before batching.")
        else:
            fix = ("Gather the samples in a fixed order: something hands them over in completion order (a process or "
                   "thread pool, a queue); use an ordered map or sort them by sample index before batching.")
        return make("data-pipeline", "order", fix, False,
                    f"The runs part {where}: the same samples arrive in another order (proven from the traces: equal "
                    "per-sample digests, another sequence); seeding the data randomness did not remove it, so the order "
                    "comes from completion order, not from an RNG.")
    if fixed is None:
        return make("unknown", None,
                    f"No single change tried removed the divergence; look at what `{fd.get('name') if fd else '?'}` "
                    f"depends on {where}. Tried: {tried_words}.", False,
                    f"The runs part {where}, and nothing twinrun tried removed it ({tried_words}).")
    name = fixed.name
    if name == "clock":
        sites = [a for a in fixed.acted if a["name"] == "fixed-clock"]
        calls = ", ".join(f"`{a['what']}` at {a['site']}" for a in sites) or "a clock read"
        cause = "unseeded-init" if fd and fd.get("phase") == "init" else (
            "data-pipeline" if fd and fd.get("phase") == "input" else "unseeded-init")
        return make(cause, "clock" if cause == "unseeded-init" else "content",
                    f"A seed is taken from the clock ({calls}): take it from a fixed seed instead, e.g. "
                    f"{_FIXED_SEED[api]} with `seeds = twinrun.seed_everything(0)`.", True,
                    f"The runs part {where}: a seed read from the clock differs on every run; every RNG seeded "
                    "and the program's clock fixed make the runs identical (seeding alone did not).")
    if name == "seed":
        if fd and fd.get("phase") == "init":
            return make("unseeded-init", None, _SEED_FIX[api].format(script=script), True,
                        f"The runs part {where}: the parameters start from other random values; seeding every RNG "
                        "(twinrun run --seed 0) makes the runs identical.")
        return make("data-pipeline" if fd and fd.get("phase") == "input" else "unseeded-init",
                    "content" if fd and fd.get("phase") == "input" else None,
                    f"Seed every RNG at the start of {script}: `import twinrun; twinrun.seed_everything(0)` — "
                    "a global RNG (Python `random`, NumPy or torch) drawn from after the start was never seeded.", True,
                    f"The runs part {where}; seeding every global RNG (twinrun run --seed 0) makes the runs identical.")
    if name in ("data", "data-content"):
        content = [a for a in fixed.acted if a["name"] not in ORDER_NAMES]
        loaders = [a for a in fixed.acted if a["name"] in ORDER_NAMES]
        if content and (name == "data-content" or not loaders):
            fix = _content_fix(content, script, api)
            return make("data-pipeline", "content", fix, True,
                        f"The runs part {where}: the data itself differs (augmentation or other unseeded randomness); "
                        "seeding it from twinrun's data stream makes the runs identical.")
        fix = _loader_fix(loaders, script) if loaders else _content_fix(content, script, api)
        return make("data-pipeline", "order" if loaders else "content", fix, True,
                    f"The runs part {where}: the loader draws another sample order on every run; giving it a seeded "
                    "generator makes the runs identical." if loaders else
                    f"The runs part {where}; seeding the data randomness makes the runs identical.")
    if name == "hash-seed":
        return make("hash-seed", None,
                    "Do not let set or dict iteration order over strings decide the data or the model: iterate "
                    "`sorted(...)` instead of the set (or fix the hash seed for every run: `PYTHONHASHSEED=0` in the "
                    "environment, or `twinrun.seed_everything(0, hash_seed=\"relaunch\")`).", True,
                    f"The runs part {where}; fixing PYTHONHASHSEED makes the runs identical, so the order of a set or "
                    "dict of strings (which follows the per-process hash seed) decided it.")
    if name in ("deterministic", "threads-1"):
        layer = (fd or {}).get("name", "?")
        ops = _op_class(fd)
        if name == "deterministic":
            own = {"tensorflow": "`tf.config.experimental.enable_op_determinism()`",
                   "jax": "`--xla_gpu_deterministic_ops=true` in XLA_FLAGS"}.get(api, "`torch.use_deterministic_algorithms(True)`")
            fix = (f"Use deterministic kernels: call `twinrun.deterministic()` (or {own}) before training; the "
                   f"run-to-run difference comes from {ops} in `{layer}`.")
        else:
            fix = (f"Run with one thread: `twinrun.deterministic(threads=1)` (or {_PIN_THREADS[api].format(n=1, m=0)}); "
                   f"{ops} in `{layer}` sums in a run-to-run order when several threads share it.")
        return make("nondeterministic-kernel", f"layer `{layer}`, {_OP_SHORT.get((fd or {}).get('phase'), 'a kernel')}",
                    fix, True,
                    f"The runs part {where} although the inputs and parameters before it were identical; "
                    f"{'deterministic kernels' if name == 'deterministic' else 'one thread'} make the runs identical: "
                    f"{ops} in `{layer}` is nondeterministic.")
    # "all": several changes together removed it
    primary = {"init": "unseeded-init", "input": "data-pipeline"}.get((fd or {}).get("phase"), "nondeterministic-kernel")
    return make(primary, "several causes",
                f"Apply all of these: `twinrun.seed_everything(0)` at the top of {script}, seeded data loaders "
                "(`**twinrun.torch.loader_kwargs()`), `twinrun.deterministic()`, and no iteration over sets of strings "
                "(or PYTHONHASHSEED=0). No single one was enough.", True,
                f"The runs part {where}; no single change removed it, but all of them together did.")


def _short(fd: dict | None) -> dict | None:
    if not fd:
        return None
    return {k: fd.get(k) for k in ("step", "phase", "name", "structural") if k in fd}


def _where_words(fd: dict | None) -> str:
    if not fd:
        return "somewhere"
    phase_words = {"init": "at initialisation", "input": "in the input", "forward": "in the forward pass",
                   "loss": "at the loss", "grad": "in the backward pass", "param": "in the optimizer step",
                   "metric": "in the metrics", "custom": "in a custom event"}
    return f"at step {fd.get('step')}, {phase_words.get(fd.get('phase'), fd.get('phase'))} (`{fd.get('name')}`)"


_OP_SHORT = {"grad": "backward: parallel gradient accumulation", "forward": "forward: parallel reduction",
             "loss": "loss reduction", "param": "optimizer update"}


def _op_class(fd: dict | None) -> str:
    phase = (fd or {}).get("phase")
    if phase == "grad":
        return "a backward kernel that accumulates gradients in parallel (e.g. index_put_/scatter-add of advanced indexing)"
    if phase == "forward":
        return "a forward kernel with a parallel reduction"
    if phase == "loss":
        return "the loss reduction"
    if phase == "param":
        return "the optimizer's update kernel"
    return "a kernel"


_SEED_FIX = {
    "torch": "Seed every RNG before the model is built: add `import twinrun; twinrun.seed_everything(0)` at the top of "
             "{script} (or run it with `twinrun run --seed 0`).",
    "numpy": "Seed every RNG before the model is built: add `import twinrun; twinrun.seed_everything(0)` at the top of "
             "{script} (or run it with `twinrun run --seed 0`).",
    "tensorflow": "Seed every RNG before the model is built: add `import twinrun; twinrun.seed_everything(0)` (or "
                  "`keras.utils.set_random_seed(0)`) at the top of {script}, or run it with `twinrun run --seed 0`; "
                  "`tf.random.set_seed` alone does not seed Keras 3 initialisers, which draw from Python's `random`.",
    "jax": "Seed every RNG before the parameters are made: `seeds = twinrun.seed_everything(0)` at the top of {script} "
           "and keys from its streams, e.g. `key = seeds.jax(\"init\")` (or run it with `twinrun run --seed 0`).",
}
_FIXED_SEED = {
    "torch": "`torch.manual_seed(seeds.int(\"init\"))`",
    "numpy": "`np.random.default_rng(seeds.int(\"init\"))`",
    "tensorflow": "`keras.utils.set_random_seed(seeds.int(\"init\"))`",
    "jax": "`key = seeds.jax(\"init\")`",
}
_PIN_THREADS = {
    "torch": "`torch.set_num_threads({n})`",
    "numpy": "`OMP_NUM_THREADS={n}`",
    "tensorflow": "`tf.config.threading.set_intra_op_parallelism_threads({n})` before the first TensorFlow op, or "
                  "`TF_NUM_INTRAOP_THREADS={n}`",
    "jax": "the same number of CPUs for the process, e.g. `taskset -c 0-{m}`",
}


def _loader_fix(sites: list[dict], script: str) -> str:
    tf_sites = [a for a in sites if a["name"] == "seed-tf-data"]
    if tf_sites:
        where = ", ".join(f"`tf.data.Dataset.shuffle(...)` at {a['site']}" for a in tf_sites)
        return (f"Give {where} a seed: `ds.shuffle(buffer_size, seed=seeds.tf(\"data\"))` with "
                "`seeds = twinrun.seed_everything(0)` (any fixed integer works; keep `reshuffle_each_iteration` as "
                "you want it: the reshuffles then repeat too).")
    where = ", ".join(f"`{a['what'].split('(')[0]}(...)` at {a['site']}" for a in sites) or f"the DataLoader in {script}"
    return (f"Give {where} a seeded generator and worker_init_fn: `DataLoader(..., **twinrun.torch.loader_kwargs())` "
            "after `twinrun.seed_everything(0)`.")


def _content_fix(sites: list[dict], script: str, api: str = "torch") -> str:
    if not sites:
        return (f"Seed the data randomness of {script}: draw augmentations from a seeded generator, e.g. "
                "`seeds.numpy(\"augment\")` with `seeds = twinrun.seed_everything(0)`.")
    where = ", ".join(f"`{a['what'].replace(' without a seed', '').replace(' without entropy', '')}` at {a['site']}"
                      for a in sites)
    if any(a["name"] == "seed-tf-random" for a in sites):
        return (f"Seed {where}: make the generator with `tf.random.Generator.from_seed(seeds.tf(\"augment\"))` "
                "(with `seeds = twinrun.seed_everything(0)`) and draw per-element seeds from it for stateless ops.")
    return (f"Seed {where}: pass a seed from twinrun's streams, e.g. `seeds.numpy(\"augment\")` (NumPy) or "
            "`random.Random(seeds.int(\"augment\"))` with `seeds = twinrun.seed_everything(0)`"
            + ("; inside DataLoader workers use `twinrun.torch.worker_rng()`." if api == "torch" else "."))


_UNORDERED = re.compile(r"\.(imap_unordered|as_completed)\s*\(|\bas_completed\s*\(")


def _unordered_calls(path: Path) -> list[dict]:
    """Calls in the script that hand results over in completion order (to name them in the fix)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for i, line in enumerate(lines, 1):
        code = line.split("#", 1)[0]
        m = _UNORDERED.search(code)
        if m:
            call = m.group(1) or "as_completed"
            out.append({"call": f"{call}(...)", "site": f"{path.name}:{i}"})
    return out


# --- portability ---------------------------------------------------------------------------------
def _reproducible(runner: _Runner, path: Path, baseline: Experiment, checks) -> Diagnosis:
    evidence = [baseline]
    fws = frameworks_of(baseline.traces[0])
    port = _portability(runner, baseline.traces[0], checks, evidence, fws) if checks else None
    fix = "Nothing to fix: the runs repeat bitwise on this machine."
    summary = f"The runs are reproducible: {runner.max_steps} steps repeat bitwise."
    if port:
        tc, isa = port.get("thread-count"), port.get("cpu-isa")
        if tc and tc.get("stable") is False:
            part = tc["runs"][0]
            fix += (f" Another thread count gives other numbers ({part['setting']} parts "
                    f"{_where_words(part['first_divergence'])}): for the same numbers on a machine with another core "
                    f"count, pin it with `twinrun.deterministic(threads=N)` (or "
                    f"{_PIN_THREADS[_api(fws)].format(n='N', m='N-1')}), the same N everywhere.")
        if isa and isa.get("stable") is False:
            parting = [r["setting"] for r in isa["runs"] if r["identical"] is False]
            isa_parts = [p for p in parting if not p.startswith("TF_ENABLE_ONEDNN_OPTS")]
            if isa_parts:
                fix += (f" Another CPU instruction set gives other numbers ({', '.join(isa_parts)}): a machine with "
                        "another CPU will not repeat these numbers bitwise unless it runs the same kernels — set the "
                        "lowest level both CPUs share (e.g. `" + isa_parts[-1] + "`) on both.")
            if len(isa_parts) < len(parting):
                fix += (" TensorFlow without its oneDNN kernels (`TF_ENABLE_ONEDNN_OPTS=0`) gives other numbers: set "
                        "`TF_ENABLE_ONEDNN_OPTS` to the same value on every machine (its default depends on the build "
                        "and the CPU).")
        summary += " " + _portability_words(port)
    return Diagnosis(str(path), "reproducible", "reproducible", None, None, fix, evidence, port, True, summary)


def _portability_words(port: dict) -> str:
    out = []
    tc, isa = port.get("thread-count"), port.get("cpu-isa")
    if tc:
        if tc.get("stable") is None:
            out.append(f"Thread count: {tc.get('note')}")
        else:
            out.append("Thread count: " + ("stable." if tc["stable"] else
                                           f"not stable, {tc['runs'][0]['setting']} parts "
                                           f"{_where_words(tc['runs'][0]['first_divergence'])}."))
    if isa:
        if not isa["runs"]:
            out.append(f"CPU ISA: {isa['note']}")
        else:
            bad = [r for r in isa["runs"] if r["identical"] is False]
            out.append("CPU ISA: " + ("stable under " + ", ".join(r["setting"] for r in isa["runs"]) + "." if not bad else
                                      "not stable: " + "; ".join(
                                          f"{r['setting']} parts {_where_words(r['first_divergence'])}" for r in bad) + "."))
    return " ".join(out)


def _probe(env_overrides: dict | None = None) -> dict:
    """What torch sees on this machine (in a child: twinrun itself does not import torch here)."""
    code = ("import json, torch; print(json.dumps({'capability': torch.backends.cpu.get_cpu_capability(), "
            "'threads': torch.get_num_threads(), 'mkl': torch.backends.mkl.is_available(), "
            "'mkldnn': torch.backends.mkldnn.is_available()}))")
    env = dict(os.environ, **(env_overrides or {}))
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {}
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return {}


def isa_emulations(probe: dict | None = None, flags: set[str] | None = None, environ=None) -> tuple[list[Plan], list[str]]:
    """The lower CPU instruction sets this machine can emulate, as plans, and why others cannot be.

    Only lower levels: raising ``ATEN_CPU_CAPABILITY`` above the CPU's kills the process (SIGILL).
    """
    environ = os.environ if environ is None else environ
    probe = _probe() if probe is None else probe
    flags = cpu_flags() if flags is None else flags
    plans: list[Plan] = []
    why_not: list[str] = []
    if not probe:
        return plans, ["PyTorch is not installed here, so no PyTorch kernel level can be emulated"]
    cap = str(probe.get("capability", "")).lower().replace(" ", "")
    ladder = next((ld for ld in _ATEN_LADDERS.values() if cap in ld), None)
    if ladder is None or ladder.index(cap) == 0:
        why_not.append(f"ATEN_CPU_CAPABILITY: PyTorch already runs its lowest kernel level here ({cap or 'unknown'})")
    else:
        for level in reversed(ladder[:ladder.index(cap)]):
            plans.append(Plan(f"ATEN_CPU_CAPABILITY={level}", f"PyTorch kernels for {level} instead of {cap}",
                              env={"ATEN_CPU_CAPABILITY": level}))
    if not probe.get("mkldnn"):
        why_not.append("ONEDNN_MAX_CPU_ISA: this PyTorch has no oneDNN")
    else:
        cap_now = str(environ.get("ONEDNN_MAX_CPU_ISA", "")).upper()
        limit = _ONEDNN_ORDER.index(cap_now) if cap_now in _ONEDNN_ORDER else len(_ONEDNN_ORDER)
        own = _onednn_cpu_level(flags)
        ceiling = min(limit, own)
        lower = [lvl for lvl, need in _ONEDNN_LEVELS if need <= flags and _ONEDNN_ORDER.index(lvl) < ceiling]
        if not lower:
            level = cap_now or (_ONEDNN_ORDER[own] if flags else "unknown")
            why_not.append(f"ONEDNN_MAX_CPU_ISA: no level below {level} that this CPU supports")
        for lvl in lower:
            plans.append(Plan(f"ONEDNN_MAX_CPU_ISA={lvl}", f"oneDNN limited to {lvl}", env={"ONEDNN_MAX_CPU_ISA": lvl}))
    if not probe.get("mkl"):
        why_not.append("MKL_CBWR: this PyTorch does not use MKL")
    elif environ.get("MKL_CBWR"):
        why_not.append(f"MKL_CBWR: already set to {environ['MKL_CBWR']}")
    else:
        plans.append(Plan("MKL_CBWR=COMPATIBLE", "MKL in its CPU-independent (COMPATIBLE) code path",
                          env={"MKL_CBWR": "COMPATIBLE"}))
    return plans, why_not


def _aten_level(flags: set[str]) -> str:
    """The ATen level a CPU with these flags runs (x86), as PyTorch picks it by default."""
    if not flags:
        return ""
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "default"


def _onednn_cpu_level(flags: set[str]) -> int:
    """Index in _ONEDNN_ORDER of the CPU's own oneDNN level (roughly: enough to rank the lower ones)."""
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return _ONEDNN_ORDER.index("AVX512_CORE")
    if {"avx2", "fma"} <= flags:
        return _ONEDNN_ORDER.index("AVX2")
    if "avx" in flags:
        return _ONEDNN_ORDER.index("AVX")
    if "sse4_1" in flags:
        return _ONEDNN_ORDER.index("SSE41")
    return 0


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _thread_plan(fws: set[str], probe: dict) -> tuple[Plan | None, dict]:
    """One rerun with another thread count, for the frameworks the script uses (and what it is)."""
    if "torch" in fws:
        default = probe.get("threads") or _usable_cpus()
    else:
        default = _usable_cpus()
    other = 1 if default > 1 else 2
    info = {"default": default, "tried": other}
    env: dict = {}
    names, threads, interventions = [], None, ()
    if "torch" in fws or not fws & {"tensorflow", "keras", "jax"}:
        threads = other
        names.append(f"threads-{other}")
    if fws & {"tensorflow", "keras"}:
        # The variable alone: --threads would also switch on op determinism, a second change.
        env["TF_NUM_INTRAOP_THREADS"] = str(other)
        names.append(f"TF_NUM_INTRAOP_THREADS={other}")
    if "jax" in fws:
        # XLA's CPU thread pool follows the CPUs the process may use, not a thread setting.
        if other != 1 or not hasattr(os, "sched_setaffinity"):
            info["note"] = ("JAX's thread count follows the CPUs the process may use; this machine cannot offer "
                            "another count (one usable CPU, or no CPU affinity)")
        else:
            interventions = ("one-cpu",)
            names.append("one-cpu")
    if not names:
        return None, info
    return Plan("+".join(names), f"{other} thread{'s' if other > 1 else ''} instead of the default {default} "
                f"({', '.join(names)})", env=env, threads=threads, interventions=interventions), info


def framework_isa_plans(fws, flags: set[str] | None = None, environ=None) -> tuple[list[Plan], list[str]]:
    """TensorFlow's and JAX's lower-ISA (and oneDNN off) reruns for this CPU, as plans, and why others cannot be.

    Only levels below the CPU's own (and below a cap the user already set): a higher one dies of SIGILL.
    """
    from .frameworks.portability import ISA_ORDER, cpu_isa, variants

    environ = os.environ if environ is None else environ
    flags = cpu_flags() if flags is None else flags
    fws = set(fws)
    own = cpu_isa(flags)
    plans: list[Plan] = []
    why_not: list[str] = []
    if fws & {"tensorflow", "keras"}:
        off = str(environ.get("TF_ENABLE_ONEDNN_OPTS", "")).strip() == "0"
        cap = str(environ.get("ONEDNN_MAX_CPU_ISA", "")).upper()
        cap_isa = {"SSE41": "SSE4_2", "AVX": "AVX", "AVX2": "AVX2"}.get(cap)
        level = min([i for i in (own, cap_isa) if i], key=ISA_ORDER.index, default=None)
        for v in variants("tensorflow", cpu_isa=level):
            if v.name == "tf-onednn-off":
                if off:
                    why_not.append("TF_ENABLE_ONEDNN_OPTS: already 0 (TensorFlow's oneDNN kernels are off)")
                    continue
                plans.append(Plan("TF_ENABLE_ONEDNN_OPTS=0", "TensorFlow without its oneDNN kernels (as on builds "
                                  "or machines where they are off)", env=dict(v.env)))
            elif not off:
                name = "ONEDNN_MAX_CPU_ISA=" + v.env["ONEDNN_MAX_CPU_ISA"]
                plans.append(Plan(name, v.note, env=dict(v.env)))
        if not off and not [v for v in variants("tensorflow", cpu_isa=level) if v.cause == "cpu-isa"]:
            why_not.append(f"ONEDNN_MAX_CPU_ISA (TensorFlow): no level below {level or 'this CPU (not x86)'} that "
                           "this CPU supports")
    if "jax" in fws:
        flags_now = environ.get("XLA_FLAGS") or ""
        m = re.search(r"--xla_cpu_max_isa=(\S+)", flags_now)
        cap_isa = m.group(1).upper() if m else None
        level = min([i for i in (own, cap_isa) if i in ISA_ORDER], key=ISA_ORDER.index, default=None)
        vs = variants("jax", cpu_isa=level, xla_flags=flags_now)
        for v in vs:
            isa = v.env["XLA_FLAGS"].split("--xla_cpu_max_isa=")[-1].split()[0]
            plans.append(Plan(f"XLA_FLAGS=--xla_cpu_max_isa={isa}", v.note, env=dict(v.env)))
        if not vs:
            why_not.append(f"--xla_cpu_max_isa (JAX): no level below {level or 'this CPU (not x86)'} that this "
                           "CPU supports")
    return plans, why_not


def _portability(runner: _Runner, reference: str, checks, evidence: list[Experiment], fws=("numpy", "torch")) -> dict:
    fws = set(fws)
    probe = _probe() if "torch" in fws else {}
    plans: list[Plan] = []
    out: dict = {}
    thread_plan = None
    if "thread-count" in checks:
        thread_plan, info = _thread_plan(fws, probe)
        out["thread-count"] = info
        if thread_plan is not None:
            plans.append(thread_plan)
    isa_plans: list[Plan] = []
    why_not: list[str] = []
    if "cpu-isa" in checks:
        if "torch" in fws:
            isa_plans, why_not = isa_emulations(probe)
        more, more_why = framework_isa_plans(fws)
        seen = [p.env for p in isa_plans]
        isa_plans += [p for p in more if p.env not in seen]   # ONEDNN_MAX_CPU_ISA serves torch and TF alike
        why_not += more_why
        if not fws & {"torch", "tensorflow", "keras", "jax"}:
            why_not.append("the script uses none of PyTorch, TensorFlow, JAX, whose kernels can be emulated at a "
                           "lower instruction set")
    plans += isa_plans
    exps = runner.singles(plans, reference, "the baseline") if plans else []
    evidence.extend(exps)
    by = {e.name: e for e in exps}
    if "thread-count" in checks:
        if thread_plan is None:
            out["thread-count"].update({"stable": None, "runs": []})
        else:
            e = by[thread_plan.name]
            out["thread-count"].update({"stable": e.identical, "runs": [_port_row(e)]})
    if "cpu-isa" in checks:
        from .frameworks.portability import cpu_isa

        rows = [_port_row(by[p.name]) for p in isa_plans]
        out["cpu-isa"] = {
            "capability": probe.get("capability") or cpu_isa(cpu_flags()),
            "frameworks": sorted(fws & {"torch", "tensorflow", "keras", "jax"}),
            "stable": (all(r["identical"] for r in rows) if rows else None),
            "runs": rows,
            "not_emulated": why_not,
            "note": (None if rows else "no lower CPU instruction set can be emulated on this machine: " + "; ".join(why_not)),
        }
    return out


def _port_row(e: Experiment) -> dict:
    return {"setting": e.name, "changed": e.changed, "identical": e.identical, "first_divergence": _short(e.first_divergence)}


# --- two machines --------------------------------------------------------------------------------
def _two_machines(runner: _Runner, path: Path, ref: dict, against: str) -> Diagnosis:
    runner.max_steps = min(runner.max_steps, ref["steps"])
    here = runner.pairs([Plan("baseline", "nothing: two runs here as you run the script")])[0]
    live = Experiment("against", f"this machine's run against {Path(against).name}", runs=0,
                      traces=[here.traces[0]], compared_with=Path(against).name)
    c = _compare(here.traces[0], against)
    if c.different_models:
        raise StructuralMismatchError(
            f"{path.name} does not record the same model as {against}: {c._structural_text()}; "
            "give --against a trace of this script")
    _fill(live, c)
    if not here.identical:   # not even this machine repeats: that comes first
        d = _attribute(runner, path, here)
        d.evidence.append(live)
        d.against = against
        return d
    evidence = [here, live]
    diffs = _ranked(c.env_diff)
    if live.identical:
        return Diagnosis(str(path), "reproducible", "reproducible", None, None,
                         "Nothing to fix: this machine repeats the other machine's trace bitwise.", evidence, None, True,
                         f"This machine reproduces {Path(against).name} bitwise ({c.steps_compared} steps).",
                         against=against, environment=diffs)
    plans = _emulate_other(ref["header"])
    confirmed_by = None
    if plans:
        exps = runner.singles(plans, against, Path(against).name)
        evidence.extend(exps)
        confirmed_by = next((e for e in exps if e.identical), None)
    fd = live.first_divergence
    top = ", ".join(f"{d['key']} ({d['a']} here vs {d['b']} there)" for d in diffs[:3]) or "none recorded"
    if confirmed_by is not None:
        fix = (f"To get the other machine's numbers here, run with {confirmed_by.name.replace('+', ' and ')} "
               f"(`{_as_env(confirmed_by)} twinrun run ...`); to make both machines agree, set it on both.")
        summary = (f"This machine and the other part {_where_words(fd)}; emulating the other machine "
                   f"({confirmed_by.changed}) reproduces its trace bitwise, so the environment difference is the cause.")
    else:
        fix = ("The machines differ in " + top + "; make the numerics-relevant ones equal (same library versions, "
               "same thread count, the lowest CPU instruction set both share).")
        tried = ", ".join(p.name for p in plans) if plans else "nothing could be emulated here"
        summary = (f"This machine and the other part {_where_words(fd)}; the runs here repeat, so the environment "
                   f"explains it (ranked differences: {top}); emulating it here did not reproduce the other trace "
                   f"(tried: {tried}).")
    return Diagnosis(str(path), "not-reproducible", "environment", None, _short(fd), fix, evidence, None,
                     confirmed_by is not None, summary, against=against, environment=diffs)


def _ranked(env_diff: dict | None) -> list[dict]:
    if not env_diff:
        return []
    order = {"numerics": 0, "possible": 1, None: 2, "none": 3}
    rows = [d for d in env_diff.get("differences", []) if d.get("rank") != "none"]
    return sorted(rows, key=lambda d: order.get(d.get("rank"), 2))


def _emulate_other(header: dict) -> list[Plan]:
    """Plans that make this machine compute like the other: its lower ISA, its thread count."""
    env = header.get("env") or {}
    probe = _probe()
    plans: list[Plan] = []
    env_vars = env.get("env_vars") or {}
    theirs = str(env_vars.get("ATEN_CPU_CAPABILITY") or _aten_level(set((env.get("cpu") or {}).get("flags") or []))).lower()
    mine = str(probe.get("capability", "")).lower()
    isa_env = {}
    ladder = next((ld for ld in _ATEN_LADDERS.values() if mine in ld), None)
    if ladder and theirs in ladder and ladder.index(theirs) < ladder.index(mine):
        isa_env = {"ATEN_CPU_CAPABILITY": theirs}
        plans.append(Plan(f"ATEN_CPU_CAPABILITY={theirs}", f"the other machine's PyTorch kernels ({theirs})", env=isa_env))
    their_threads = env_vars.get("OMP_NUM_THREADS") or (env.get("cpu") or {}).get("usable")
    try:
        their_threads = int(their_threads)
    except (TypeError, ValueError):
        their_threads = None
    if isinstance(their_threads, int) and their_threads != probe.get("threads"):
        plans.append(Plan(f"threads-{their_threads}", f"the other machine's thread count ({their_threads})",
                          threads=their_threads))
        if isa_env:
            plans.append(Plan(f"ATEN_CPU_CAPABILITY={theirs}+threads-{their_threads}", "both", env=isa_env,
                              threads=their_threads))
    return plans


def _as_env(e: Experiment) -> str:
    parts = [p for p in e.name.split("+") if "=" in p]
    threads = [p for p in e.name.split("+") if p.startswith("threads-")]
    text = " ".join(parts)
    if threads:
        text = (text + " " if text else "") + f"OMP_NUM_THREADS={threads[0].split('-')[1]}"
    return text
