"""The call site that matters: which draw (or collection, or set) made two runs part, and its fix.

The interventions report every unseeded draw they observed (``Act``: the API, ``file:line`` of the
program, whether the program called it directly, and the script's top-level statement that led to it).
When an experiment that seeds several things removes the divergence, :func:`bisect` reruns with each
intervention alone until one does; :func:`pick` then chooses among its acts the one that speaks for the
phase where the runs part. :func:`edit_for` writes the fix for that API at that line: the exact new line,
and the one line to add at the top of the script when the fix needs a seeded generator.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .experiments import ExperimentRunner, Plan
from .model import Act, Experiment

__all__ = ["Edit", "bisect", "edit_for", "hash_sites", "import_line", "pick", "unordered_sites"]

# Singles tried in this order: the specific ones (a loader's order, a dataset shuffle) before the globals.
_BISECT_ORDER = ("seed-loaders", "seed-tf-data", "seed-random", "seed-numpy", "seed-tf-random", "seed-torch",
                 "fixed-clock")


@dataclass(frozen=True)
class Edit:
    """A fix as an edit of the user's file: line ``line`` becomes ``new`` (or ``insert`` goes above it),
    and ``prelude`` is added once after the script's imports."""

    site: str
    old: str
    new: str | None = None
    insert: str | None = None
    prelude: str | None = None

    def words(self) -> str:
        parts = []
        if self.prelude:
            parts.append(f"add `{self.prelude}` after the imports")
        if self.insert:
            parts.append(f"insert `{self.insert}` above {self.site} (`{self.old.strip()}`)")
        if self.new is not None:
            parts.append(f"change {self.site} from `{self.old.strip()}` to `{self.new.strip()}`")
        return "; then ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "old": self.old, "new": self.new, "insert": self.insert, "prelude": self.prelude}


def import_line(site: str) -> bool:
    """The act happened while the program imported a library (a random id drawn at import)."""
    path_s, _, num = site.rpartition(":")
    try:
        line = Path(path_s).read_text(encoding="utf-8", errors="replace").splitlines()[int(num) - 1]
    except (OSError, ValueError, IndexError):
        return False
    return line.lstrip().startswith(("import ", "from "))


def _weight(acts: list[Act]) -> int:
    """How likely an intervention's acts are the source: the program's own draws, then seeds and implicit
    draws of initialisation, then a library's draws; a draw made while importing comes last."""
    best = 4
    for a in acts:
        w = 3 if import_line(a.site) else 0 if a.direct else 1 if a.kind in ("seed", "init", "late-seed") else 2
        best = min(best, w)
    return best


def bisect(runner: ExperimentRunner, fixed: Experiment, plan: Plan, evidence: list[Experiment]) -> Experiment:
    """``fixed`` removed the divergence with several interventions acting: rerun with each alone (most
    specific first) and return the first that still removes it (else ``fixed``)."""
    acted = {a.name for a in fixed.acted}
    weight = {n: _weight([a for a in fixed.acted if a.name == n]) for n in acted}
    # An intervention whose only acts are a library's draws while it was imported (a random id) is not
    # a candidate: bisecting it would cost two runs for a draw that decides nothing the script computes.
    singles = sorted((n for n in _BISECT_ORDER if n in acted and n in plan.interventions and weight[n] < 3),
                     key=lambda n: (weight[n], _BISECT_ORDER.index(n)))
    if len(singles) < 2:
        return fixed
    for name in singles:
        exp = runner.pairs([Plan(f"only {name}", f"only {name} (one source at a time)", interventions=(name,))])[0]
        evidence.append(exp)
        if exp.identical:
            return exp
    return fixed


