"""Issue 10: the trainers' entry points import lazily and refuse bad use with one clear line.

What they record is held to each script's own truth in tests/test_loops.py (Lightning and Hugging Face
with their callbacks, Keras fit on torch and jax, Flax with record_step, torch.compile).
"""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_trainer_modules_import_no_framework():
    code = ("import sys, twinrun, twinrun.lightning, twinrun.huggingface, twinrun.keras\n"
            "print(sorted(m for m in ('torch', 'lightning', 'pytorch_lightning', 'transformers', 'tensorflow', "
            "'keras', 'jax') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-1500:]
    assert r.stdout.strip() == "[]", r.stdout


def test_keras_callback_does_not_import_tensorflow():
    code = ("import os, sys; os.environ['KERAS_BACKEND'] = 'torch'\n"
            "import twinrun.keras\n"
            "cb = twinrun.keras.Callback()\n"
            "import keras; assert isinstance(cb, keras.callbacks.Callback)\n"
            "print('tensorflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-1500:]
    assert r.stdout.strip().splitlines()[-1] == "False"


def test_record_step_refuses_unknown_outputs():
    pytest.importorskip("jax")
    import twinrun.jax
    from twinrun import UsageError

    with pytest.raises(UsageError, match=r"returns=.*must name each output once"):
        twinrun.jax.record_step(lambda: None, returns=("loss", "gradients"))
    with pytest.raises(UsageError, match="must name each output once"):
        twinrun.jax.record_step(lambda: None, returns=("loss", "loss"))


def test_record_step_without_a_recording_only_calls_the_step():
    pytest.importorskip("jax")
    import twinrun.jax

    step = twinrun.jax.record_step(lambda a, b: (a + b, a), returns=("loss", "grads"))
    assert step(1, 2) == (3, 1)


def test_torch_compile_has_no_graph_break_from_twinrun(tmp_path):
    """Dynamo traced twinrun's hooks into the user's graph (47 graph breaks in 4 steps before): now none,
    and the compiled model's parameters keep their own names."""
    pytest.importorskip("torch")
    import torch
    import torch._dynamo
    from sklearn.datasets import load_digits
    from torch._dynamo.utils import counters

    import twinrun
    from twinrun.trace import Trace

    d = load_digits()
    x = torch.tensor(d.data[:128] / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target[:128])
    torch.manual_seed(0)
    torch._dynamo.reset()
    counters.clear()
    with twinrun.record(tmp_path / "c.trace"):
        model = torch.compile(torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)),
                              backend="aot_eager")
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i in range(2):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i * 64:(i + 1) * 64]), y[i * 64:(i + 1) * 64]).backward()
            opt.step()
    assert sum(counters["graph_break"].values()) == 0, sorted(counters["graph_break"])[:3]
    assert counters["stats"]["unique_graphs"] == 1
    t = Trace.open(tmp_path / "c.trace")
    assert t.steps() == [0, 1]
    names = {e.phase: set() for e in t.events(0)}
    for e in t.events(0):
        names[e.phase].add(e.name)
    assert names["grad"] == names["param"] == {"0.weight", "0.bias", "2.weight", "2.bias"}
