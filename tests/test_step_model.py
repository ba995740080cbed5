"""Where a PyTorch step ends without depending on one API (issue 10): a plain optimizer step, a closure,
updates by hand (``p -= lr * p.grad``, ``p.data.add_``), ``twinrun.step()``; gradients as backward
produces them; and honesty when no step can be seen. Every run is a real fresh process."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import run_twinrun  # noqa: E402
from twinrun.trace import Trace  # noqa: E402

pytestmark = pytest.mark.timeout(600)

# One tiny classifier and its data; LOOPS differ only in how they update the weights.
HEAD = """
import sys, torch, torch.nn as nn
seeded = "--unseeded" not in sys.argv
if seeded:
    torch.manual_seed(0)
wide = "--wide" in sys.argv
model = nn.Sequential(nn.Linear(64, 2048 if wide else 16), nn.ReLU(), nn.Linear(2048 if wide else 16, 10))
g = torch.Generator().manual_seed(1)
x, y = torch.randn(64, 64, generator=g), torch.randint(0, 10, (64,), generator=g)
if "--truth" in sys.argv:   # the step-0 gradients, computed here without twinrun
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    import numpy as np
    np.savez(sys.argv[sys.argv.index("--truth") + 1], **{n: p.grad.numpy() for n, p in model.named_parameters()})
    model.zero_grad()
"""
LOOPS = {
    "optimizer": """
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(6):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
""",
    "closure": """
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(6):
    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss
    opt.step(closure)
""",
    "by_hand": """
for step in range(6):
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
""",
    "data_add": """
crit = nn.CrossEntropyLoss()
for step in range(6):
    model.zero_grad()
    crit(model(x), y).backward()
    for p in model.parameters():
        p.data.add_(p.grad, alpha=-0.1)
""",
    "explicit": """
import twinrun
for step in range(6):
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p - 0.1 * p.grad)
    twinrun.step()
""",
}


def script(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.py"
    path.write_text(HEAD + LOOPS[kind])
    return path


@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_every_loop_kind_records_its_steps_and_the_step0_gradients(tmp_path, kind):
    path = script(tmp_path, kind)
    truth = tmp_path / "truth.npz"
    r = run_twinrun("run", "--json", "-o", tmp_path / "a.trace", "--max-steps", 4, path, "--", "--truth", truth)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["steps"] == 4
    t = Trace.open(tmp_path / "a.trace")
    assert t.steps() == [0, 1, 2, 3]
    want = np.load(truth)
    grads = {e.name: e for e in t.events(0) if e.phase == "grad"}
    # backward finishes the last layer first: the first gradient recorded is the last layer's
    assert [e.name for e in t.events(0) if e.phase == "grad"][:2] == ["2.bias", "2.weight"]
    for name in ("0.weight", "0.bias", "2.weight", "2.bias"):
        np.testing.assert_array_equal(t.value(grads[name]), want[name])
    params = [e.name for e in t.events(1) if e.phase == "param"]
    assert sorted(params) == ["0.bias", "0.weight", "2.bias", "2.weight"]


@pytest.mark.parametrize("kind", ["by_hand", "closure"])
def test_seeded_check_passes_and_unseeded_parts_at_init(kind, tmp_path):
    path = script(tmp_path, kind)
    r = run_twinrun("check", "--json", "--max-steps", 3, path)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["identical"] is True and doc["steps_compared"] == 3
    r = run_twinrun("check", "--json", "--max-steps", 3, path, "--", "--unseeded")
    assert r.returncode == 1, r.stderr[-2000:]
    assert json.loads(r.stdout)["first_divergence"]["phase"] == "init"


@pytest.mark.parametrize("kind", ["by_hand", "closure"])
def test_one_vs_two_threads_is_located_in_the_backward_pass(kind, tmp_path):
    import os

    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores")
    path = script(tmp_path, kind)
    for n in (1, 2):
        r = run_twinrun("run", "-o", tmp_path / f"{n}.trace", "--threads", n, "--max-steps", 2, path, "--", "--wide")
        assert r.returncode == 0, r.stderr[-2000:]
    r = run_twinrun("diff", "--json", tmp_path / "1.trace", tmp_path / "2.trace")
    fd = json.loads(r.stdout)["first_divergence"]
    assert (fd["step"], fd["phase"], fd["name"]) == (0, "grad", "2.weight"), fd


NO_STEP = """
import torch, torch.nn as nn
torch.manual_seed(0)
model = nn.Linear(8, 2)
for i in range(5):
    out = model(torch.randn(4, 8))   # forward only: nothing twinrun can call a step
"""


def test_a_run_without_a_step_says_so_and_is_never_a_divergence(tmp_path):
    path = tmp_path / "nostep.py"
    path.write_text(NO_STEP)
    r = run_twinrun("run", "-o", tmp_path / "a.trace", path)
    assert r.returncode == 0   # the script ran; the warning says its trace holds no step
    line = next(ln for ln in r.stderr.splitlines() if "warning" in ln)
    assert "no training step was recorded" in line and "5 forward calls of a model" in line
    assert "twinrun.step()" in line
    r = run_twinrun("check", "--json", path)
    assert r.returncode == 2, r.stdout
    doc = json.loads(r.stdout)
    assert doc["identical"] is None and doc["no_step"] is True and "first_divergence" not in doc
    r = run_twinrun("doctor", path)
    assert r.returncode == 2 and "no training step was recorded" in r.stderr.strip().splitlines()[-1]
    assert "NOT-REPRODUCIBLE" not in r.stdout


def test_max_steps_ends_a_loop_without_an_optimizer(tmp_path):
    path = tmp_path / "long.py"
    path.write_text(HEAD + LOOPS["by_hand"].replace("range(6)", "range(100_000)"))
    r = run_twinrun("run", "--json", "-o", tmp_path / "a.trace", "--max-steps", 3, path)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert (doc["steps"], doc["status"], doc["stop_reason"]) == (3, "stopped", "max-steps")


NAMES = """
import torch, torch.nn as nn
torch.manual_seed(0)

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x, labels=None, **kwargs):
        out = self.fc(x)
        return nn.CrossEntropyLoss()(out, labels)     # a loss module built in forward

model = Net()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(2):
    opt.zero_grad()
    loss = model(torch.randn(4, 8), labels=torch.tensor([0, 1, 2, 0]), num_items_in_batch=torch.tensor(4))
    loss.backward()
    opt.step()
"""


def test_loss_modules_built_in_forward_get_their_call_site_and_trainer_keywords_are_no_inputs(tmp_path):
    path = tmp_path / "names.py"
    path.write_text(NAMES)
    r = run_twinrun("run", "-o", tmp_path / "a.trace", path)
    assert r.returncode == 0, r.stderr[-2000:]
    events = Trace.open(tmp_path / "a.trace").events(0)
    forward = [e.name for e in events if e.phase == "forward"]
    line = textwrap.dedent(NAMES).splitlines().index(
        "        return nn.CrossEntropyLoss()(out, labels)     # a loss module built in forward") + 1
    assert f"CrossEntropyLoss@names.py:{line}" in forward and not any(n.startswith("?") for n in forward)
    inputs = [e.name for e in events if e.phase == "input"]
    assert inputs == ["x", "labels"]   # num_items_in_batch only **kwargs takes: not an input
