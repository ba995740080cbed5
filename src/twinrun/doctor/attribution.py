"""When two runs of a script part: change one thing at a time, and name the cause from what removed it.

The experiments to try follow the phase where the baseline runs part (``INIT``: seeds, the clock, the
hash seed; ``input``: data randomness first; later phases: kernels and threads first). The first
change that makes the runs identical is the evidence; the trace itself is evidence too (the same
per-sample digests in another order prove ``data-pipeline``/``order``). The cause, the fix and the
summary then come from the first rule of ``RULES`` that holds for the findings: a table, read top down.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import frameworks
from .._display import shown
from ..comparison.samples import SamplePools, sample_pools
from ..frameworks.base import FixWords, Intervention
from ..interventions import DATA_NAMES, ORDER_NAMES, registry
from .experiments import ExperimentRunner, Plan, frameworks_of
from .fixes import data_fix, op_class, op_short
from .model import Act, Cause, Diagnosis, Experiment, Verdict, Where, where_words
from .sources import Edit, bisect, completion_edit, edit_for, hash_sites, import_line, pick, unordered_sites

__all__ = ["RULES", "Findings", "Rule", "attribute"]

_CONTENT_NAMES = tuple(n for n in DATA_NAMES if n not in ORDER_NAMES)
SEED = Plan("seed", "every RNG seeded before the script starts (twinrun run --seed 0)", seed=0)
DATA = Plan("data", "unseeded data randomness seeded (" + ", ".join(DATA_NAMES) + ")", interventions=DATA_NAMES)
CLOCK = Plan("clock", "every RNG seeded and the program's time.time()/time_ns() fixed (--seed 0, fixed-clock; "
             "datetime.now() and other clocks not)", seed=0,
             interventions=("fixed-clock",))
HASH = Plan("hash-seed", "PYTHONHASHSEED fixed to 0", env={"PYTHONHASHSEED": "0"})
DETERMINISTIC = Plan("deterministic", "deterministic kernels (twinrun run --deterministic)", deterministic=True)
THREADS_1 = Plan("threads-1", "one thread (twinrun run --threads 1)", threads=1)
ALL = Plan("all", "at once: every RNG and the data randomness seeded, PYTHONHASHSEED=0, the program's time.time() "
           "fixed and deterministic kernels", seed=0, env=dict(HASH.env), deterministic=True,
           interventions=(*DATA_NAMES, "fixed-clock"))
RNGS = Plan("rngs", "Python's, NumPy's and torch's unseeded RNGs seeded and the program's time.time()/time_ns() "
            "fixed, each draw observed (seed-random, seed-numpy, seed-torch, fixed-clock)",
            interventions=("seed-random", "seed-numpy", "seed-torch", "fixed-clock"))
DATA_CONTENT = Plan("data-content", "only the content randomness seeded (" + ", ".join(_CONTENT_NAMES) + ")",
                    interventions=_CONTENT_NAMES)

# Experiments to try, by the phase where the baseline runs part.
_ORDER = {"init": [RNGS, SEED, CLOCK, HASH], "input": [DATA, HASH, SEED]}
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
    pools: SamplePools | None = None     # where run A's samples are in run B, over the whole run
    source: Act | None = None            # the draw that matters (after bisecting)
    edit: Edit | None = None             # its fix, as an edit of the user's line
    # The nondeterministic op, from a census pass (issue 11, part 3): {"op", "site", "phase", "cost", ...}.
    op: dict[str, str] | None = None

    def at(self) -> str:
        """`` `api` at file:line`` of the source, or ''."""
        return f"`{self.source.shown_api}` at {self.source.site}" if self.source else ""

    @functools.cached_property
    def together(self) -> list[Act]:
        """The sources when bisecting found none that removes the divergence alone: one act for each
        intervention that acted at the program's lines (the fix must seed every one); else []. Computed
        once, when a rule first asks (the experiments are all in by then)."""
        if self.fixed is None or self.fixed.name.startswith("only ") or \
                not any(e.name.startswith("only ") and not e.identical for e in self.evidence):
            return []
        by_name: dict[str, list[Act]] = {}
        for a in self.fixed.acted:
            if not a.site.startswith("<") and not import_line(a.site) and a.kind != "late-seed":
                by_name.setdefault(a.name, []).append(a)
        chosen = [pick(acts, self.phase) for acts in by_name.values()]
        found = [a for a in chosen if a is not None]
        return found if len(found) > 1 else []

    def alone(self) -> str:
        """How the summary says what seeding the source did: alone, or only together with the others."""
        if self.together:
            return "seeding these together makes the runs identical; seeding any one alone did not"
        return "seeding it alone makes the runs identical"

    def fix_of(self, fallback: str) -> str:
        """The fix written for the source's API and line when there is one, else ``fallback``."""
        if self.together:
            parts = []
            for a in self.together:
                edit = edit_for(a, self.script, self.phase)
                parts.append(f"`{a.shown_api}` at {a.site}" + (f": {edit.words()}" if edit else ""))
            every = self.words.seed.format(script=self.script.name)
            return (f"Seed every one of these draws (each was tried alone and the runs still parted): "
                    f"{'; '.join(parts)}. Or seed every RNG at once: {every}")
        if self.source is None or self.edit is None:
            return fallback
        a = self.source
        also = ""   # the framework's own way, for every RNG at once
        if a.api == "torch.manual_seed" and a.what.startswith("called at"):
            what = f"`torch.manual_seed` is {a.what}: the initial values were drawn before it"
        elif a.kind == "init" or (self.phase == "init" and not a.direct):
            what = f"`{a.shown_api}` draws the initial values from an RNG that nothing seeds before {a.site}"
            also = " " + self.words.seed.format(script=self.script.name)
            if a.built and a.unseeded:   # the object that took the draw has a seed of its own
                given = f", passed to `{a.called.rsplit('.', 1)[-1]}` in place of its default or its name" \
                    if a.called else ""
                also = f" Or give that one object a seed of its own: `{a.built}({a.unseeded}=0)`{given}." + also
        elif a.kind == "seed":
            what = f"{self.at()} takes its seed from the operating system, another one on every run"
        elif a.name == "fixed-clock":
            what = f"{self.at()} reads the clock, and the value becomes a seed"
            also = (f" (Or take it from twinrun's streams: {self.words.fixed_seed} with "
                    "`seeds = twinrun.seed_everything(0)`.)")
        elif a.kind == "order" or a.name in ORDER_NAMES:
            what = f"{self.at()} draws the sample order from an RNG that nothing seeds"
        elif not a.kind and a.what:   # a constructor without a seed (the act, not a draw)
            what = f"{self.at()}: {a.what}, so it starts from another state on every run"
        else:
            what = f"{self.at()} draws from an RNG that nothing seeds"
        # the program draws the same way at other lines too: the one edit alone would leave those
        others = sorted({o.site for o in self.acts() if o.name == a.name and o.api == a.api and o.direct
                         and o.site != a.site and o.site != self.edit.site})
        same = f"; make the same change at {', '.join(others)}" if a.direct and others else ""
        return f"{what}: {self.edit.words()}{same}.{also}"

    @property
    def where(self) -> Where | None:
        return self.baseline.first_divergence

    @property
    def phase(self) -> str | None:
        return self.where.phase if self.where else None

    @property
    def fixed_by(self) -> str | None:
        if self.fixed is None:
            return None
        name = self.fixed.name
        if name.startswith("only "):
            return "data" if self.fixed.acted and self.phase == "input" else "rngs"
        return name

    def acts(self, names: tuple[str, ...] | None = None, *, exclude: tuple[str, ...] = ()) -> list[Act]:
        """The acts of the confirming experiment (of interventions in ``names``, not in ``exclude``); those
        of the intervention that drew the source first, and none made while the program imported a library
        (a random id drawn at ``import tensorflow`` decides nothing the script computes) when others remain."""
        acted = self.fixed.acted if self.fixed else []
        chosen = [a for a in acted if (names is None or a.name in names) and a.name not in exclude]
        chosen = [a for a in chosen if not import_line(a.site)] or chosen
        if self.source is not None:
            chosen = [a for a in chosen if a.name == self.source.name] or chosen
        return chosen

    @property
    def tried(self) -> str:
        return "; ".join(f"{e.changed}: {'identical' if e.identical else 'still part'}"
                         for e in self.evidence if e.name not in ("baseline", "trace")) or "nothing"


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

