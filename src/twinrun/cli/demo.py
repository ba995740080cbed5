"""``twinrun demo``: seeded runs repeat bitwise; 1 vs 2 threads and unseeded runs part, and where."""

from __future__ import annotations

from ._output import console, emit_json, progress


def register(sub, common) -> None:
    p = sub.add_parser("demo", parents=[common], help="show twinrun on a small digits CNN (about a minute)")
    p.add_argument("--steps", type=int, default=20, help="training steps per run (default 20)")
    p.add_argument("--keep", metavar="DIR", help="keep the demo's traces in DIR")
    p.set_defaults(func=run)


def run(args) -> int:
    from .._errors import UsageError
    from ..demo import run_demo

    if args.steps < 1:
        raise UsageError(f"--steps must be a positive integer, got {args.steps}")
    result = run_demo(steps=args.steps, workdir=args.keep, progress=lambda m: progress(args, m))
    if args.json:
        emit_json(result)
        return 0 if result.ok else 1
    out = console()
    out.rule("[bold]twinrun demo[/bold]: a small CNN on scikit-learn's digits images")
    s = result.seeds
    out.print(f"Seeding: root seed {s.get('root')} ({s.get('source')}); streams derive from it with "
              "NumPy's SeedSequence.")
    changed = [x for x in result.determinism.get("settings", []) if x.get("before") != x.get("after")]
    out.print(f"twinrun.deterministic(threads=1) changed {len(changed)} setting(s):")
    for x in changed:
        out.print(f"  {x['name']}: {x['before']!r} -> {x['after']!r}", markup=False)
    env = result.environment
    out.print("Environment: " + ", ".join(f"{k} {v}" for k, v in env.items() if v is not None))
    for sc in result.scenarios:
        mark = "[green]as expected[/green]" if sc.as_expected else "[red]NOT as expected[/red]"
        verdict = "identical, bit for bit" if sc.identical else "they part"
        out.print(f"\n[bold]{sc.title}[/bold]: {verdict} ({mark})")
        out.print(f"  {sc.sentence}", markup=False)
    d = result.diagnosis
    if d:
        out.print(f"\n[bold]Why do the unseeded runs part?[/bold] twinrun doctor: cause [bold]{d['cause']}[/bold]"
                  f" ({'confirmed by intervention' if d.get('confirmed') else 'not confirmed'}, "
                  f"{d.get('reruns')} reruns, {d.get('seconds')} s)")
        out.print(f"  Fix: {d['fix']}", markup=False)
    out.print("\nNext: [bold]twinrun check train.py[/bold] on your own script, "
              "[bold]twinrun doctor train.py[/bold] to find why runs part.")
    return 0 if result.ok else 1
