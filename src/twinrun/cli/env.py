"""``twinrun env``: print or save this machine's fingerprint; ``twinrun env diff A B``: rank their differences;
``twinrun env check --lock FILE`` and ``twinrun env freeze`` (``env_lock``): one environment on every machine."""

from __future__ import annotations

import json
from pathlib import Path

from .._errors import UsageError
from ._output import console, emit_json, progress, to_jsonable

__all__ = ["register"]


def register(sub, common) -> None:
    p = sub.add_parser("env", parents=[common], help="the environment fingerprint: every fact that can change numerics",
                       description="Print this machine's environment fingerprint, or rank the differences of two.")
    p.add_argument("-o", "--output", metavar="FILE", help="also write the fingerprint as JSON to FILE")
    p.add_argument("--frameworks", metavar="NAMES", default="",
                   help="comma-separated frameworks to import first so that their settings are included "
                        "(torch,tensorflow,jax, or 'installed'); default: none, which keeps it fast")
    p.set_defaults(func=_capture)
    envsub = p.add_subparsers(dest="env_command", metavar="SUBCOMMAND", parser_class=p.__class__)
    d = envsub.add_parser("diff", parents=[common], help="rank the differences of two fingerprints (exit 1 when "
                                                         "one can change numerics)")
    d.add_argument("a", metavar="A.json")
    d.add_argument("b", metavar="B.json")
    d.set_defaults(func=_diff)
    from .env_lock import register_env_subcommands

    register_env_subcommands(envsub, common)


# --- twinrun env -------------------------------------------------------------------------------------
def _capture(args) -> int:
    from .. import env
    from .. import frameworks as fw

    for name in _framework_names(args.frameworks):
        progress(args, f"importing {name} ...")
        fw.get(name)
    fp = env.capture()
    fp["lock"] = _lock_here()
    if args.output:
        from .._artifacts import Kind, write_text

        # only onto nothing, an empty file or a fingerprint; through a temporary name renamed into place
        path = write_text(args.output, json.dumps(to_jsonable(fp), indent=2) + "\n", Kind.ENV)
        progress(args, f"wrote {path}")
    if args.json:
        emit_json(fp)
    else:
        _show(fp)
    return 0


def _lock_here() -> dict | None:
    """The fingerprint of the lock of the project around the current folder (None: none found), so that
    ``env diff`` of two machines shows when they were installed from other locks."""
    from .. import lock

    found = lock.lock_fingerprint(script=Path.cwd())
    return None if found is None else found.to_dict()


def _framework_names(text: str) -> list[str]:
    from .. import frameworks as fw

    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["installed"]:
        import importlib.util

        return [n for n in fw.NAMES if n != "numpy" and importlib.util.find_spec(n) is not None]
    for n in names:
        if n not in fw.NAMES:
            raise UsageError(f"unknown framework {n!r} in --frameworks; use some of {', '.join(fw.NAMES)} "
                             "or 'installed'")
    return names


