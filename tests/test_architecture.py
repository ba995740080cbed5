"""The map in docs/architecture.md holds: no import cycles between twinrun's parts, frameworks only
in their adapters, no module over 500 lines, and adapters that cannot leave part of the contract out."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "twinrun"
FRAMEWORKS = ("torch", "tensorflow", "jax", "jaxlib", "keras", "flax", "optax", "lightning", "transformers")
FRAMEWORK_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "XLA_FLAGS", "TF_ENABLE_ONEDNN_OPTS")
# The user-facing namespaces import their framework on purpose (the user asked for it by name), and the
# demo's training script is a user script.
USER_FACING = {"torch.py", "keras.py", "jax.py", "_demo/digits_cnn.py"}


def modules() -> dict[str, Path]:
    return {str(p.relative_to(SRC)): p for p in sorted(SRC.rglob("*.py"))}


def part(dotted: str) -> str:
    """The part of twinrun a module belongs to: ``twinrun.trace.store`` -> ``trace``."""
    pieces = dotted.split(".")
    return pieces[1] if len(pieces) > 1 else "twinrun"


def dotted_name(rel: str) -> str:
    name = "twinrun." + rel.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


def imports(path: Path, rel: str) -> list[tuple[str, bool]]:
    """(imported module, under TYPE_CHECKING) for every import in the file, lazy ones too."""
    tree = ast.parse(path.read_text())
    here = dotted_name(rel)
    package = here if rel.endswith("__init__.py") else here.rsplit(".", 1)[0]
    checking: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            checking |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in checking) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
                names = [target] if node.module else [f"{base}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
            out += [(n, id(node) in checking) for n in names]
    return out


def test_the_parts_of_twinrun_import_each_other_without_a_cycle():
    edges: dict[str, set[str]] = {}
    for rel, path in modules().items():
        src = part(dotted_name(rel))
        if rel in USER_FACING or src in ("twinrun", "cli", "__main__"):
            continue   # the package root (lazy names), the CLI (on top of everything) and the facades
        for target, type_only in imports(path, rel):
            if type_only or not target.startswith("twinrun."):
                continue
            dst = part(target)
            if dst != src and dst not in ("twinrun",):
                edges.setdefault(src, set()).add(dst)
    # depth-first search for a cycle, reporting it
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(m):], m]))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n)


def test_only_the_adapters_import_a_framework_or_name_its_variables():
    for rel, path in modules().items():
        if rel.startswith("frameworks/") or rel in USER_FACING:
            continue
        for target, _ in imports(path, rel):
            assert target.split(".")[0] not in FRAMEWORKS, f"{rel} imports {target}: only frameworks/ may"
        text = path.read_text()
        for var in FRAMEWORK_VARIABLES:
            assert var not in text, f"{rel} names {var}: that is a fact of a framework adapter"


def test_no_module_is_over_500_lines():
    long = {rel: n for rel, path in modules().items() if (n := len(path.read_text().splitlines())) > 500}
    assert not long, long


def test_an_adapter_that_leaves_a_method_out_fails_when_defined():
    from twinrun.frameworks.base import Adapter, FixWords

    with pytest.raises(TypeError, match=r"does not define .*install"):
        class Half(Adapter):   # defining it is the test
            name, module, extra = "half", "half", None
            words = FixWords("", "", "", "")

            @classmethod
            def interventions(cls):
                return []

            @classmethod
            def isa_variants(cls, flags, environ):
                return [], []

            @classmethod
            def thread_variant(cls, count):
                return None

            def seed(self, seed):
                return {}

            def switches(self, *, strict, threads):
                return []

            def environment(self):
                return {}

            def is_tensor(self, x):
                return False

            def to_numpy(self, x):
                raise TypeError

            def dtype_name(self, x):
                return ""


def test_every_registered_adapter_is_complete_and_imports_no_framework():
    import subprocess
    import sys

    code = ("import sys\nfrom twinrun import frameworks, interventions\n"
            "for n in frameworks.NAMES:\n    c = frameworks.adapter_class(n)\n    assert c.name == n, n\n"
            "assert set(interventions.NAMES) == set(interventions.registry())\n"
            "print(sorted(m for m in ('torch', 'tensorflow', 'jax', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