def _detail(f: Findings) -> str:
    """Order or content: from the API of the draw that matters, else from the pooled sample digests."""
    if f.source is not None:
        return "order" if f.source.kind == "order" or f.source.name in ORDER_NAMES else "content"
    return (f.pools.detail if f.pools is not None else None) or "content"


def _samples(f: Findings) -> str:
    return f" The traces: {f.pools.sentence()}." if f.pools is not None and f.pools.detail else ""


def _order_seeded(f: Findings) -> Conclusion:
    fix = f.fix_of(data_fix(f.acts(ORDER_NAMES) or f.acts(), "order", f.script.name, f.words, f.interventions))
    return Conclusion(Cause.DATA_PIPELINE, "order", fix, True,
                      f"The runs part {where_words(f.where)}: which samples come when (the order, or the choice, "
                      f"of the samples) is drawn anew on every run, and seeding the data randomness removes it."
                      f"{_samples(f)}")


def _order_completion(f: Findings) -> Conclusion:
    calls = unordered_sites(f.script)
    edits = [e for e in (completion_edit(c) for c in calls) if e is not None]
    if calls:
        how = "; ".join(f"`{c['call']}` at {c['site']}" for c in calls)
        fix = (f"Gather the samples in a fixed order: {how} hands them over in completion order. "
               + (f"Take them in submission order instead: {edits[0].words()}." if edits else
                  "Tag each sample with its index and sort by it before batching (or use an ordered map: "
                  "`Pool.imap`, `Executor.map`)."))
        f.source = Act("completion-order", "results collected in completion order", calls[0]["call"],
                       calls[0]["site"], "order")
        f.edit = edits[0] if edits else None
    else:
        fix = ("Gather the samples in a fixed order: something hands them over in completion order (a process or "
               "thread pool, a queue); use an ordered map or sort them by sample index before batching.")
    return Conclusion(Cause.DATA_PIPELINE, "order", fix, False,
                      f"The runs part {where_words(f.where)}: the same samples arrive in another order (proven from "
                      "the traces alone); seeding the data randomness did not remove it, so the order comes from "
                      f"completion order, not from an RNG.{_samples(f)}")


