"""``twinrun report INPUT... -o PATH``: one self-contained HTML page from artefacts already on disk.

INPUT is two traces (the diff page), one or two sweep results files (the compare page), or the
``--json`` output of diff, check, doctor, compare or probe, optionally followed by the traces or
results files it came from (they add the divergence map, the ULP histogram, the runs and curves).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .._errors import EXIT_OK, UsageError
from ._output import emit_json, progress

__all__ = ["add_html_argument", "check_html", "register", "write_page"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "report", parents=[common], help="write a self-contained HTML page from traces, results or a --json output",
        description="Write one HTML page (inline CSS and SVG, no network; the same inputs give the same bytes) "
                    "from: two traces (where the runs part); one or two sweep results files (is the difference "
                    "real?); or a --json output of diff, check, doctor, compare or probe, optionally followed by "
                    "the traces or results files it came from. Exit 0 written, 2 bad input.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="A.trace B.trace | A.db [B.db] | OUTPUT.json [the traces or results files behind it]")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="the HTML file to write (e.g. report.html)")
    g = p.add_argument_group("for results files (as twinrun compare)")
    g.add_argument("--metric", default=None, help="the metric to compare (default: every metric both files have)")
    d = g.add_mutually_exclusive_group()
    d.add_argument("--higher-is-better", dest="higher", action="store_const", const=True, default=None)
    d.add_argument("--lower-is-better", dest="higher", action="store_const", const=False)
    g.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    g.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    g.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.set_defaults(func=cmd_report)


# --- --html PATH on diff, check, doctor and compare ------------------------------------------------
def add_html_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--html", metavar="PATH", default=None,
                   help="also write a self-contained HTML report to PATH (one file, no network; see docs/reports.md)")


def check_html(args: argparse.Namespace) -> None:
    """Refuse a bad ``--html`` path (a folder, a missing folder, a file that is not a twinrun report)
    in one line before the command's long work, not after it."""
    if args.html is not None:
        from ..report import check_output

        check_output(args.html)


def write_page(args: argparse.Namespace, kind: str, document: Any, **sources: str | None) -> None:
    """Write the ``--html`` page of ``document`` (the command's ``--json`` document) and say so on
    stderr; stdout is left to the command (with ``--json``, its one JSON document)."""
    if args.html is None:
        return
    from ..report import write_html

    path = write_html(kind, document, args.html, **sources)
    progress(args, f"twinrun {args.command}: wrote {path}")


def _load_json(path: str) -> Any:
    """A --json document from a file that may come from anywhere: a regular file (a FIFO would block),
    at most 64 MiB, UTF-8 JSON at most 64 levels deep (issue 12's bounded reading)."""
    from .._decode import DEFAULT_MAX_JSON_DEPTH, json_depth, read_bounded

    fix = "give the --json output of a twinrun command"
    raw = read_bounded(path, what="a twinrun --json document", fix=fix, error=UsageError, max_bytes=64 * 2**20)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text; {fix}") from None
    if json_depth(text) > DEFAULT_MAX_JSON_DEPTH:   # deeper ends in RecursionError, in json or in the page
        raise UsageError(f"{path} is JSON nested more than {DEFAULT_MAX_JSON_DEPTH} deep; {fix}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); {fix}") from None


def cmd_report(args: argparse.Namespace) -> int:
    from ..comparison import diff
    from ..report import check_output, detect_kind, write_html
    from ..report.data import kind_of
    from ..sweep import compare_sweeps

    check_output(args.output)  # before any long work
    kinds = [(path, kind_of(path)) for path in args.inputs]
    jsons = [p for p, k in kinds if k == "json"]
    traces = [p for p, k in kinds if k == "trace"]
    results = [p for p, k in kinds if k == "results"]
    usage = ("give two traces, one or two results files, or one --json output (followed by the traces or "
             "results files it came from)")
    if len(jsons) > 1:
        raise UsageError(f"{len(jsons)} JSON documents given ({', '.join(jsons)}); one page is made from one; {usage}")
    if traces and results:
        raise UsageError(f"traces ({', '.join(traces)}) and results files ({', '.join(results)}) cannot go on one "
                         f"page; {usage}")
    if args.resamples < 100:
        raise UsageError(f"--resamples must be at least 100, got {args.resamples}")
    sources: dict[str, str] = {}
    if jsons:
        doc = _load_json(jsons[0])
        kind = detect_kind(doc)
        if kind in ("diff", "check"):
            if results or len(traces) not in (0, 2):
                raise UsageError(f"a {kind} document takes the two traces it compared (or none), "
                                 f"not {len(traces)} trace(s) and {len(results)} results file(s)")
        elif kind == "compare":
            if traces or len(results) > 2:
                raise UsageError("a compare document takes the one or two results files it compared (or none)")
            if results and len(results) != (2 if doc.get("b") else 1):
                raise UsageError(f"this compare document is of {2 if doc.get('b') else 1} results file(s); "
                                 f"give that many, not {len(results)}")
        elif traces or results:
            raise UsageError(f"a {kind} document is rendered on its own; drop {', '.join(traces + results)}")
        paths = traces or results
        sources = dict(zip("ab", paths))
    elif traces:
        if len(traces) != 2:
            raise UsageError(f"{len(traces)} trace(s) given; a report compares exactly two: "
                             "twinrun report A.trace B.trace -o report.html")
        progress(args, f"twinrun report: comparing {traces[0]} and {traces[1]} ...")
        c = diff(traces[0], traces[1])
        c.check_same_model()  # two traces of different models: one line, exit 2, as twinrun diff
        kind, doc, sources = "diff", c.to_dict(), {"a": traces[0], "b": traces[1]}
    else:
        if len(results) > 2:
            raise UsageError(f"{len(results)} results files given; a report compares one or two")
        progress(args, f"twinrun report: bootstrapping {args.resamples} resamples ...")
        res = compare_sweeps(results[0], results[1] if len(results) > 1 else None, metric=args.metric,
                               higher_is_better=args.higher, alpha=args.alpha, n_resamples=args.resamples,
                               seed=args.seed)
        kind, doc, sources = "compare", res.to_dict(), dict(zip("ab", results))
    path = write_html(kind, doc, args.output, **sources)
    size = Path(path).stat().st_size
    if args.json:
        emit_json({"output": str(path), "kind": kind, "bytes": size, "inputs": list(args.inputs)})
    else:
        progress(args, f"twinrun report: wrote {path} ({kind} page, {size:,} bytes)")
    return EXIT_OK
