"""Run ``twinrun doctor`` on the corpus and score its answers against expected.toml.

    PYTHONPATH=src python tests/corpus/diagnose.py                       # every case
    PYTHONPATH=src python tests/corpus/diagnose.py torch_vocab_set        # one case
    PYTHONPATH=src python tests/corpus/diagnose.py --json doctor.jsonl    # one JSON line per case
    python tests/corpus/diagnose.py --table doctor.jsonl                  # the confusion matrix of a run

Each case is one ``twinrun doctor SCRIPT --max-steps N --no-portability --json`` (PYTHONHASHSEED
unset, as a user's shell has it). A case is right when doctor's cause and detail equal the table's
and, for a case with a call site, doctor names that line (``file:line`` of the ``# corpus: call-site``
comment) and an API whose name the table's ``api`` mentions. A kernel case is right when the census's
detail starts with the table's ``op`` (the op and its pass) and its call site is the marked line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MARK = "# corpus: call-site"


def load_cases() -> dict[str, dict[str, Any]]:
    with open(HERE / "expected.toml", "rb") as f:
        return tomllib.load(f)


def call_site_line(path: Path) -> int | None:
    """The line of the ``# corpus: call-site`` comment (None in reproducible scripts)."""
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if MARK in line:
            return i
    return None


def doctor(script: Path, max_steps: int, timeout: float = 1200) -> dict[str, Any]:
    """One ``twinrun doctor`` of ``script``: its JSON document (or the error) and how long it took."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "twinrun", "doctor", str(script), "--max-steps", str(max_steps),
                           "--no-portability", "--json", "--quiet"], check=False, capture_output=True, text=True,
                          env=env, timeout=timeout)
    seconds = round(time.perf_counter() - started, 1)
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"error": (proc.stderr or proc.stdout)[-1500:], "returncode": proc.returncode, "seconds": seconds}
    return {**doc, "returncode": proc.returncode, "wall_seconds": seconds}


def _api_name(api: str) -> str:
    """``random.shuffle(...)`` -> ``shuffle``; ``torch.Generator().seed()`` -> ``seed``."""
    core = re.sub(r"\(.*?\)", "", api.split(" ")[0]).rstrip(".")
    return core.rsplit(".", 1)[-1] if core else ""


def score(case: dict[str, Any], doc: dict[str, Any], line: int | None) -> dict[str, Any]:
    """What doctor got right: cause, detail, call site (file:line) and API."""
    if "error" in doc:
        return {"cause_ok": False, "detail_ok": False, "site_ok": False, "api_ok": False, "ok": False,
                "why": f"no JSON (exit {doc['returncode']}): {doc['error'].strip().splitlines()[-1:]}"}
    got_cause, got_detail = doc.get("cause"), doc.get("detail")
    want_detail = case.get("detail")
    cause_ok = got_cause == case["cause"]
    # A kernel's detail is the census's: the op and its pass first (`index_put_ (accumulate=True), forward`).
    kernel = case["cause"] == "nondeterministic-kernel"
    detail_ok = cause_ok and (str(got_detail or "").startswith(case.get("op", "")) if kernel else
                              got_detail == want_detail or (want_detail is None and got_detail in (None, "clock")))
    source = doc.get("source") or {}
    site, api = str(source.get("site") or ""), str(source.get("api") or "")
    if line is None:
        site_ok = api_ok = True
    elif kernel:
        site_ok = site.endswith(f"{case['file']}:{line}")
        api_ok = site_ok
    else:
        site_ok = site.endswith(f"{case['file']}:{line}")
        name = _api_name(api)
        want = case.get("api", "").lower()
        # an initialiser drawing from a global RNG answers a table that says "default init"
        api_ok = bool(name) and (name.lower() in want or (source.get("kind") == "init" and "init" in want))
    ok = cause_ok and detail_ok and site_ok and api_ok
    why = [] if ok else [f"got {got_cause}/{got_detail} at {site or '-'} ({api or '-'})"]
    return {"cause_ok": cause_ok, "detail_ok": detail_ok, "site_ok": site_ok, "api_ok": api_ok, "ok": ok,
            "why": "; ".join(why)}


def table(rows: list[dict[str, Any]]) -> str:
    """The confusion matrix (expected cause/detail x doctor's cause/detail) as a Markdown table."""
    def label(cause: Any, detail: Any) -> str:
        return f"{cause}/{detail}" if detail in ("order", "content") else str(cause)

    counts = Counter((label(r["want_cause"], r["want_detail"]), label(r["cause"], r["detail"])) for r in rows)
    wanted = sorted({w for w, _ in counts})
    got = sorted({g for _, g in counts})
    out = ["| expected \\ doctor | " + " | ".join(got) + " |", "| --- |" + " --- |" * len(got)]
    for w in wanted:
        out.append(f"| {w} | " + " | ".join(str(counts.get((w, g), "")) for g in got) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("names", nargs="*", help="case names (default: all)")
    parser.add_argument("--json", type=Path, help="append one JSON line per case to this file")
    parser.add_argument("--table", type=Path, help="only print the confusion matrix of a --json file")
    args = parser.parse_args()
    if args.table:   # the matrix of a stored run, each row scored again with this file's scorer
        rows = [json.loads(ln) for ln in args.table.read_text().splitlines() if ln.strip()]
        cases = load_cases()
        for r in rows:
            case = cases[r["case"]]
            doc = {"cause": r["cause"], "detail": r["detail"], "source": r["source"]}
            r.update(score(case, doc, call_site_line(HERE / case["file"])))
            print(f"{r['case']:40s} {'ok ' if r['ok'] else 'BAD'} {r['cause']}/{r['detail']}  {r['seconds']}s  "
                  f"{r['why']}")
        print(table(rows))
        print(f"{sum(not r['ok'] for r in rows)} of {len(rows)} case(s) wrong")
        return
    cases = load_cases()
    names = args.names or list(cases)
    unknown = [n for n in names if n not in cases]
    if unknown:
        parser.error(f"no such case in expected.toml: {', '.join(unknown)}")
    rows, bad = [], 0
    for name in names:
        case = cases[name]
        path = HERE / case["file"]
        doc = doctor(path, case["max_steps"])
        s = score(case, doc, call_site_line(path))
        row = {"case": name, "want_cause": case["cause"], "want_detail": case.get("detail"),
               "cause": doc.get("cause", "error"), "detail": doc.get("detail"), "source": doc.get("source"),
               "fix": doc.get("fix"), "summary": doc.get("summary"), "seconds": doc.get("wall_seconds"),
               "reruns": doc.get("reruns"), **s}
        rows.append(row)
        bad += not s["ok"]
        print(f"{name:40s} {'ok ' if s['ok'] else 'BAD'} {row['cause']}/{row['detail']}  {row['seconds']}s  {s['why']}",
              flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    print(table(rows))
    print(f"{bad} of {len(rows)} case(s) wrong")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
