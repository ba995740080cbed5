"""The op census (issue 11, part 3) on real PyTorch: which nondeterministic ops a script uses, where in
its code, in which pass, how often; and doctor naming the op when deterministic kernels remove a
divergence. The scripts are tests/scripts/census/ (index_put_ in a module's forward, the backward of
``x[idx]``, and a clean one that pools with index_add_ and looks up with an embedding)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch

from helpers import run_twinrun
from twinrun.doctor import Cause, Diagnosis, Experiment, Verdict, Where, diagnose
from twinrun.doctor.census import OpCensus, census, explain_kernel
from twinrun.doctor.experiments import ExperimentRunner
from twinrun.frameworks.torch import census as torch_census
from twinrun.options import RunOptions
from twinrun.runner import run_as_main

SCRIPTS = Path(__file__).resolve().parent / "scripts" / "census"
pytestmark = pytest.mark.timeout(600)


def line_of(script: str, text: str) -> str:
    """``script.py:N`` of the line holding ``text`` (the call site the census must name)."""
    lines = (SCRIPTS / script).read_text().splitlines()
    return f"{script}:{next(i for i, ln in enumerate(lines, 1) if text in ln)}"


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def in_process(script: str, *args: str) -> list[dict]:
    finish = torch_census.install()
    try:
        outcome = run_as_main(SCRIPTS / script, list(args))
    finally:
        rows = finish()
    assert outcome.exit_code == 0, outcome.error
    assert not torch.are_deterministic_algorithms_enabled(), "the census leaves deterministic mode as it found it"
    return rows


def test_index_put_in_a_modules_forward_is_named_with_its_call_site(threads):
    rows = in_process("scatter_pool.py", "--steps", "2")
    assert [(r["op"], r["phase"], r["count"]) for r in rows] == [("index_put_ (accumulate=True)", "forward", 2)]
    assert rows[0]["site"].endswith(line_of("scatter_pool.py", "pooled.index_put_("))
    assert rows[0]["fact"]["deterministic_ratio"] == torch_census.KNOWN["index_put_acc"].deterministic
    assert (rows[0]["rewrite"]["before"], rows[0]["rewrite"]["after"]) == (
        "pooled.index_put_((owner,), feats, accumulate=True)", "pooled.index_add_(0, owner, feats)")


def test_backward_of_advanced_indexing_is_named_at_the_forward_call(threads):
    rows = in_process("lookup_backward.py", "--steps", "2")
    assert [(r["label"], r["phase"], r["count"]) for r in rows] == [
        ("index_put_ (accumulate=True), backward of x[idx]", "backward", 2)]
    assert rows[0]["site"].endswith(line_of("lookup_backward.py", "self.table[index]"))
    assert "embedding" in rows[0]["fact"]["replacement"]
    assert (rows[0]["rewrite"]["before"], rows[0]["rewrite"]["after"]) == (
        "self.table[index]", "torch.nn.functional.embedding(index, self.table)")


def test_clean_script_uses_no_such_op(threads):
    assert in_process("clean.py") == []


def test_which_calls_count(threads):
    """Only calls that can part: accumulation, and writes of different values to a repeated index."""
    finish = torch_census.install()
    try:
        idx = torch.tensor([0, 1, 1, 3])
        z = torch.zeros(4)
        z[idx] = 0.0                                    # one value everywhere: cannot differ
        z[torch.tensor([0, 1, 2])] = torch.ones(3)      # no repeated index
        z[z > 0] = torch.tensor(2.0)                    # a mask
        z.index_add_(0, idx, torch.ones(4))             # repeats on CPU (measured)
        z[idx] = torch.arange(4.0)                      # repeated index, different values
        z.put_(idx, torch.ones(4), accumulate=True)
        z.index_copy_(0, idx, torch.arange(4.0))
        x = torch.ones(5, requires_grad=True)
        torch.take(x, idx).sum().backward()
    finally:
        rows = finish()
    got = sorted((r["label"], r["phase"]) for r in rows)
    assert got == [("index_copy_ (duplicate indices)", "forward"),
                   ("index_put_ (accumulate=False, duplicate indices)", "forward"),
                   ("put_ (accumulate=True)", "forward"),
                   ("put_ (accumulate=True), backward of torch.take", "backward")]
    assert all("test_census.py:" in r["site"] for r in rows)


def test_ops_that_repeat_on_cpu_are_not_counted_and_torchs_own_warnings_are(threads):
    """Measured to repeat on CPU (benchmarks/bench_census.py, docs/doctor.md), also under the census's
    warn-only deterministic mode, which must not reroute them through a counted op."""
    torch.set_num_threads(2)
    finish = torch_census.install()
    try:
        n, idx = 5000, torch.randint(0, 64, (5000,))
        src, wide = torch.randn(n, 4), idx[:, None].expand(n, 4)
        torch.zeros(64, 4).scatter_add_(0, wide, src)
        torch.zeros(64, 4).scatter_reduce_(0, wide, src, "mean")
        torch.zeros(64, 4).index_add_(0, idx, src)
        torch.bincount(idx, weights=src[:, 0])
        x = torch.randn(64, 4, requires_grad=True)
        x.gather(0, wide).sum().backward()
        x.index_select(0, idx).sum().backward()
        torch.nn.functional.embedding(idx, x).sum().backward()
        torch.nn.functional.embedding_bag(idx, x, torch.arange(0, n, 10)).sum().backward()
        pooled, where = torch.nn.functional.max_pool2d(torch.randn(1, 1, 4, 4), 2, return_indices=True)
        torch.nn.functional.max_unpool2d(pooled, where, 2)   # PyTorch: no deterministic implementation
    finally:
        rows = finish()
    assert [(r["op"], r["phase"], r["count"]) for r in rows] == [("max_unpooling2d_forward_out", "forward", 1)]
    assert "test_census.py:" in rows[0]["site"]


def test_census_in_a_fresh_process_and_a_script_without_torch(tmp_path):
    c = census(RunOptions.create(SCRIPTS / "scatter_pool.py", max_steps=1), workdir=str(tmp_path))
    assert isinstance(c, OpCensus) and c.framework == "torch" and c.steps == 1
    assert [u.detail for u in c.ops] == ["index_put_ (accumulate=True), forward"]
    assert c.ops[0].site.endswith(line_of("scatter_pool.py", "pooled.index_put_("))
    assert "index_put_ (accumulate=True)" in c.sentence() and "1 call in 1 step" in c.sentence()
    plain = tmp_path / "plain.py"
    plain.write_text("import numpy as np\nprint(np.ones(3).sum())\n")
    assert census(RunOptions.create(plain, max_steps=1), workdir=str(tmp_path)) is None   # cannot tell: no torch
    killed = census(RunOptions.create(SCRIPTS / "scatter_pool.py", max_steps=1), timeout=0.5)
    assert killed is not None and killed.ops == [] and killed.note is not None and "time limit" in killed.note
    assert killed.sentence().startswith("The census could not tell: ")


def kernel_diagnosis(script: Path, phase: str, name: str) -> Diagnosis:
    """What attribution returns when deterministic kernels removed the divergence (its inputs to the census)."""
    where = Where(0, phase, name)
    evidence = [Experiment("baseline", "nothing", identical=False, first_divergence=where, runs=2),
                Experiment("deterministic", "deterministic kernels", identical=True, runs=2)]
    return Diagnosis(str(script), Verdict.NOT_REPRODUCIBLE, Cause.NONDETERMINISTIC_KERNEL, "layer", where,
                     "phase fix", evidence, None, True, "phase summary")


def test_doctor_names_the_op_its_pass_and_call_site():
    script = SCRIPTS / "scatter_pool.py"
    d = kernel_diagnosis(script, "forward", "pool")
    with tempfile.TemporaryDirectory() as work:
        runner = ExperimentRunner(RunOptions.create(script, max_steps=2), work, 1, None, lambda _m: None)
        c = explain_kernel(d, runner)
    site = line_of("scatter_pool.py", "pooled.index_put_(")
    assert c is not None and runner.launched == 1
    assert d.detail is not None and d.detail.startswith("index_put_ (accumulate=True), forward, at ")
    assert d.detail.endswith(site) and site in d.fix and site in d.summary
    assert "twinrun.deterministic()" in d.fix and "0.02x" in d.fix
    assert f"replace `pooled.index_put_((owner,), feats, accumulate=True)` at {d.detail.split(' at ')[-1]} with " \
           "`pooled.index_add_(0, owner, feats)`" in d.fix
    assert "forward pass, 1 call in 1 step" in d.summary   # the census ran up to the divergence's step
    assert d.evidence[-1].name == "census" and d.evidence[-1].acted[0].site.endswith(site)
    assert d.to_dict()["census"]["ops"][0]["op"] == "index_put_ (accumulate=True)"


def test_doctor_leaves_a_divergence_that_one_thread_fixed():
    d = kernel_diagnosis(SCRIPTS / "scatter_pool.py", "forward", "pool")
    d.evidence[1] = Experiment("threads-1", "one thread", identical=True, runs=2)
    runner = ExperimentRunner(RunOptions.create(SCRIPTS / "scatter_pool.py", max_steps=2), "/nonexistent", 1,
                              None, lambda _m: None)
    assert explain_kernel(d, runner) is None and runner.launched == 0 and d.detail == "layer"


@pytest.mark.slow
@pytest.mark.parametrize("script, detail, text", [
    ("scatter_pool.py", "index_put_ (accumulate=True), forward", "pooled.index_put_("),
    ("lookup_backward.py", "index_put_ (accumulate=True), backward of x[idx]", "self.table[index]"),
])
def test_doctor_end_to_end_and_its_rewrite_makes_check_pass(script, detail, text, tmp_path):
    d = diagnose(SCRIPTS / script, max_steps=2)
    assert (d.verdict, d.cause) == ("not-reproducible", "nondeterministic-kernel"), d.summary
    assert d.detail is not None and d.detail.startswith(detail) and d.detail.endswith(line_of(script, text))
    assert line_of(script, text) in d.fix and [e.name for e in d.evidence][-1] == "census"
    # The op-level replacement doctor prints, applied to a copy, makes the runs repeat.
    rewrite = d.census["ops"][0]["rewrite"]
    source = (SCRIPTS / script).read_text()
    assert source.count(rewrite["before"]) == 1
    fixed = tmp_path / script
    fixed.write_text(source.replace(rewrite["before"], rewrite["after"]))
    r = run_twinrun("check", "--max-steps", 2, "--json", fixed, timeout=600)
    assert r.returncode == 0 and json.loads(r.stdout)["identical"] is True, r.stderr[-2000:]