def _rank(a: Act, phase: str | None, detail: str | None) -> tuple[int, ...]:
    if a.kind == "late-seed":   # not a draw: where the program seeded, too late (see ``pick``)
        return (9, 9)
    if a.kind == "init" and phase in ("forward", "loss", "grad", "param"):
        return (8, 9)   # the parameters were identical up to the step: their initial draws decided nothing
    seed_like = a.kind in ("seed",) or a.name == "fixed-clock"
    if phase == "init":
        first = 0 if seed_like else 1 if a.direct and a.kind != "init" else 2 if a.kind == "init" else 3
    else:
        want = detail or ""
        first = 0 if (a.kind == want or (want == "order" and a.name == "seed-loaders")) and a.direct else \
            1 if a.direct else 2 if a.kind == want else 3
    return (first, 0 if a.direct else 1)


def pick(acts: list[Act], phase: str | None, detail: str | None = None) -> Act | None:
    """The act that speaks for a divergence in ``phase`` (``detail``: what the trace showed, if anything)."""
    usable = [a for a in acts if a.site and not a.site.startswith("<")]
    usable = [a for a in usable if not import_line(a.site)] or usable
    if not usable:
        return None
    best = min(usable, key=lambda a: _rank(a, phase, detail))
    if phase == "init" and (best.kind == "init" or not best.direct) and best.outer:
        # A library drew while the script built its model: the line to fix is the script's statement
        # that built it (a seed must come before it), not a line inside the model's class.
        best = replace(best, site=best.outer)
        late = next((a for a in acts if a.kind == "late-seed"), None)
        if late is not None:   # the program does seed, after the model is built
            best = replace(best, api=late.api, what=f"called at {late.site}, after the model is built at "
                                                      f"{best.site}", kind="init")
    return best


def _line(site: str, root: Path) -> tuple[Path, int, str] | None:
    path_s, _, num = site.rpartition(":")
    if not num.isdigit():
        return None
    for p in (Path(path_s), root.parent / Path(path_s).name):
        try:
            lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        n = int(num)
        if 1 <= n <= len(lines):
            return p, n, lines[n - 1]
    return None


def _statement_start(path: Path, line: int) -> int | None:
    """The first line of the innermost statement that holds ``line`` (a call inside a list that spans
    lines belongs to the statement that starts above it)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return None
    best: ast.stmt | None = None
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt) or not node.lineno <= line <= (node.end_lineno or node.lineno):
            continue
        if best is None or (node.end_lineno or 0) - node.lineno <= (best.end_lineno or 0) - best.lineno:
            best = node
    return best.lineno if best is not None else None


_NP_CALL = re.compile(r"\b[\w.]*random\.(\w+)\(")
_PY_CALL = re.compile(r"\brandom\.(\w+)\(")


def edit_for(act: Act, script: Path, phase: str | None) -> Edit | None:
    """The exact edit of the call site that fixes ``act``'s draw, where the line reads as expected."""
    where = act.site
    found = _line(where, script)
    if found is None:
        return None
    _p, _n, old = found
    code = old.split("#", 1)[0].rstrip()
    api = act.api
    if phase == "init" and (act.kind == "init" or not act.direct):
        # seed the RNG the library drew from, just before the statement that builds the model
        seed = ("torch.manual_seed(0)" if api.startswith("torch") else "import numpy; numpy.random.seed(0)"
                if api.startswith("numpy") else "import random; random.seed(0)" if api.startswith("random.") else
                None)
        start = _statement_start(_p, _n)
        if seed is None or start is None:
            return None
        line = _p.read_text(encoding="utf-8", errors="replace").splitlines()[start - 1]
        indent = line[:len(line) - len(line.lstrip())]
        return Edit(f"{where.rpartition(':')[0]}:{start}", line, insert=f"{indent}{seed}")
    if api == "torch.Generator.seed":
        new = re.sub(r"([\w.\]\[]+)\.seed\(\)", r"\1.manual_seed(0)", code)
        return Edit(where, old, new) if new != code else None
    if api in ("time.time_ns()", "time.time()", "time.time_ns", "time.time"):
        new = re.sub(r"\btime\.time(_ns)?\(\)", "0", code)
        return Edit(where, old, new) if new != code else None
    if api.startswith("numpy.random.") and act.direct:
        fn = api.rsplit(".", 1)[-1].rstrip("()")
        new = re.sub(rf"\b[\w.]*random\.{fn}\(", f"np_rng.{fn}(", code, count=1)
        if new != code and fn not in ("default_rng", "RandomState", "SeedSequence", "seed"):
            return Edit(where, old, new, prelude="import numpy; np_rng = numpy.random.RandomState(0)")
    if api.startswith("numpy.random.") and not act.direct and "(" in code and code.rstrip().endswith(")"):
        # a library drew from NumPy's global RNG on the program's behalf (scikit-learn's random_state=None)
        return Edit(where, old, code.rstrip()[:-1] + ", random_state=0)")
    if api == "numpy.random.default_rng()":
        new = code.replace("default_rng()", "default_rng(0)")
        return Edit(where, old, new) if new != code else None
    if api.startswith("random.") and act.direct:
        fn = api.split(".", 1)[1].rstrip("()")
        new = re.sub(rf"\brandom\.{fn}\(", f"py_rng.{fn}(", code, count=1)
        if new != code:
            return Edit(where, old, new, prelude="import random; py_rng = random.Random(0)")
    if act.name == "seed-tf-random" and api.startswith("tf.") and act.direct:
        # a TensorFlow op without its own seed (no global seed either): give it one
        seeded = _with_argument(code, api.rsplit(".", 1)[-1], "seed=0")
        return Edit(where, old, seeded) if seeded else None
    if act.name == "seed-torch" and act.direct and api.rsplit(".", 1)[-1] in _TORCH_GENERATOR_DRAWS:
        # a draw from torch's global RNG: from a generator of the program's own instead, made once (so that a
        # shuffle in an epoch loop still gives each epoch its own order)
        drawn = _with_argument(code, api.rsplit(".", 1)[-1], "generator=torch_rng")
        return Edit(where, old, drawn, prelude="import torch; torch_rng = torch.Generator().manual_seed(0)") \
            if drawn else None
    if act.name == "seed-loaders" and "DataLoader(" in code and code.endswith(")"):
        return Edit(where, old, code[:-1] + ", generator=torch.Generator().manual_seed(0))")
    return None


