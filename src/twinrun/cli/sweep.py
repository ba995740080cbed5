"""``twinrun sweep`` (many seeds) and ``twinrun compare`` (is the difference real?)."""

from __future__ import annotations

import math

from .._display import shown
from .._errors import EXIT_DIFFERENT, EXIT_OK, EXIT_SCRIPT_FAILED
from ._output import console, emit_json, progress
from ._script import add_script_argument
from .report import add_html_argument, check_html, write_page


def register(sub, common) -> None:
    p = sub.add_parser("sweep", parents=[common], help="run a script over many seeds and record its metrics",
                       description="Run SCRIPT once per seed in fresh processes, changing only twinrun's seed "
                                   "variables, and record what it reports with twinrun.log_metric. "
                                   "Arguments after -- go to the script.")
    p.add_argument("--seeds", type=int, default=10, help="runs per arm (default 10)")
    p.add_argument("--vary", default="all", metavar="all|init|data|STREAM",
                   help="what changes between runs: the root seed (all), or one named stream (default all)")
    p.add_argument("--design", choices=["single", "variance"], default="single",
                   help="variance: three arms (vary init, vary data, vary nothing) and each source's share")
    p.add_argument("--base-seed", type=int, default=0, help="the seed of everything not varied (default 0)")
    p.add_argument("-o", "--output", default=None, help="results file (default: SCRIPT_STEM.sweep.db)")
    p.add_argument("--workers", type=int, default=1, help="runs at once (default 1)")
    p.add_argument("--executor", default="local", help="local (default), dask-local, or dask://HOST:PORT")
    p.add_argument("--dask-timeout", type=float, default=10.0, help="seconds to reach a Dask scheduler")
    p.add_argument("--timeout", type=float, default=None, help="seconds before one run is killed")
    p.add_argument("--retry-failed", action="store_true", help="on resume, rerun the runs that failed")
    p.set_defaults(func=_sweep)
    add_script_argument(p)

    c = sub.add_parser("compare", parents=[common], help="is A better than B beyond seed noise?",
                       description="Compare two sweep results files (A minus B), or summarise one.")
    c.add_argument("a", metavar="A.db")
    c.add_argument("b", metavar="B.db", nargs="?")
    c.add_argument("--metric", help="the metric to compare (default: every metric both files have)")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--higher-is-better", dest="higher", action="store_const", const=True, default=None)
    g.add_argument("--lower-is-better", dest="higher", action="store_const", const=False)
    c.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    c.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    c.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    add_html_argument(c)
    c.set_defaults(func=_compare)


def _sweep(args) -> int:
    from pathlib import Path

    from ..sweep import SweepRun, sweep

    output = args.output or f"{Path(args.script).stem}.sweep.db"

    def on_progress(done: int, total: int, rec: SweepRun) -> None:
        values = ", ".join(f"{shown(k, 40)}={v:.4g}" for k, v in list(rec.metrics.items())[:3])
        last = (rec.error or "").strip().splitlines()[-1:] or [""]
        what = rec.status if rec.status == "ok" else f"FAILED ({shown(last[0], 80)})"
        seed = "" if rec.seed is None else f" seed {rec.seed}"
        progress(args, f"[{done}/{total}] {shown(rec.arm, 40)}{seed}: {what} in {rec.duration:.1f}s {values}".rstrip())

    result = sweep(args.script, args.script_args, seeds=args.seeds, vary=args.vary, design=args.design,
                   base_seed=args.base_seed, output=output, workers=args.workers, executor=args.executor,
                   timeout=args.timeout, retry_failed=args.retry_failed, dask_timeout=args.dask_timeout,
                   on_progress=on_progress)
    if args.json:
        emit_json(result)
    elif not args.quiet:
        _render_sweep(result)
    return EXIT_SCRIPT_FAILED if result.failed else EXIT_OK


def _render_sweep(r) -> None:
    from rich.table import Table

    con = console()
    con.print(f"{shown(r.path)}: {r.ok} ok, {r.failed} failed of {r.total} runs "
              f"({r.ran} run now, {r.skipped} already recorded) in {r.seconds:.1f}s", markup=False)
    t = Table("arm", "metric", "n", "mean", "std", "excluded (NaN/inf)")
    for arm, metrics in r.arms.items():
        for name, m in metrics.items():
            t.add_row(_cell(arm), _cell(name), str(m["n"]), f"{m['mean']:.4g}", f"{m['std']:.3g}",
                      str(len(m["excluded"])))
    con.print(t)
    for f in r.failures[:5]:
        last = (f["error"] or "").strip().splitlines()[-1:] or [""]
        con.print(f"failed: {shown(f['arm'], 40)} seed {f['seed']}: {shown(last[0])}", markup=False)
    if r.failed:
        con.print(f"{r.failed} run(s) failed; they are recorded with their error. Rerun with --retry-failed to "
                  "retry.", markup=False)
    if r.variance:
        _render_variance(con, r.variance)