def _nothing(f: Findings) -> Conclusion:
    where = f" (`{shown(f.where.name, 120)}`)" if f.where and f.where.name else ""   # a name from the trace
    return Conclusion(Cause.UNKNOWN, None,
                      f"No single change tried removed the divergence; look at what the first differing value{where} "
                      f"depends on {where_words(f.where)}. Ruled out (each rerun twice): {f.tried}.", False,
                      f"The runs part {where_words(f.where)}, and nothing twinrun tried removed it; ruled out: "
                      f"{f.tried}.")


def _during_step(f: Findings) -> str:
    """Past the input, with the parameters identical up to there: a random layer of the step (dropout, a
    noise or augmentation layer) drew from an unseeded RNG; `unseeded-init` is the contract's nearest name."""
    if f.phase not in ("forward", "loss") or f.where is None or not f.where.name:
        return ""
    where = "the loss" if f.phase == "loss" else f"`{shown(f.where.name, 120)}`"
    return (f" The parameters and inputs were identical up to there, so the draw is made during the step, in "
            f"{where}: a random layer (dropout, a noise or augmentation layer) or noise drawn by the step.")


def _what(f: Findings, one: str) -> str:
    """The subject of the summary: the source, or every source when only all of them together did it."""
    if f.together:
        return " and ".join(f"`{a.shown_api}` at {a.site}" for a in f.together) + " "
    return one