# torch's draws that take a ``generator=``.
_TORCH_GENERATOR_DRAWS = ("randperm", "rand", "randn", "randint", "normal", "bernoulli", "multinomial")


def _with_argument(code: str, fn: str, argument: str) -> str | None:
    """``code`` with ``argument`` added to the first call of ``fn`` on the line (its closing parenthesis
    found by counting, so ``torch.randperm(len(x)).tolist()`` works), or None when the call does not
    close on this line."""
    m = re.search(rf"\b{re.escape(fn)}\(", code)
    if m is None:
        return None
    depth = 0
    for i in range(m.end() - 1, len(code)):
        depth += {"(": 1, ")": -1}.get(code[i], 0)
        if depth == 0:
            inside = code[m.end():i].strip()
            return code[:i] + (", " if inside else "") + argument + code[i:]
    return None


_UNORDERED = re.compile(r"\b(as_completed|imap_unordered)\s*\(")


def _shown(path: Path) -> str:
    """The path as the interventions show sites: relative to the working directory when below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def unordered_sites(path: Path) -> list[dict[str, str]]:
    """Calls in the script that hand results over in completion order (``as_completed``,
    ``imap_unordered``) or take them from a queue (``.get()`` of a ``queue.Queue``)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    has_queue = any(re.search(r"\bQueue\(", ln.split("#", 1)[0]) for ln in lines)
    out = []
    for i, line in enumerate(lines, 1):
        code = line.split("#", 1)[0]
        m = _UNORDERED.search(code)
        if m:
            out.append({"call": m.group(1), "site": f"{_shown(path)}:{i}", "old": line})
        elif has_queue and re.search(r"\.get\(\s*\)", code):
            out.append({"call": "queue.Queue.get", "site": f"{_shown(path)}:{i}", "old": line})
    return out


