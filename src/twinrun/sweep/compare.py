"""``twinrun compare A.db [B.db]``: is A better than B beyond seed noise? (or: summarise one sweep)

Per metric: bootstrap intervals, P(A > B) with its interval, Welch and Mann-Whitney p-values, effect
sizes, seeds needed for 80% power, Holm correction across metrics, and a plain-words verdict.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .._errors import BadResultsError, UsageError
from ..options import MAX_RESAMPLES, positive_int
from ..seeding import seed_value
from .results import Results
from .summary import finite_values, variance_report

__all__ = ["ResultsComparison", "compare_sweeps"]


_LOWER_IS_BETTER = re.compile(r"loss|err|mse|mae|rmse|nll|perplexity|regret|time|latency", re.I)


def _direction(metric: str, higher_is_better: bool | None) -> tuple[bool, str]:
    if higher_is_better is not None:
        return higher_is_better, "given"
    lower = bool(_LOWER_IS_BETTER.search(metric))
    return not lower, "assumed from the name" if lower else "assumed (default)"


def _population(res: Results, metric: str, arm: str | None = None) -> tuple[list[float], dict]:
    runs = [r for r in res.runs() if arm is None or r.arm == arm]
    vals, excluded = finite_values(runs, metric)
    info = {"runs": len(runs), "failed": sum(r.status != "ok" for r in runs),
            "missing": sum(r.status == "ok" and metric not in r.metrics for r in runs), "excluded": excluded}
    return vals, info


def _too_few(res: Results, metric: str, n: int, info: dict) -> BadResultsError:
    why = []
    if info["failed"]:
        why.append(f"{info['failed']} failed")
    if info["excluded"]:
        why.append(f"{len(info['excluded'])} NaN/inf excluded")
    if info["missing"]:
        why.append(f"{info['missing']} without it")
    detail = f" (of {info['runs']} runs: {', '.join(why)})" if why else f" (of {info['runs']} runs)"
    return BadResultsError(f"{res.path} has {n} finished run(s) with a finite {metric!r}{detail}; need at least 2: "
                           f"sweep more seeds into it (twinrun sweep {Path(res.meta['script']).name} --seeds N "
                           f"-o {res.path})")


def _pick_metrics(files: list[Results], metric: str | None) -> list[str]:
    names = [set(f.metric_names()) for f in files]
    if metric is not None:
        for f, n in zip(files, names):
            if metric not in n:
                avail = ", ".join(sorted(n)) or "none (the script never called twinrun.log_metric)"
                raise BadResultsError(f"metric {metric!r} is not in {f.path}; available: {avail}")
        return [metric]
    common = sorted(set.intersection(*names))
    if not common:
        if not any(names):
            raise BadResultsError(f"{files[0].path} holds no metrics: the script must report them with "
                                  "twinrun.log_metric(name, value)")
        listing = "; ".join(f"{f.path}: {', '.join(sorted(n)) or 'none'}" for f, n in zip(files, names))
        raise BadResultsError(f"the files share no metric ({listing}); name one with --metric")
    return common


@dataclass
class ResultsComparison:
    """``compare A.db B.db`` (or ``compare A.db``): per metric, statistics and a verdict."""

    a: str
    b: str | None
    metrics: dict            # name -> comparison (or summary) dict, with "verdict" and "excluded"
    skipped: dict            # name -> why it could not be analysed
    significant: bool
    variance: dict | None = None
    alpha: float = 0.05

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _verdict(metric: str, c) -> str:
    pct = round(100 * c.a.confidence)
    d = c.diff_mean
    stats_ = (f"mean {_fmt(c.a.mean.value)} vs {_fmt(c.b.mean.value)}, difference {d.value:+.3g} "
              f"[{pct}% CI {_fmt(d.low)}, {_fmt(d.high)}], P(A better) = {c.prob_improvement.value:.2f} "
              f"[{c.prob_improvement.low:.2f}, {c.prob_improvement.high:.2f}], Welch p = {c.welch_p:.2g}")
    if c.better:
        win, lose = ("A", "B") if c.better == "A" else ("B", "A")
        return f"{win} beats {lose} on {metric}: {stats_}"
    need = (f"need about {c.seeds_needed} per arm" if c.seeds_needed
            else "the means are equal")
    return f"no difference in {metric} detectable with these seeds ({c.n_a} and {c.n_b} runs; {need}): {stats_}"


def compare_sweeps(a: str | os.PathLike, b: str | os.PathLike | None = None, *, metric: str | None = None,
                    higher_is_better: bool | None = None, alpha: float = 0.05, confidence: float = 0.95,
                    n_resamples: int = 10_000, seed: int = 0) -> ResultsComparison:
    """Compare the metrics of two results files (A minus B), or summarise one file.

    Several metrics compared at once are Holm-corrected; NaN/inf values are excluded and listed.
    """
    from ..stats import compare_samples, holm, summarize

    if not 0 < alpha < 1 or not 0 < confidence < 1:
        raise UsageError("--alpha and the confidence level must lie strictly between 0 and 1")
    # bounded: a trillion resamples would fill memory before failing
    n_resamples = positive_int("resamples", n_resamples, minimum=100, maximum=MAX_RESAMPLES,  # type: ignore[assignment]
                               allow_none=False)
    seed = seed_value(seed, "seed (--seed)")
    ra = Results.open(a)
    rb = Results.open(b) if b is not None else None
    try:
        files = [ra] + ([rb] if rb else [])
        if rb is not None:
            for f in files:
                if f.meta.get("design") == "variance":
                    raise BadResultsError(f"{f.path} is a variance-design sweep (three arms); compare it alone: "
                                          f"twinrun compare {f.path}")
        names = _pick_metrics(files, metric)
        out, skipped = {}, {}
        for name in names:
            hib, source = _direction(name, higher_is_better)
            try:
                if rb is None:  # one population (one per arm for a variance design)
                    arms = ra.arms() if ra.meta.get("design") == "variance" else [None]
                    for arm in arms:
                        label = name if arm is None else f"{name} ({arm} arm)"
                        va, ia = _population(ra, name, arm)
                        if len(va) < 2:
                            raise _too_few(ra, name, len(va), ia)
                        s = summarize(va, confidence=confidence, n_resamples=n_resamples, seed=seed).to_dict()
                        s["excluded"], s["failed"] = ia["excluded"], ia["failed"]
                        s["verdict"] = (f"{label}: n = {len(va)}, mean {_fmt(s['mean']['value'])} "
                                        f"[{_fmt(s['mean']['low'])}, {_fmt(s['mean']['high'])}], std "
                                        f"{_fmt(s['std']['value'])}, IQM {_fmt(s['iqm']['value'])} "
                                        f"[{_fmt(s['iqm']['low'])}, {_fmt(s['iqm']['high'])}]")
                        out[label] = s
                    continue
                va, ia = _population(ra, name)
                if len(va) < 2:
                    raise _too_few(ra, name, len(va), ia)
                vb, ib = _population(rb, name)
                if len(vb) < 2:
                    raise _too_few(rb, name, len(vb), ib)
            except BadResultsError as e:
                if metric is not None or len(names) == 1:
                    raise
                skipped[name] = str(e)
                continue
            out[name] = {"samples": (va, vb, hib), "direction": "higher is better" if hib else "lower is better",
                         "direction_source": source, "excluded_a": ia["excluded"], "excluded_b": ib["excluded"],
                         "failed_a": ia["failed"], "failed_b": ib["failed"]}
        if rb is not None and out:
            # NumPy's partition and bincount release the GIL: metrics in threads use every core.
            def one(item):
                va, vb, hib = item.pop("samples")
                item["comparison"] = compare_samples(va, vb, higher_is_better=hib, alpha=alpha,
                                                     confidence=confidence, n_resamples=n_resamples, seed=seed)

            with ThreadPoolExecutor(max_workers=min(len(out), os.cpu_count() or 1, 8)) as pool:
                list(pool.map(one, out.values()))
        if not out:
            raise BadResultsError("no metric has at least 2 finished runs with finite values: "
                                  + "; ".join(skipped.values()))
        significant = False
        if rb is not None:
            names_done = list(out)
            adjusted = holm([out[n]["comparison"].welch_p for n in names_done]) if len(names_done) > 1 else \
                [out[names_done[0]]["comparison"].welch_p]
            for n, p in zip(names_done, adjusted):
                c = out[n]["comparison"]
                c.decide(p)
                if len(names_done) > 1:
                    c.notes.append(f"Holm-adjusted over {len(names_done)} metrics: p = {p:.2g}")
                out[n]["verdict"] = _verdict(n, c)
                significant |= c.significant
                out[n]["comparison"] = c.to_dict()
        variance = None
        if rb is None and ra.meta.get("design") == "variance":
            variance = variance_report(ra.runs(), n_resamples=n_resamples, seed=seed)
        return ResultsComparison(str(ra.path), str(rb.path) if rb else None, out, skipped, significant,
                                 variance, alpha)
    finally:
        ra.close()
        if rb is not None:
            rb.close()
