"""``twinrun run --nproc N`` in the parent: launch the ranks through torch.distributed, show each rank's outcome."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..options import RunOptions
from ..runner import RunResult, default_trace_path
from ._output import emit_json, progress

__all__ = ["rank_lines", "run_ranks"]


def run_ranks(args: argparse.Namespace, options: RunOptions) -> int:
    """Run the script as ``options.nproc`` ranks; one line per rank; the worst rank's exit code."""
    from ..runner import launch

    assert options.nproc is not None
    output = options.output or default_trace_path()
    progress(args, f"twinrun run: {options.nproc} ranks of {Path(options.script).name} through torch.distributed "
                   "(the script's output follows when they end) ...")
    r = launch(options.replace(output=output))
    # The ranks' own output, after the fact (torchrun's is captured so that no rank's line is lost).
    (sys.stderr if args.json else sys.stdout).write(r.stdout)
    sys.stderr.write(r.stderr)
    if args.json:
        emit_json(r)
    else:
        for line in rank_lines(r):
            progress(args, f"twinrun run: {line}")
    for note in r.notes:
        print(f"twinrun run: note: {note}", file=sys.stderr)
    return r.exit_code


def rank_lines(r: RunResult) -> list[str]:
    """One line per rank: its trace, steps and how it ended."""
    out = []
    for rr in r.ranks:
        how = {"complete": "complete", "stopped": "stopped at --max-steps", "diverged": "parted from the reference",
               "failed": "failed", "missing": "no trace"}.get(rr.status, rr.status)
        line = f"rank {rr.rank}: {rr.trace_path} ({rr.steps} steps, {how})"
        if rr.error and rr.exit_code not in (0, 1):
            line += f": {rr.error}"
        out.append(line)
    return out
