"""Self-contained HTML reports: one page per diff, check, doctor, compare and probe result.

A page is rendered from the same plain document the command prints with ``--json`` (its lead is
the terminal's sentence), plus what only the artefacts hold (the divergence map and ULP histogram
read from the two traces, runs and learning curves read from sweep results files). One file: inline
CSS, inline SVG, a few lines of inline JavaScript (table sorting, links, copy buttons), the data
embedded as ``<script type="application/json">``; no network, and the same inputs give the same
bytes.

>>> from twinrun.report import write_html                                    # doctest: +SKIP
>>> write_html("diff", comparison.to_dict(), "diff.html", a="a.trace", b="b.trace")   # doctest: +SKIP
>>> write_html("compare", result.to_dict(), "compare.html", a="a.db", b="b.db")     # doctest: +SKIP
>>> write_html("doctor", diagnosis.to_dict(), "doctor.html")                         # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._artifacts import Kind, check_target, write_text
from .._errors import UsageError
from .._format import to_jsonable

__all__ = ["KINDS", "check_output", "detect_kind", "render", "write_html"]

KINDS = ("diff", "check", "doctor", "compare", "probe")

# Which sources each kind takes (paths of the artefacts the document came from).
_SOURCES = {"diff": ("a", "b"), "check": ("a", "b"), "compare": ("a", "b"), "doctor": (), "probe": ()}
# Keys that identify each kind of --json document.
_KEYS = {
    "doctor": ("verdict", "cause", "evidence", "fix"),
    "probe": ("checks",),
    "compare": ("metrics", "skipped", "significant"),
    "check": ("sentence", "first_divergence", "runs", "comparisons"),
    "diff": ("sentence", "first_divergence", "growth", "identical"),
}


def detect_kind(document: Any) -> str:
    """Which command's ``--json`` output ``document`` is: diff, check, doctor, compare or probe."""
    if isinstance(document, dict):
        for kind in ("doctor", "probe", "compare", "check", "diff"):
            if all(k in document for k in _KEYS[kind]):
                return kind
    raise UsageError("the JSON document is not the --json output of twinrun diff, check, doctor, compare or probe; "
                     "save one with e.g. `twinrun doctor train.py --json > doctor.json`")


def render(kind: str, document: Any, **sources: str | os.PathLike | None) -> str:
    """The page for ``document`` (a ``--json`` document, or an object with ``to_dict()``) as text.

    ``sources`` name the artefacts behind it: ``a=``, ``b=`` two traces for diff and check, one or
    two sweep results files for compare. Without them the page shows what the document holds and
    says what is missing.
    """
    from .. import __version__
    from ._page import page

    if kind not in KINDS:
        raise UsageError(f"unknown report kind {kind!r}; use one of {', '.join(KINDS)}")
    doc = to_jsonable(document)   # the one JSON conversion: the document as --json prints it
    if not isinstance(doc, dict):
        raise UsageError(f"the {kind} document must be a JSON object, not {type(doc).__name__}")
    missing = [k for k in _KEYS[kind] if k not in doc and not (kind == "check" and k in ("runs", "comparisons"))]
    if missing:
        raise UsageError(f"this is not a twinrun {kind} --json document (it lacks {', '.join(missing)})")
    unknown = sorted(set(sources) - set(_SOURCES[kind]))
    if unknown:
        raise UsageError(f"a {kind} report takes {', '.join(_SOURCES[kind]) or 'no'} sources, not {', '.join(unknown)}")
    src = {k: os.fspath(v) for k, v in sources.items() if v is not None}
    if kind in ("diff", "check") and len(src) == 1:
        raise UsageError(f"a {kind} report needs both traces (a= and b=) or neither")
    if kind == "compare" and "b" in src and "a" not in src:
        raise UsageError("a compare report takes results file a= before b=")
    if kind in ("diff", "check"):
        from .diff import build
        lead, sections, data, inputs = build(kind, doc, src)
        title = "Do the two runs repeat?" if kind == "diff" else "Does the script repeat?"
    elif kind == "doctor":
        from .doctor import build as build_doctor
        lead, sections, data, inputs = build_doctor(doc)
        title = "Why the runs part, and the fix"
    elif kind == "compare":
        from .compare import build as build_compare
        lead, sections, data, inputs = build_compare(doc, src)
        title = "Is the difference real?" if doc.get("b") else "Seed-to-seed spread"
    else:
        from .probe import build as build_probe
        lead, sections, data, inputs = build_probe(doc)
        title = "Does inference give the same bits?"
    return page(kind=kind, title=title, inputs=inputs, lead=lead, sections=sections, document=doc, data=data,
                version=__version__)


def check_output(path: str | os.PathLike) -> Path:
    """``path`` if a report may be written there (call it before long work); else a one-line ``UsageError``.

    The rule of every file twinrun writes (``_artifacts.check_target``): nothing there, an empty file or
    a twinrun report; never a folder, a FIFO (reading it would block), a device, a link or another file."""
    return check_target(path, Kind.REPORT, option="the report path")


def write_html(kind: str, document: Any, path: str | os.PathLike, **sources: str | os.PathLike | None) -> Path:
    """Render ``document`` and write the page to ``path`` (atomically); returns the path.

    A file already at ``path`` is replaced only when it is a twinrun report; anything else is a
    ``UsageError`` (twinrun never overwrites a file that is not its own artefact).
    """
    p = check_output(path)
    text = render(kind, document, **sources)
    # a temporary name in the same folder, checked again and renamed over the target at the end
    return write_text(p, text, Kind.REPORT, option="the report path")
