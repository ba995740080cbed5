"""The PyTorch hooks' cheap hand-over (issue 16): NumPy views of CPU tensors, the cached process id."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import twinrun  # noqa: E402
from twinrun.frameworks.torch.handoff import numpy_view  # noqa: E402
from twinrun.trace import Trace, digest  # noqa: E402


def test_a_cpu_tensor_of_a_numpy_dtype_is_handed_over_as_a_view_of_its_memory():
    t = torch.arange(6, dtype=torch.float32, requires_grad=True).reshape(2, 3)
    v = numpy_view(t)
    assert isinstance(v, np.ndarray) and v.shape == (2, 3)
    with torch.no_grad():
        t.add_(1)
    assert v[0, 0] == 1.0   # the same memory, no copy
    # what NumPy cannot view stays a tensor, for the adapter
    assert isinstance(numpy_view(torch.ones(3, dtype=torch.bfloat16)), torch.Tensor)
    z = torch.ones(3, dtype=torch.complex64).conj()
    assert numpy_view(z) is z
    tt = t.t()   # not contiguous: a strided view, the same values
    assert numpy_view(tt).tolist() == tt.tolist()


def test_a_model_recorded_through_views_has_the_digests_of_its_tensors(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(5, 4)
    with twinrun.record(tmp_path / "m.trace"):
        loss = model(x).pow(2).sum()
        loss.backward()
        opt.step()
    t = Trace.open(tmp_path / "m.trace")
    params = {e.name: e for e in t.events(0) if e.phase == "param"}
    assert params["0.weight"].digest == digest(model[0].weight.detach().numpy(), "float32")
    out = next(e for e in t.events(0) if e.phase == "forward" and e.name == "2")
    assert out.shape == (5, 2) and out.dtype == "float32"


FORKED = """
import os
from twinrun.frameworks.torch.handoff import pid
assert pid() == os.getpid()
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.write(w, b"1" if pid() == os.getpid() else b"0")
    os._exit(0)
os.close(w)
got = os.read(r, 1)
os.waitpid(child, 0)
print(got.decode(), pid() == os.getpid() != child)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_the_cached_process_id_is_the_childs_after_a_fork():
    # In a fresh process: forking this one (threads of other frameworks running) is unsafe.
    out = subprocess.run([sys.executable, "-c", FORKED], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "True"]