def _render_variance(con, variance: dict) -> None:
    from rich.table import Table

    t = Table("metric", "source", "share of variance", "interval", "arm variance")
    for name, v in variance.items():
        if "error" in v:
            con.print(f"{shown(name)}: {shown(v['error'])}", markup=False)
            continue
        for src, e in v["shares"].items():
            share = "-" if math.isnan(e["value"]) else f"{100 * e['value']:.0f}%"
            iv = "-" if math.isnan(e["low"]) else f"[{100 * e['low']:.0f}%, {100 * e['high']:.0f}%]"
            label = {"none": "nondeterminism (nothing varied)"}.get(src, src)
            t.add_row(_cell(name), label, share, iv, f"{v['variances'][src]:.3g}")
        for note in v["notes"]:
            con.print(f"{shown(name)}: {shown(note)}", markup=False)
    con.print(t)


def _compare(args) -> int:
    from ..sweep import compare_sweeps

    check_html(args)
    progress(args, f"compare: bootstrapping {args.resamples} resamples ...")
    res = compare_sweeps(args.a, args.b, metric=args.metric, higher_is_better=args.higher, alpha=args.alpha,
                          n_resamples=args.resamples, seed=args.seed)
    write_page(args, "compare", res.to_dict(), a=args.a, b=args.b)
    if args.json:
        emit_json(res)
    elif not args.quiet:
        _render_compare(res)
    return EXIT_DIFFERENT if res.significant else EXIT_OK


def _iv(e: dict) -> str:
    return f"{e['value']:.4g} [{e['low']:.4g}, {e['high']:.4g}]"


def _render_compare(res) -> None:
    from rich.markup import escape
    from rich.table import Table

    con = console()
    if res.b is None:
        t = Table("metric", "n", "mean", "std", "median", "IQM")
        for name, s in res.metrics.items():
            t.add_row(_cell(name), str(s["n"]), _iv(s["mean"]), _iv(s["std"]), _iv(s["median"]), _iv(s["iqm"]))
        con.print(f"{shown(res.a)}: 95% bootstrap intervals", markup=False)
        con.print(t)
        for name, s in res.metrics.items():
            if s["excluded"]:
                con.print(f"{shown(name)}: excluded {len(s['excluded'])} run(s) with NaN/inf: "
                          + ", ".join(f"seed {x['seed']} ({x['value']})" for x in s["excluded"][:10]), markup=False)
        if res.variance:
            _render_variance(con, res.variance)
    else:
        con.print(f"A = {shown(res.a)}, B = {shown(res.b)}", markup=False)
        for name, m in res.metrics.items():
            c = m["comparison"]
            # a column header is markup text: the metric name escaped for the terminal and for rich
            t = Table(escape(f"{shown(name, 80)} ({m['direction']}, {m['direction_source']})"), "A", "B", "A - B")
            t.add_row("n", str(c["n_a"]), str(c["n_b"]), "")
            t.add_row("mean", _iv(c["a"]["mean"]), _iv(c["b"]["mean"]), _iv(c["diff_mean"]))
            t.add_row("IQM", _iv(c["a"]["iqm"]), _iv(c["b"]["iqm"]), _iv(c["diff_iqm"]))
            t.add_row("median", _iv(c["a"]["median"]), _iv(c["b"]["median"]), "")
            t.add_row("std", _iv(c["a"]["std"]), _iv(c["b"]["std"]), "")
            con.print(t)
            pi = c["prob_improvement"]
            con.print(f"P(A better than B) = {_iv(pi)}; Welch's t p = {c['welch_p']:.3g}, Mann-Whitney U p = "
                      f"{c['mannwhitney_p']:.3g}; Cohen's d = {c['cohens_d']:.3g}, Cliff's delta = "
                      f"{c['cliffs_delta']:.3g}; seeds per arm for 80% power: {c['seeds_needed'] or '-'}", markup=False)
            for side in ("a", "b"):
                if m[f"excluded_{side}"]:
                    con.print(f"excluded from {side.upper()}: {len(m[f'excluded_{side}'])} run(s) with NaN/inf "
                              + ", ".join(f"seed {x['seed']} ({x['value']})" for x in m[f"excluded_{side}"][:10]),
                              markup=False)
            for note in c["notes"]:
                con.print(f"note: {shown(note)}", markup=False)
            con.print(shown(m["verdict"], 1000), style="bold", markup=False)
    for name, why in res.skipped.items():
        con.print(f"{shown(name)}: skipped: {shown(why, 1000)}", markup=False)


def _cell(text: str):
    """A table cell of text from a script or a file: escaped and capped, never read as rich markup."""
    from rich.text import Text

    return Text(shown(text, 80))
