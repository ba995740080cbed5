"""The child process of ``twinrun probe SCRIPT``: run the script unchanged, with the framework
adapter's probe-recording mode installed, and probe each recorded call.

    python -m twinrun.probes.child --out DIR --checks repeat,batch_invariance --max-calls 8 \\
        [--threads N] -- <twinrun run arguments: [--seed S] SCRIPT -- script args>

For every no-grad forward call of a root model (``ProbeCall``, up to ``--max-calls``), at the moment
it is made: the in-process checks named by ``--checks`` (``repeat``, ``batch_invariance``: the model
is called again on the same inputs, whole and in sub-batches), the call's inputs, outputs and
submodules' outputs written to ``DIR/call-<i>.npz`` (for the checks the parent compares across
processes: ``threads``, ``isa``), and a ``probe-call`` report to the parent (``twinrun._channel``).
At the end a ``probe-done`` report says how many calls were recorded, which were skipped, and which
frameworks the script used. The exit code is the script's (0, or 3 when it failed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import _channel, frameworks
from .._errors import EXIT_BAD_INPUT, TwinrunError
from ..frameworks.base import ProbeCall
from ..options import RunOptions
from ..runner import run_as_main
from .bits import LayerOutputs, Leaf, layer_leaves, leaves, save_outputs
from .checks import CheckResult, Runner, run_checks

__all__ = ["CallRunner", "main"]

IN_CHILD = ("repeat", "batch_invariance")


class CallRunner(Runner):
    """A recorded call, called again on rows of its own inputs."""

    def __init__(self, call: ProbeCall, framework: str) -> None:
        super().__init__(call.rows)
        self.call = call
        self.framework = framework
        self.training = call.training
        self.layers_note = None if call.layers else "the model has no submodules to name"

    def run(self, start: int, stop: int) -> tuple[list[Leaf], LayerOutputs]:
        out, layers = self.call.run(start, stop)
        return leaves(out), layer_leaves(layers)


class _Sink:
    """Receives the recorded calls (the ``ProbeSink`` protocol)."""

    def __init__(self, folder: Path, checks: Sequence[str], framework: str) -> None:
        self.folder = folder
        self.checks = [c for c in checks if c in IN_CHILD]
        self.framework = framework
        self.recorded = 0
        self.skipped: list[str] = []

    def record(self, call: ProbeCall) -> None:
        ref, ref_layers = leaves(call.outputs), layer_leaves(call.layers)
        results: dict[str, CheckResult]
        try:
            results = run_checks(CallRunner(call, self.framework), self.checks, ref, ref_layers)
        except Exception as exc:  # noqa: BLE001 - the user's model failed on a part of its batch: say so, go on
            note = f"the model could not be called again on parts of its batch ({type(exc).__name__}: {exc})"
            results = {c: CheckResult(stable=None, note=note[:500]) for c in self.checks}
        path = self.folder / f"call-{call.index}.npz"
        save_outputs(str(path), ref, ref_layers, leaves(call.inputs),
                     meta={"label": call.label, "state": call.state, "rows": str(call.rows)})
        self.recorded += 1
        _channel.report("probe-call", index=call.index, label=call.label, rows=call.rows, training=call.training,
                        threads=call.threads, layers=len(ref_layers),
                        checks={name: r.to_dict() for name, r in results.items()})

    def skip(self, what: str) -> None:
        self.skipped.append(what)


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, RunOptions]:
    argv = list(argv)
    if "--" not in argv:
        raise TwinrunError("usage: python -m twinrun.probes.child --out DIR --checks C --max-calls N "
                           "[--threads N] -- <twinrun run arguments>")
    cut = argv.index("--")
    p = argparse.ArgumentParser(prog="twinrun.probes.child")
    p.add_argument("--out", required=True)
    p.add_argument("--checks", default="")
    p.add_argument("--max-calls", type=int, required=True)
    p.add_argument("--threads", type=int, default=None)
    ns = p.parse_args(argv[:cut])
    return ns, RunOptions.from_argv(argv[cut + 1:])


def main(argv: Sequence[str] | None = None) -> int:
    try:
        ns, options = _parse(sys.argv[1:] if argv is None else argv)
    except TwinrunError as exc:
        print(f"twinrun probe: error: {exc}", file=sys.stderr)
        return exc.exit_code
    folder = Path(ns.out)
    folder.mkdir(parents=True, exist_ok=True)
    if options.seed is not None:
        from ..seeding import seed_everything

        seed_everything(options.seed)
    sink = _Sink(folder, [c for c in ns.checks.split(",") if c], "torch")
    removers: list[Callable[[], None]] = []

    def install(_module: object) -> None:
        remove = frameworks.get("torch").install_probe(sink, max_calls=ns.max_calls, threads=ns.threads)
        if remove is not None:
            removers.append(remove)

    frameworks.when_imported(frameworks.module_of("torch"), install)
    outcome = run_as_main(Path(options.script), options.args)
    for remove in removers:
        remove()
    _channel.report("probe-done", recorded=sink.recorded, skipped=sink.skipped[:20], skipped_count=len(sink.skipped),
                    frameworks=frameworks.used(), exit_code=outcome.exit_code, error=outcome.error)
    return outcome.exit_code


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.exit(code if code in (0, 3) else EXIT_BAD_INPUT)