def completion_edit(call: dict[str, str]) -> Edit | None:
    code = call["old"].split("#", 1)[0].rstrip()
    if call["call"] == "imap_unordered":
        return Edit(call["site"], call["old"], code.replace("imap_unordered(", "imap(", 1))
    if call["call"] == "as_completed":
        new = re.sub(r"\bas_completed\(\s*([\w.]+)\s*\)", r"\1", code, count=1)
        return Edit(call["site"], call["old"], new) if new != code else None
    return None


_SETISH = (ast.Set, ast.SetComp)


def _is_set(node: ast.AST) -> bool:
    if isinstance(node, _SETISH):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("set", "frozenset"):
        return True
    return isinstance(node, ast.BinOp) and (_is_set(node.left) or _is_set(node.right))


def hash_sites(path: Path) -> list[tuple[str, str, Edit]]:
    """Where the script iterates over a set (whose order follows the hash seed for strings): the API in
    words, ``file:line``, and the edit that iterates ``sorted(...)`` instead."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
        tree = ast.parse(text)
    except (OSError, SyntaxError, ValueError):
        return []
    lines = text.splitlines()
    found: dict[int, tuple[str, str, Edit]] = {}
    iterated: list[tuple[ast.expr, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.comprehension)):
            iterated.append((node.iter, "for ... in set(...)"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ("list", "tuple", "enumerate", "iter", "dict") and node.args:
            iterated.append((node.args[0], f"{node.func.id}(set(...))"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join" \
                and node.args:
            iterated.append((node.args[0], "str.join(set(...))"))
    for expr, what in iterated:
        if not _is_set(expr) or getattr(expr, "end_lineno", None) != expr.lineno:
            continue
        seg = ast.get_source_segment(text, expr)
        line = lines[expr.lineno - 1]
        if not seg or seg not in line or expr.lineno in found:
            continue
        site = f"{_shown(path)}:{expr.lineno}"
        found[expr.lineno] = (what, site, Edit(site, line, line.split("  #", 1)[0].replace(seg, f"sorted({seg})", 1)))
    seeded, other = _hash_calls(path, tree, text, lines)
    # a seed made from hash() first (it decides every draw after it), then the sets, then other hash() calls
    taken = {site for _, site, _ in seeded}
    return seeded + [found[k] for k in sorted(found) if found[k][1] not in taken] + other


_SEEDISH = re.compile(r"seed|rng|prngkey|random|generator|key", re.IGNORECASE)


def _hash_calls(path: Path, tree: ast.AST, text: str, lines: list[str]) -> tuple[list[tuple[str, str, Edit]],
                                                                                  list[tuple[str, str, Edit]]]:
    """The builtin ``hash(...)`` calls of the script (a string's hash follows the per-process hash seed):
    those inside a call that makes a seed or an RNG (``torch.manual_seed(hash(name))``), and the others;
    each with the edit that takes a stable hash instead (``zlib.crc32``)."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    seeded: list[tuple[str, str, Edit]] = []
    other: list[tuple[str, str, Edit]] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hash"
                and len(node.args) == 1 and node.lineno == getattr(node, "end_lineno", None)):
            continue
        seg, arg = ast.get_source_segment(text, node), ast.get_source_segment(text, node.args[0])
        line = lines[node.lineno - 1]
        if not seg or not arg or seg not in line:
            continue
        up: ast.AST | None = parents.get(node)
        into_seed = False
        while up is not None and not isinstance(up, ast.stmt):
            if isinstance(up, ast.Call) and _SEEDISH.search(ast.get_source_segment(text, up.func) or ""):
                into_seed = True
            up = parents.get(up)
        site = f"{_shown(path)}:{node.lineno}"
        edit = Edit(site, line, line.split("  #", 1)[0].replace(seg, f"zlib.crc32(str({arg}).encode())", 1),
                    prelude="import zlib")
        (seeded if into_seed else other).append(("hash(...) of a string as a seed" if into_seed else
                                                 "hash(...) of a string", site, edit))
    return seeded, other
