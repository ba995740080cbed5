"""When two runs of a script part: change one thing at a time, and name the cause from what removed it.

The experiments to try follow the phase where the baseline runs part (``INIT``: seeds, the clock, the
hash seed; ``input``: data randomness first; later phases: kernels and threads first). The first
change that makes the runs identical is the evidence; the trace itself is evidence too (the same
per-sample digests in another order prove ``data-pipeline``/``order``). The cause, the fix and the
summary then come from the first rule of ``RULES`` that holds for the findings: a table, read top down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import frameworks
from .._display import shown
from ..frameworks.base import FixWords, Intervention
from ..interventions import DATA_NAMES, ORDER_NAMES, registry
from .experiments import ExperimentRunner, Plan, frameworks_of
from .fixes import data_fix, op_class, op_short, unordered_calls
from .model import Act, Cause, Diagnosis, Experiment, Verdict, Where, where_words

__all__ = ["RULES", "Findings", "Rule", "attribute"]

_CONTENT_NAMES = tuple(n for n in DATA_NAMES if n not in ORDER_NAMES)
SEED = Plan("seed", "every RNG seeded before the script starts (twinrun run --seed 0)", seed=0)
DATA = Plan("data", "unseeded data randomness seeded (" + ", ".join(DATA_NAMES) + ")", interventions=DATA_NAMES)
CLOCK = Plan("clock", "every RNG seeded and the program's clock fixed (--seed 0, fixed-clock)", seed=0,
             interventions=("fixed-clock",))
HASH = Plan("hash-seed", "PYTHONHASHSEED fixed to 0", env={"PYTHONHASHSEED": "0"})
DETERMINISTIC = Plan("deterministic", "deterministic kernels (twinrun run --deterministic)", deterministic=True)
THREADS_1 = Plan("threads-1", "one thread (twinrun run --threads 1)", threads=1)
ALL = Plan("all", "all of the above at once", seed=0, env=dict(HASH.env), deterministic=True,
           interventions=(*DATA_NAMES, "fixed-clock"))
DATA_CONTENT = Plan("data-content", "only the content randomness seeded (" + ", ".join(_CONTENT_NAMES) + ")",
                    interventions=_CONTENT_NAMES)

# Experiments to try, by the phase where the baseline runs part.
_ORDER = {"init": [SEED, CLOCK, HASH], "input": [DATA, HASH, SEED]}
_LATER = [DETERMINISTIC, THREADS_1, SEED, DATA, HASH]


@dataclass
class Findings:
    """What the experiments showed: where the runs part, what removed it, what the trace proves."""

    script: Path
    baseline: Experiment
    evidence: list[Experiment]
    fixed: Experiment | None             # the experiment whose runs were identical
    proven_order: bool                   # the trace shows the same samples in another order
    words: FixWords
    interventions: dict[str, Intervention] = field(default_factory=dict)

    @property
    def where(self) -> Where | None:
        return self.baseline.first_divergence

    @property
    def phase(self) -> str | None:
        return self.where.phase if self.where else None

    @property
    def fixed_by(self) -> str | None:
        return self.fixed.name if self.fixed else None

    def acts(self, names: tuple[str, ...] | None = None, *, exclude: tuple[str, ...] = ()) -> list[Act]:
        """The acts of the confirming experiment (of interventions in ``names``, not in ``exclude``)."""
        acted = self.fixed.acted if self.fixed else []
        return [a for a in acted if (names is None or a.name in names) and a.name not in exclude]

    @property
    def tried(self) -> str:
        return "; ".join(f"{e.changed}: {'identical' if e.identical else 'still part'}"
                         for e in self.evidence if e.name not in ("baseline", "trace"))


@dataclass(frozen=True)
class Conclusion:
    cause: Cause
    detail: str | None
    fix: str
    confirmed: bool
    summary: str


@dataclass(frozen=True)
class Rule:
    """When ``holds`` for the findings, ``conclude`` names the cause, the fix and the summary."""

    name: str
    holds: Callable[[Findings], bool]
    conclude: Callable[[Findings], Conclusion]


# --- the rules ------------------------------------------------------------------------------------

def _order_seeded(f: Findings) -> Conclusion:
    fix = data_fix(f.acts(ORDER_NAMES), "order", f.script.name, f.words, f.interventions)
    return Conclusion(Cause.DATA_PIPELINE, "order", fix, True,
                      f"The runs part {where_words(f.where)}: the same samples arrive in another order, and seeding "
                      "the data loaders removes it.")


def _order_completion(f: Findings) -> Conclusion:
    calls = unordered_calls(f.script)
    if calls:
        how = "; ".join(f"`{c['call']}` at {c['site']}" for c in calls)
        fix = (f"Gather the samples in a fixed order: {how} yields results in completion order — use the ordered "
               "variant (`Pool.imap`/`Pool.map`, `Executor.map`) or sort the results by sample index before batching.")
    else:
        fix = ("Gather the samples in a fixed order: something hands them over in completion order (a process or "
               "thread pool, a queue); use an ordered map or sort them by sample index before batching.")
    return Conclusion(Cause.DATA_PIPELINE, "order", fix, False,
                      f"The runs part {where_words(f.where)}: the same samples arrive in another order (proven from "
                      "the traces: equal per-sample digests, another sequence); seeding the data randomness did not "
                      "remove it, so the order comes from completion order, not from an RNG.")


def _nothing(f: Findings) -> Conclusion:
    name = shown(f.where.name, 120) if f.where else "?"   # a layer name from the trace
    return Conclusion(Cause.UNKNOWN, None,
                      f"No single change tried removed the divergence; look at what `{name}` depends on "
                      f"{where_words(f.where)}. Tried: {f.tried}.", False,
                      f"The runs part {where_words(f.where)}, and nothing twinrun tried removed it ({f.tried}).")


def _clock(f: Findings) -> Conclusion:
    calls = ", ".join(f"`{a.what}` at {a.site}" for a in f.acts(("fixed-clock",))) or "a clock read"
    cause, detail = (Cause.DATA_PIPELINE, "content") if f.phase == "input" else (Cause.UNSEEDED_INIT, "clock")
    return Conclusion(cause, detail,
                      f"A seed is taken from the clock ({calls}): take it from a fixed seed instead, e.g. "
                      f"{f.words.fixed_seed} with `seeds = twinrun.seed_everything(0)`.", True,
                      f"The runs part {where_words(f.where)}: a seed read from the clock differs on every run; every "
                      "RNG seeded and the program's clock fixed make the runs identical (seeding alone did not).")


def _seed_init(f: Findings) -> Conclusion:
    return Conclusion(Cause.UNSEEDED_INIT, None, f.words.seed.format(script=f.script.name), True,
                      f"The runs part {where_words(f.where)}: the parameters start from other random values; seeding "
                      "every RNG (twinrun run --seed 0) makes the runs identical.")


def _seed_later(f: Findings) -> Conclusion:
    cause, detail = (Cause.DATA_PIPELINE, "content") if f.phase == "input" else (Cause.UNSEEDED_INIT, None)
    return Conclusion(cause, detail,
                      f"Seed every RNG at the start of {f.script.name}: `import twinrun; twinrun.seed_everything(0)` — "
                      "a global RNG (Python `random`, NumPy or torch) drawn from after the start was never seeded.",
                      True,
                      f"The runs part {where_words(f.where)}; seeding every global RNG (twinrun run --seed 0) makes "
                      "the "
                      "runs identical.")


def _data(f: Findings) -> Conclusion:
    content = f.acts(exclude=ORDER_NAMES)
    loaders = f.acts(ORDER_NAMES)
    if content and (f.fixed_by == "data-content" or not loaders):
        return Conclusion(Cause.DATA_PIPELINE, "content",
                          data_fix(content, "content", f.script.name, f.words, f.interventions), True,
                          f"The runs part {where_words(f.where)}: the data itself differs (augmentation or other "
                          "unseeded randomness); seeding it from twinrun's data stream makes the runs identical.")
    if loaders:
        return Conclusion(Cause.DATA_PIPELINE, "order", data_fix(loaders, "order", f.script.name, f.words,
                                                                 f.interventions), True,
                          f"The runs part {where_words(f.where)}: the loader draws another sample order on every run; "
                          "giving it a seeded generator makes the runs identical.")
    return Conclusion(Cause.DATA_PIPELINE, "content", data_fix(content, "content", f.script.name, f.words,
                                                               f.interventions), True,
                      f"The runs part {where_words(f.where)}; seeding the data randomness makes the runs identical.")


def _hash(f: Findings) -> Conclusion:
    return Conclusion(Cause.HASH_SEED, None,
                      "Do not let set or dict iteration order over strings decide the data or the model: iterate "
                      "`sorted(...)` instead of the set (or fix the hash seed for every run: `PYTHONHASHSEED=0` in the "
                      "environment, or `twinrun.seed_everything(0, hash_seed=\"relaunch\")`).", True,
                      f"The runs part {where_words(f.where)}; fixing PYTHONHASHSEED makes the runs identical, so the "
                      "order of a set or dict of strings (which follows the per-process hash seed) decided it.")


def _kernel(f: Findings) -> Conclusion:
    layer = shown(f.where.name, 120) if f.where and f.where.name else "?"
    ops = op_class(f.phase)
    if f.fixed_by == "deterministic":
        fix = (f"Use deterministic kernels: call `twinrun.deterministic()` (or {f.words.deterministic}) before "
               f"training; the run-to-run difference comes from {ops} in `{layer}`.")
    else:
        fix = (f"Run with one thread: `twinrun.deterministic(threads=1)` (or {f.words.pin_threads.format(n=1, m=0)}); "
               f"{ops} in `{layer}` sums in a run-to-run order when several threads share it.")
    what = "deterministic kernels" if f.fixed_by == "deterministic" else "one thread"
    return Conclusion(Cause.NONDETERMINISTIC_KERNEL, f"layer `{layer}`, {op_short(f.phase)}", fix, True,
                      f"The runs part {where_words(f.where)} although the inputs and parameters before it were "
                      f"identical; {what} make the runs identical: {ops} in `{layer}` is nondeterministic.")


def _several(f: Findings) -> Conclusion:
    primary = {"init": Cause.UNSEEDED_INIT, "input": Cause.DATA_PIPELINE}.get(str(f.phase),
                                                                             Cause.NONDETERMINISTIC_KERNEL)
    return Conclusion(primary, "several causes",
                      f"Apply all of these: `twinrun.seed_everything(0)` at the top of {f.script.name}, seeded data "
                      "loaders (`**twinrun.torch.loader_kwargs()`), `twinrun.deterministic()`, and no iteration over "
                      "sets of strings (or PYTHONHASHSEED=0). No single one was enough.", True,
                      f"The runs part {where_words(f.where)}; no single change removed it, but all of them together "
                      "did.")


RULES: list[Rule] = [
    Rule("order proven, loaders seeded", lambda f: f.proven_order and f.fixed_by == "data", _order_seeded),
    Rule("order proven, no seed helps", lambda f: f.proven_order, _order_completion),
    Rule("nothing removed it", lambda f: f.fixed is None, _nothing),
    Rule("the clock", lambda f: f.fixed_by == "clock", _clock),
    Rule("seeding, at init", lambda f: f.fixed_by == "seed" and f.phase == "init", _seed_init),
    Rule("seeding, later", lambda f: f.fixed_by == "seed", _seed_later),
    Rule("data randomness", lambda f: f.fixed_by in ("data", "data-content"), _data),
    Rule("hash seed", lambda f: f.fixed_by == "hash-seed", _hash),
    Rule("kernels or threads", lambda f: f.fixed_by in ("deterministic", "threads-1"), _kernel),
    Rule("several together", lambda f: f.fixed_by == "all", _several),
]


# --- the experiments ------------------------------------------------------------------------------

def attribute(runner: ExperimentRunner, script: Path, baseline: Experiment) -> Diagnosis:
    """Runs part: try one change at a time, then conclude from the first rule that holds."""
    fd = baseline.first_divergence
    phase = fd.phase if fd else None
    evidence = [baseline]
    proven_order = bool(fd and fd.input_order_only)
    if proven_order and fd is not None:
        evidence.append(Experiment("trace", "nothing: read from the baseline traces", identical=False,
                                   first_divergence=fd, runs=0,
                                   note=f"the inputs of step {fd.step} hold the same samples in another order "
                                        "(equal per-sample digests, another sequence)"))
    order = ([DATA] if proven_order else _ORDER["input"]) if phase == "input" else _ORDER.get(str(phase), _LATER)
    tried: list[Experiment] = []
    for plan in order:
        exp = runner.pairs([plan])[0]
        evidence.append(exp)
        tried.append(exp)
        if exp.identical:
            break
    fixed = next((e for e in tried if e.identical), None)
    if fixed is None and not proven_order and len(order) > 1:
        exp = runner.pairs([ALL])[0]
        evidence.append(exp)
        if exp.identical:
            fixed = exp
    if fixed is not None and fixed.name == "data" and not proven_order:
        kinds = {("order" if a.name in ORDER_NAMES else "content") for a in fixed.acted}
        if kinds == {"order", "content"}:   # which one was it? seed only the content randomness
            exp = runner.pairs([DATA_CONTENT])[0]
            evidence.append(exp)
            if exp.identical:
                fixed = exp
    words = frameworks.words(frameworks_of(baseline.traces[0])) if baseline.traces else \
        frameworks.adapter_class("torch").words
    findings = Findings(script, baseline, evidence, fixed, proven_order, words, registry())
    rule = next(r for r in RULES if r.holds(findings))
    c = rule.conclude(findings)
    return Diagnosis(str(script), Verdict.NOT_REPRODUCIBLE, c.cause, c.detail, fd, c.fix, evidence, None,
                     c.confirmed, c.summary)