def _rngs(f: Findings) -> Conclusion:
    what = f"{f.at()} " if f.source else "an unseeded RNG "
    if f.source is not None and f.source.api == "torch.manual_seed" and f.source.what.startswith("called at"):
        what = f"the model built at {f.source.site} (`torch.manual_seed` is {f.source.what}) "   # seeded too late
    if f.phase == "init" or f.phase not in ("input",):
        fallback = f.words.seed.format(script=f.script.name)
        if f.phase in ("forward", "loss") and f.source is not None:   # a draw of every step, not of the init
            fallback = (f"`{f.source.shown_api}` at {f.source.site} draws on every step from an RNG that nothing "
                        f"seeds: seed every RNG at the start of {f.script.name}, `import twinrun; "
                        "twinrun.seed_everything(0)` (or give that layer a seed of its own where it takes one).")
        return Conclusion(Cause.UNSEEDED_INIT, "clock" if f.source and f.source.name == "fixed-clock" else None,
                          f.fix_of(fallback), True,
                          f"The runs part {where_words(f.where)}: {_what(f, what)}"
                          f"{'give' if f.together else 'gives'} other values on every run; "
                          f"{f.alone()}.{_during_step(f)}")
    detail = _detail(f)
    fix = f.fix_of(data_fix(f.acts(), detail, f.script.name, f.words, f.interventions))
    return Conclusion(Cause.DATA_PIPELINE, detail, fix, True,
                      f"The runs part {where_words(f.where)}: {_what(f, what)}draws "
                      f"{'the sample order' if detail == 'order' else 'the data'} anew on every run; {f.alone()}."
                      f"{_samples(f)}")


def _seed_init(f: Findings) -> Conclusion:
    return Conclusion(Cause.UNSEEDED_INIT, None, f.words.seed.format(script=f.script.name), True,
                      f"The runs part {where_words(f.where)}: the parameters start from other random values; seeding "
                      "every RNG (twinrun run --seed 0) makes the runs identical; no single draw of Python's, NumPy's "
                      "or torch's RNGs did (a framework's own RNG: Keras, TensorFlow or JAX).")


def _seed_later(f: Findings) -> Conclusion:
    cause, detail = (Cause.DATA_PIPELINE, _detail(f)) if f.phase == "input" else (Cause.UNSEEDED_INIT, None)
    step = _during_step(f)
    return Conclusion(cause, detail,
                      f"Seed every RNG at the start of {f.script.name}: `import twinrun; twinrun.seed_everything(0)` — "
                      "a global RNG (Python `random`, NumPy, torch or a framework's own) drawn from after the start "
                      "was never seeded (or give the random layer its own seed or generator where it takes one).",
                      True,
                      f"The runs part {where_words(f.where)}; seeding every global RNG (twinrun run --seed 0) makes "
                      f"the runs identical.{step}{_samples(f)}")


def _data(f: Findings) -> Conclusion:
    detail = _detail(f) if f.source is not None else None
    content = f.acts(exclude=ORDER_NAMES)
    loaders = f.acts(ORDER_NAMES)
    if detail is None:
        detail = "content" if content and (f.fixed_by == "data-content" or not loaders) else \
            "order" if loaders else _detail(f)
    acts = loaders if detail == "order" and loaders else content or loaders
    fix = f.fix_of(data_fix(acts, detail, f.script.name, f.words, f.interventions))
    what = ("the loader draws another sample order on every run" if detail == "order" else
            "the data itself differs (augmentation or other unseeded randomness)")
    seeded = (f"seeding {_what(f, '')}together makes the runs identical; seeding any one alone did not"
              if f.together else f"seeding {f.at() or 'the data randomness'} makes the runs identical")
    return Conclusion(Cause.DATA_PIPELINE, detail, fix, True,
                      f"The runs part {where_words(f.where)}: {what}; {seeded}.{_samples(f)}")