def _show(fp: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    from .._display import shown

    c = console()
    t = Table(title="twinrun env", show_header=False, box=None, pad_edge=False)

    def row(key: str, value: str) -> None:   # values come from the environment: escaped, never markup
        t.add_row(key, Text(shown(value, 1000)))

    t.add_column(style="bold")
    t.add_column()
    cpu = fp["cpu"]
    isa = _isa_summary(cpu.get("flags", []))
    row("host", f"{fp['host']['hostname']}  ({fp['os']['system']} {fp['os']['release']}, "
                f"{fp['os']['machine']}, {fp['libc'].get('name') or 'libc'} {fp['libc'].get('version') or '?'})")
    row("python", f"{fp['python']['version']} ({fp['python']['implementation']})")
    row("cpu", f"{cpu.get('model') or '?'}  ISA: {isa}  cores usable {cpu.get('usable')} of {cpu.get('count')}")
    if fp.get("gpu"):
        g = fp["gpu"]
        row("gpu", f"{', '.join(g.get('models') or []) or '?'}  (driver {g.get('nvidia_driver')})")
    pk = fp["packages"]
    main = [n for n in ("numpy", "scipy", "torch", "tensorflow", "tensorflow-cpu", "keras", "jax", "jaxlib") if n in pk]
    row("packages", ", ".join(f"{n} {pk[n]['version']}" for n in main) or "-")
    nv = [n for n in pk if n.startswith("nvidia-")]
    if nv:
        row("", f"{len(nv)} nvidia-* libraries")
    for key, lib in fp["threadpools"].items():
        owner, api, _ = key.split(":", 2)
        extra = ", ".join(filter(None, [lib.get("threading_layer"), lib.get("architecture")]))
        row("threads" if key == next(iter(fp["threadpools"])) else "",
            f"{owner}: {lib['internal_api']}{' ' + lib['version'] if lib.get('version') else ''} "
            f"({api}), {lib['num_threads']} threads{', ' + extra if extra else ''}")
    for name, info in fp["frameworks"].items():
        if name == "numpy":
            continue
        row(name, _framework_summary(name, info))
    ev = fp["env_vars"]
    row("env vars", ", ".join(f"{k}={v}" for k, v in ev.items()) or "none of the numerics-relevant ones")
    lk = fp.get("lock")
    row("lock", f"{lk['path']} ({lk['format']}, sha256 {lk['sha256'][:12]})" if lk else
        "none found here (uv.lock, pylock.toml, requirements*.txt); write one with: twinrun env freeze -o FILE")
    if fp.get("env_vars_withheld"):
        row("", f"{fp['env_vars_withheld']} allow-listed name(s) withheld (secret-looking, or Terraform's TF_*)")
    c.print(t)
    if not any(n in fp["frameworks"] for n in ("torch", "tensorflow", "jax")):
        c.print("[dim]no framework loaded: add --frameworks installed for their settings "
                "(PyTorch's CPU capability, TF32, deterministic flags)[/dim]")


def _isa_summary(flags: list[str]) -> str:
    top = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    wide = ("avx512", "amx")
    more = len([f for f in flags if f.startswith(wide)]) - len([f for f in top if f.startswith(wide)])
    return " ".join(top) + (f" (+{more} more AVX-512/AMX)" if more > 0 else "") if top else "-"


def _framework_summary(name: str, info: dict) -> str:
    if "error" in info:
        return f"error: {info['error']}"
    if name == "torch":
        return (f"{info['version']} capability {info['cpu_capability']}, {info['num_threads']} threads, "
                f"deterministic {info['deterministic_algorithms']}, "
                f"matmul precision {info['float32_matmul_precision']}")
    if name == "tensorflow":
        return (f"{info['version']} op determinism {info['op_determinism']}, TF32 {info['tensor_float_32']}, "
                f"intra-op threads {info['intra_op_threads'] or 'default'}")
    if name == "jax":
        return f"{info['version']} matmul precision {info['default_matmul_precision'] or 'default'}"
    return str(info.get("version", ""))


# --- twinrun env diff --------------------------------------------------------------------------------
def _load(path_text: str) -> dict:
    from .. import env
    from .._decode import decode_json, read_bounded

    path = Path(path_text)
    fix = f"write a fingerprint with: twinrun env -o {path}"
    # from anywhere: not a FIFO (it would block), bounded in size and JSON depth
    raw = read_bounded(path, what="a twinrun environment fingerprint", fix=fix, error=UsageError)
    obj = decode_json(raw, what="the fingerprint", path=path, error=UsageError, fix=fix)
    return env.check_fingerprint(obj, str(path))


def _diff(args) -> int:
    from .. import env

    a, b = _load(args.a), _load(args.b)
    d = env.diff(a, b)
    if args.json:
        emit_json({"a": args.a, "b": args.b, **d.to_dict()})
    else:
        _show_diff(d, args.a, args.b)
    return 1 if d.numerics else 0


def _short(v) -> str:
    from .._display import shown

    s = shown(json.dumps(v) if not isinstance(v, str) else v, 600)   # from a file: escaped, then cut
    return s if len(s) <= 60 else s[:57] + "..."


def _show_diff(d, a_name: str, b_name: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    from .._display import shown

    a_name, b_name = shown(a_name), shown(b_name)
    c = console()
    if not d.differences:
        c.print(f"[green]no differences[/green] between {escape(a_name)} and {escape(b_name)}")
        return
    counts = d.to_dict()["counts"]
    lead = ("[red bold]can change numerics[/red bold]" if d.numerics
            else "[green]nothing that changes numerics[/green]")
    c.print(f"{escape(a_name)} vs {escape(b_name)}: {lead}  "
            f"({counts['numerics']} numerics, {counts['possible']} possible, {counts['none']} none)")
    t = Table(show_lines=False)
    for col in ("rank", "key", "A", "B", "why"):
        t.add_column(col, overflow="fold")
    style = {"numerics": "red", "possible": "yellow", "none": "dim"}
    for x in d.differences:
        if x.key == "cpu.flags" and isinstance(x.a, list) and isinstance(x.b, list):
            va, vb = _short(sorted(set(x.a) - set(x.b))) + " only", _short(sorted(set(x.b) - set(x.a))) + " only"
        else:
            va, vb = _short(x.a), _short(x.b)
        t.add_row(f"[{style[x.rank]}]{x.rank}[/]", escape(shown(x.key, 80)), escape(va), escape(vb), escape(x.why))
    c.print(t)
