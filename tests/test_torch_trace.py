"""Recording PyTorch through global hooks, in this process: names, order, phases, eval passes, watch()."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import twinrun  # noqa: E402
from twinrun.frameworks.torch.tracing import unwatch, watch  # noqa: E402
from twinrun.trace import Trace  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from cnn_digits import SmallCNN  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    return x, y


@pytest.fixture(autouse=True)
def _no_watch():
    yield
    unwatch()


def train(model, opt, x, y, steps=3, batch=32, eval_pass=False, flip_at=None, kwargs=False):
    gen = torch.Generator().manual_seed(7)
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        xb = x[idx].flip(0) if step == flip_at else x[idx]
        yb = y[idx].flip(0) if step == flip_at else y[idx]
        opt.zero_grad()
        out = model(x=xb) if kwargs else model(xb)
        loss = F.cross_entropy(out, yb)
        loss.backward()
        opt.step()
        if eval_pass:
            with torch.no_grad():
                model(x[:16])
            model.eval()
            model(x[:16])  # eval mode with grad on: still not a training step
            model.train()


def fresh(seed=0):
    torch.manual_seed(seed)
    model = SmallCNN()
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def names(trace, step, phase=None):
    return [(e.phase, e.name) for e in trace.events(step) if phase is None or e.phase == phase]


def test_events_in_program_order_named_by_module_path(tmp_path, digits):
    model, opt = fresh()
    with twinrun.record(tmp_path / "a.trace"):
        train(model, opt, *digits, steps=2)
    t = Trace.open(tmp_path / "a.trace")
    assert t.status == "complete" and t.steps() == [0, 1]
    params = [n for n, _ in model.named_parameters()]
    ev0 = names(t, 0)
    assert ev0[:len(params)] == [("init", n) for n in params]  # init first, every parameter
    assert ev0[len(params)] == ("input", "x")
    assert names(t, 0, "forward") == [
        ("forward", "features.0"), ("forward", "features.1"), ("forward", "features.2"),
        ("forward", "features"), ("forward", "act"), ("forward", "act#1"),  # act called twice
        ("forward", "classifier"), ("forward", "SmallCNN")]
    assert names(t, 0, "loss") == [("loss", "loss")]
    # gradients in the order backward() finished them: the last layer first
    grads = [n for _, n in names(t, 0, "grad")]
    assert sorted(grads) == sorted(params) and grads[0].startswith("classifier.")
    assert grads.index("classifier.weight") < grads.index("features.0.weight")
    assert [n for _, n in names(t, 0, "param")] == params
    # later steps have no init; phases keep their order
    phases1 = [p for p, _ in names(t, 1)]
    assert "init" not in phases1
    assert phases1 == sorted(phases1, key=["input", "forward", "loss", "grad", "param"].index)
    # the recorded values are the real ones
    final = {e.name: e for e in t.events(1) if e.phase == "param"}
    w = model.classifier.weight.detach().numpy()
    assert final["classifier.weight"].digest == twinrun.trace.digest(w, "float32")


def test_inputs_have_per_sample_digests_that_reveal_order(tmp_path, digits):
    for name, flip in (("a", None), ("b", 1)):
        model, opt = fresh()
        with twinrun.record(tmp_path / f"{name}.trace"):
            train(model, opt, *digits, steps=2, flip_at=flip)
    a, b = Trace.open(tmp_path / "a.trace"), Trace.open(tmp_path / "b.trace")
    ia = [e for e in a.events(1) if e.phase == "input"][0]
    ib = [e for e in b.events(1) if e.phase == "input"][0]
    assert ia.shape == (32, 1, 8, 8) and len(ia.sample_digests) == 32
    assert ia.digest != ib.digest
    assert ia.sample_digests != ib.sample_digests
    assert ia.sample_digests == ib.sample_digests[::-1]  # same samples, another order


def test_eval_passes_are_not_recorded(tmp_path, digits):
    for name, ev in (("plain", False), ("eval", True)):
        model, opt = fresh()
        with twinrun.record(tmp_path / f"{name}.trace"):
            train(model, opt, *digits, steps=2, eval_pass=ev)
    plain, evald = Trace.open(tmp_path / "plain.trace"), Trace.open(tmp_path / "eval.trace")
    for step in (0, 1):
        assert [(e.phase, e.name, e.digest) for e in plain.events(step)] == \
               [(e.phase, e.name, e.digest) for e in evald.events(step)]


def test_keyword_inputs_are_recorded_by_name(tmp_path, digits):
    model, opt = fresh()
    with twinrun.record(tmp_path / "k.trace"):
        train(model, opt, *digits, steps=1, kwargs=True)
    ev = [e for e in Trace.open(tmp_path / "k.trace").events(0) if e.phase == "input"]
    assert [(e.name, e.shape) for e in ev] == [("x", (32, 1, 8, 8))]
    assert len(ev[0].sample_digests) == 32


def test_capture_limits_phases_and_every_skips_steps(tmp_path, digits):
    model, opt = fresh()
    with twinrun.record(tmp_path / "p.trace", capture=("param",), every=2):
        train(model, opt, *digits, steps=5)
    t = Trace.open(tmp_path / "p.trace")
    assert t.steps() == [0, 2, 4]
    assert {e.phase for e in t.events()} == {"param"}
    # with no module phase captured, one light pre-hook still learns the parameters' names
    assert [e.name for e in t.events(4)] == [n for n, _ in model.named_parameters()]


def test_max_steps_stops_the_block_cleanly(tmp_path, digits):
    model, opt = fresh()
    done = []
    with twinrun.record(tmp_path / "m.trace", max_steps=2):
        train(model, opt, *digits, steps=10)
        done.append(True)  # never reached: StopRun ends the block
    t = Trace.open(tmp_path / "m.trace")
    assert not done and t.status == "stopped" and t.steps() == [0, 1]


def test_hooks_are_removed_after_recording(tmp_path, digits):
    from torch.nn.modules import module as M
    from torch.optim import optimizer as O

    before = (len(M._global_forward_pre_hooks), len(M._global_forward_hooks),
              len(O._global_optimizer_pre_hooks), len(O._global_optimizer_post_hooks))
    backward = torch.autograd.backward
    model, opt = fresh()
    with twinrun.record(tmp_path / "h.trace"):
        assert torch.autograd.backward is not backward
        train(model, opt, *digits, steps=1)
    assert torch.autograd.backward is backward
    assert before == (len(M._global_forward_pre_hooks), len(M._global_forward_hooks),
                      len(O._global_optimizer_pre_hooks), len(O._global_optimizer_post_hooks))
    assert all(not p._post_accumulate_grad_hooks for p in model.parameters())


def test_watch_limits_recording_to_one_model_and_optimizer(tmp_path, digits):
    x, y = digits
    model, opt = fresh()
    teacher = nn.Linear(64, 10)
    other = torch.optim.SGD(teacher.parameters(), lr=0.1)
    with twinrun.record(tmp_path / "w.trace"):
        watch(model, opt)
        for _ in range(2):
            xb = x[:16]
            other.zero_grad()
            F.mse_loss(teacher(xb.flatten(1)), torch.zeros(16, 10)).backward()
            other.step()  # not watched: does not end a step
            opt.zero_grad()
            F.cross_entropy(model(xb), y[:16]).backward()
            opt.step()
    t = Trace.open(tmp_path / "w.trace")
    assert t.steps() == [0, 1]
    recorded = {e.name for e in t.events() if e.phase in ("init", "forward", "grad", "param")}
    assert "Linear" not in recorded and "weight" not in recorded
    assert {e.name for e in t.events() if e.phase == "param"} == {n for n, _ in model.named_parameters()}


def test_second_root_model_is_prefixed_and_loss_modules_are_named(tmp_path, digits):
    x, _ = digits
    torch.manual_seed(0)
    gen, disc = nn.Sequential(nn.Linear(64, 64)), nn.Sequential(nn.Linear(64, 1))
    crit = nn.BCEWithLogitsLoss()
    opt = torch.optim.SGD([*gen.parameters(), *disc.parameters()], lr=0.1)
    with twinrun.record(tmp_path / "g.trace"):
        opt.zero_grad()
        crit(disc(gen(x[:8].flatten(1))), torch.ones(8, 1)).backward()
        opt.step()
    ev = Trace.open(tmp_path / "g.trace").events(0)
    fwd = [e.name for e in ev if e.phase == "forward"]
    assert fwd == ["0", "Sequential", "Sequential(2).0", "Sequential(2)", "BCEWithLogitsLoss"]
    assert [e.name for e in ev if e.phase == "init"] == ["0.weight", "0.bias", "Sequential(2).0.weight",
                                                         "Sequential(2).0.bias"]
    assert [e.name for e in ev if e.phase == "input"] == ["input", "Sequential(2).input"]


def test_a_forward_that_raises_leaves_the_tracer_consistent(tmp_path, digits):
    class Bad(nn.Module):
        def forward(self, x):
            raise ValueError("bad")

    x, y = digits
    model, opt = fresh()
    model.extra = Bad()
    with twinrun.record(tmp_path / "r.trace"):
        with pytest.raises(ValueError):
            model.extra(x[:4])  # a root forward that raises
        train(model, opt, x, y, steps=1)
    fwd = [e.name for e in Trace.open(tmp_path / "r.trace").events(0) if e.phase == "forward"]
    assert fwd[-1] == "SmallCNN" and "features.0" in fwd


def test_a_tensor_seen_again_reuses_its_digest_but_a_changed_one_does_not(tmp_path, digits):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(64, 32), nn.Identity())
            self.act = nn.ReLU(inplace=True)  # changes the Linear's output after it was recorded
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            return self.head(self.act(self.body(x.flatten(1))))

    x, y = digits
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with twinrun.record(tmp_path / "d.trace"):
        opt.zero_grad()
        F.cross_entropy(model(x[:8]), y[:8]).backward()
        opt.step()
    t = Trace.open(tmp_path / "d.trace")
    ev = {e.name: e for e in t.events(0) if e.phase == "forward"}
    # Identity and Sequential return the Linear's very tensor: same digest and stats.
    assert ev["body.1"].digest == ev["body"].digest == ev["body.0"].digest
    assert ev["body"].l2 == ev["body.0"].l2
    # the in-place ReLU changed that tensor: hashed again, and it differs
    assert ev["act"].digest != ev["body.0"].digest