def _hash(f: Findings) -> Conclusion:
    sites = hash_sites(f.script)
    hashed = bool(sites) and sites[0][0].startswith("hash(")
    if sites:
        what, site, edit = sites[0]
        api = "hash()" if hashed else f"iteration over a set ({what})"
        f.source, f.edit = Act("hash-seed", what, api, site, "hash"), edit
        fix = (f"Take a stable hash: `hash()` of a string at {site} is another number in every process "
               f"(the per-process hash seed); {edit.words()} (or fix the hash seed for every run: "
               "`PYTHONHASHSEED=0`)." if hashed else
               f"Iterate in a fixed order: {what} at {site} follows the per-process hash seed of strings; "
               f"{edit.words()} (or fix the hash seed for every run: `PYTHONHASHSEED=0`).")
    else:
        fix = ("Do not let set or dict iteration order over strings decide the data or the model: iterate "
               "`sorted(...)` instead of the set (or fix the hash seed for every run: `PYTHONHASHSEED=0` in the "
               "environment, or `twinrun.seed_everything(0, hash_seed=\"relaunch\")`).")
    decided = (f"`hash()` of a string at {f.source.site if f.source else 'a line of the script'} (another number "
               "in every process)" if hashed else
               "the order of a set or dict of strings (which follows the per-process hash seed)")
    return Conclusion(Cause.HASH_SEED, None, fix, True,
                      f"The runs part {where_words(f.where)}; fixing PYTHONHASHSEED makes the runs identical, so "
                      f"{decided} decided it.")


def _kernel(f: Findings) -> Conclusion:
    layer = shown(f.where.name, 120) if f.where and f.where.name else "the first differing value"
    ops = f"`{f.op['op']}` at {f.op['site']}" if f.op and f.op.get("op") and f.op.get("site") else op_class(f.phase)
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
    # What "all" changed, in this script's terms: the parts that have something to act on here.
    # the draws any experiment saw at the program's lines (not while it imported a library), each once
    acts = list({(a.api, a.site): a for e in f.evidence for a in e.acted
                 if not a.site.startswith("<") and not import_line(a.site)}.values())
    # the source: a draw seen at the program's lines, not one of the "all" run (seeded, it draws nothing there)
    f.source, f.edit = (acts[0] if acts else None), None
    parts = [f"`import twinrun; twinrun.seed_everything(0)` at the top of {f.script.name}"]
    if any(a.name == "seed-loaders" for a in acts):
        parts.append("seeded data loaders (`**twinrun.torch.loader_kwargs()`)")
    parts.append(f"deterministic kernels (`twinrun.deterministic()`, or {f.words.deterministic})")
    if hash_sites(f.script):
        parts.append("no iteration over sets of strings (or PYTHONHASHSEED=0)")
    seen = "; ".join(f"`{a.shown_api}` at {a.site}" for a in acts[:4])
    drawn = f" The unseeded draws seen: {seen}; seeding them alone was not enough." if seen else ""
    if any(a.name == "seed-tf-random" for a in acts):   # TensorFlow ops drew: tf.data's parallel map shares their state
        drawn += (" A random op in a `Dataset.map` with `num_parallel_calls` draws in the order the parallel calls "
                  "run: it needs its seed and a serial map (or op determinism) together.")
    return Conclusion(primary, "several causes",
                      f"Apply all of these together: {', '.join(parts)}. No single one was enough.{drawn}", True,
                      f"The runs part {where_words(f.where)}; no single change removed it, but all of them together "
                      "did.")


RULES: list[Rule] = [
    Rule("order proven, data seeded", lambda f: f.proven_order and f.fixed_by in ("data", "rngs"), _order_seeded),
    Rule("order proven, no seed helps", lambda f: f.proven_order and f.fixed is None, _order_completion),
    Rule("nothing removed it", lambda f: f.fixed is None, _nothing),
    Rule("one RNG, observed", lambda f: f.fixed_by == "rngs", _rngs),
    Rule("the clock", lambda f: f.fixed_by == "clock", _rngs),
    Rule("seeding, at init", lambda f: f.fixed_by == "seed" and f.phase == "init", _seed_init),
    Rule("seeding, later", lambda f: f.fixed_by == "seed", _seed_later),
    Rule("data randomness", lambda f: f.fixed_by in ("data", "data-content"), _data),
    Rule("hash seed", lambda f: f.fixed_by == "hash-seed", _hash),
    Rule("kernels or threads", lambda f: f.fixed_by in ("deterministic", "threads-1"), _kernel),
    Rule("several together", lambda f: f.fixed_by == "all", _several),
]


# --- the experiments ------------------------------------------------------------------------------

def _pools(baseline: Experiment) -> SamplePools | None:
    if len(baseline.traces) < 2:
        return None
    try:
        return sample_pools(baseline.traces[0], baseline.traces[1])
    except Exception:   # noqa: BLE001 - a trace without per-sample digests proves nothing; it is no failure
        return None


def attribute(runner: ExperimentRunner, script: Path, baseline: Experiment) -> Diagnosis:
    """Runs part: try one change at a time, then conclude from the first rule that holds."""
    fd = baseline.first_divergence
    phase = fd.phase if fd else None
    evidence = [baseline]
    pools = _pools(baseline) if phase == "input" else None
    proven_order = pools.order_proven if pools is not None else bool(fd and fd.input_order_only)
    if phase == "input" and pools is not None and pools.detail:
        evidence.append(Experiment("trace", "nothing: read from the baseline traces (every recorded step)",
                                   identical=False, first_divergence=fd, runs=0, note=pools.sentence()))
    order = ([DATA] if proven_order else _ORDER["input"]) if phase == "input" else _ORDER.get(str(phase), _LATER)
    tried: list[Experiment] = []
    fixed_plan: Plan | None = None
    for plan in order:
        exp = runner.pairs([plan])[0]
        evidence.append(exp)
        tried.append(exp)
        if exp.identical:
            fixed_plan = plan
            break
    fixed = next((e for e in tried if e.identical), None)
    if fixed_plan is SEED and phase not in ("init", "input"):
        # Seeding everything removed a divergence of the step itself (dropout, a noise layer): one more pair
        # with the RNGs seeded one by one and each draw observed, to name the line that draws.
        exp = runner.pairs([RNGS])[0]
        evidence.append(exp)
        if exp.identical:
            fixed, fixed_plan = exp, RNGS
    if fixed is None and not proven_order and len(order) > 1:
        exp = runner.pairs([ALL])[0]
        evidence.append(exp)
        if exp.identical:
            fixed = exp
    if fixed is not None and fixed_plan is not None and fixed_plan.interventions:
        fixed = bisect(runner, fixed, fixed_plan, evidence)
    words = frameworks.words(frameworks_of(baseline.traces[0])) if baseline.traces else \
        frameworks.adapter_class("torch").words
    findings = Findings(script, baseline, evidence, fixed, proven_order, words, registry(), pools)
    if fixed is not None and fixed.acted:
        hint = pools.detail if pools is not None else None
        findings.source = pick(fixed.acted, phase, hint)
        findings.edit = edit_for(findings.source, script, phase) if findings.source else None
    rule = next(r for r in RULES if r.holds(findings))
    c = rule.conclude(findings)
    d = Diagnosis(str(script), Verdict.NOT_REPRODUCIBLE, c.cause, c.detail, fd, c.fix, evidence, None,
                  c.confirmed, c.summary)
    if findings.source is not None:
        d.source = {"api": findings.source.shown_api, "site": findings.source.site, "kind": findings.source.kind,
                    "intervention": findings.source.name,
                    "edit": None if findings.edit is None else findings.edit.to_dict()}
    d.samples = None if pools is None else pools.to_dict()
    return d
