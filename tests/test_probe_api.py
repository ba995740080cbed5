"""twinrun.probe(fn, batch): repeat, batch invariance and thread count, on real models, in this process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import twinrun
from twinrun import UsageError
from twinrun.frameworks.torch.batch_invariant import batch_invariant
from twinrun.probes import CHECKS, Leaf, ProbeReport, probe, row_ulps


@pytest.fixture(autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def linear_stack() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[m for _ in range(3) for m in (nn.Linear(512, 512), nn.ReLU())]).eval()


class IndexPutAccumulate(nn.Module):
    """index_put(accumulate=True) of 100k x 16 values into 64 cells: a different sum every call on
    2 threads (FACTS.md)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("idx", torch.arange(100_000) % 64)
        self.register_buffer("src", torch.randn(100_000, 16, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cells = torch.zeros(64, 16).index_put((self.idx,), self.src, accumulate=True)
        return x + cells.sum(0)


def test_report_shape_matches_the_cli_json():
    report = probe(linear_stack(), torch.randn(8, 512), checks=CHECKS)
    d = json.loads(json.dumps(report.to_dict()))
    assert set(d["checks"]) == set(CHECKS)
    for check in d["checks"].values():
        assert {"stable", "max_ulp", "first_layer"} <= set(check)
    assert d["checks"]["isa"]["stable"] is None and "twinrun probe SCRIPT" in d["checks"]["isa"]["note"]
    assert d["framework"] == "torch" and d["batch"] == 8 and d["threads"] == 2
    assert len(d["checks"]["batch_invariance"]["ulp_per_row"]) == 8
    assert isinstance(report, ProbeReport)


def test_linear_stack_fails_batch_invariance_with_the_first_layer_named():
    model, x = linear_stack(), torch.randn(64, 512, generator=torch.Generator().manual_seed(1))
    report = probe(model, x)
    bi = report.checks["batch_invariance"]
    assert bi.stable is False and bi.first_layer == "0" and bi.max_ulp > 0 and bi.rows_differing > 0
    assert report.checks["repeat"].stable is True and report.stable is False
    with batch_invariant():
        fixed = probe(model, x)
    assert fixed.checks["batch_invariance"].stable is True and fixed.checks["batch_invariance"].max_ulp == 0
    assert fixed.stable is True


def test_wide_layer_fails_threads_and_passes_under_batch_invariant():
    # MKL splits 10 rows of a wide product across 2 threads differently from 1 (measured here);
    # other CPUs may pick other sizes, so a few are tried and one must show it.
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10)).eval()
    failing = None
    for rows in (10, 5, 20, 3):
        x = torch.randn(rows, 2048, generator=torch.Generator().manual_seed(rows))
        result = probe(wide, x, checks=("threads",)).checks["threads"]
        if result.stable is False:
            failing = x
            assert result.first_layer == "0" and result.details["threads"] == [2, 1]
            break
    assert failing is not None, "no batch size showed a thread-count difference on this CPU"
    with batch_invariant():
        assert probe(wide, failing, checks=("threads",)).checks["threads"].stable is True


def test_repeat_passes_on_a_deterministic_model_and_fails_on_index_put_accumulate():
    assert probe(linear_stack(), torch.randn(16, 512), checks=("repeat",)).checks["repeat"].stable is True
    model = nn.Sequential(nn.Linear(16, 16), IndexPutAccumulate(), nn.Linear(16, 4))
    result = probe(model, torch.randn(8, 16), checks=("repeat",)).checks["repeat"]
    assert result.stable is False and result.first_layer == "1" and result.max_ulp > 0
    torch.use_deterministic_algorithms(True)
    try:
        assert probe(model, torch.randn(8, 16), checks=("repeat",)).checks["repeat"].stable is True
    finally:
        torch.use_deterministic_algorithms(False)


def test_probe_leaves_the_model_and_the_rng_as_they_were():
    model = linear_stack()
    probe(model, torch.randn(4, 512))
    assert all(not m._forward_hooks for m in model.modules())
    assert torch.get_num_threads() == 2 and not model.training
    # a model left in training mode draws dropout masks: the probe's calls must not move the RNG
    dropping = nn.Sequential(nn.Linear(16, 16), nn.Dropout(0.5)).train()
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    report = twinrun.probe(dropping, torch.randn(8, 16, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(torch.rand(4), expected)
    assert report.checks["repeat"].stable is False and "training mode" in report.checks["repeat"].note


def test_tuple_and_dict_batches_and_nested_outputs():
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(8, 4), nn.Linear(8, 4)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict:
            return {"sum": self.a(x) + self.b(y), "scale": torch.tensor(1.0)}   # a scalar is ignored

    torch.manual_seed(0)
    x, y = torch.randn(6, 8), torch.randn(6, 8)
    assert probe(Two(), (x, y), checks=("repeat",)).stable is True
    assert probe(Two(), {"x": x, "y": y}, checks=("repeat",)).stable is True


def test_keras_model_and_jax_function():
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(4)])
    x = np.random.default_rng(0).standard_normal((12, 16)).astype(np.float32)
    report = probe(model, x)
    assert report.framework == "keras" and report.checks["repeat"].stable is True
    assert report.checks["batch_invariance"].stable in (True, False)
    assert report.checks["threads"].stable is None and "fresh processes" in report.checks["threads"].note
    jax = pytest.importorskip("jax")
    w = jax.numpy.asarray(np.random.default_rng(1).standard_normal((16, 4)).astype(np.float32))
    f = jax.jit(lambda b: jax.numpy.tanh(b @ w))
    report = probe(f, x)
    assert report.framework == "jax" and report.checks["repeat"].stable is True


def test_ulp_distance():
    a = np.array([[1.0, 2.0], [0.0, -0.0]], np.float32)
    b = np.array([[np.nextafter(np.float32(1.0), np.float32(2.0)), 2.0], [-0.0, 0.0]], np.float32)
    ua = Leaf(a.view(np.uint32), "float")
    ub = Leaf(b.view(np.uint32), "float")
    assert row_ulps(ua, ub).tolist() == [1.0, 1.0]
    big = np.array([[1.0]], np.float32)
    far = np.array([[1.0 + 2 ** -20]], np.float32)
    assert row_ulps(Leaf(big.view(np.uint32), "float"), Leaf(far.view(np.uint32), "float")).tolist() == [8.0]
    nan = np.array([[np.nan]], np.float64)
    assert row_ulps(Leaf(nan.view(np.uint64), "float"), Leaf(nan.copy().view(np.uint64), "float")).tolist() == [0.0]
    # bfloat16 travels as its 16-bit patterns: 0x7FC0 is a NaN there (and 1.5 in float16's layout)
    bf = torch.tensor([[float("nan"), 1.0]], dtype=torch.bfloat16)
    bits = bf.view(torch.int16).numpy().view(np.uint16)
    other = bits.copy()
    other[0, 1] += 3
    assert row_ulps(Leaf(bits, "bfloat16"), Leaf(other, "bfloat16")).tolist() == [3.0]


def test_recordings_round_trip_through_files(tmp_path):
    from twinrun.probes import compare_leaves, first_layer, load_outputs, save_outputs
    from twinrun.probes.api import TorchRunner

    model = linear_stack()
    x = torch.randn(8, 512)
    outputs, layers = TorchRunner(model, x, 8).run(0, 8)
    path = tmp_path / "call0.npz"
    save_outputs(str(path), outputs, layers, [Leaf(x.numpy().view(np.uint32), "float")], {"label": "Sequential"})
    got = load_outputs(str(path))
    assert compare_leaves(outputs, got.outputs).identical and first_layer(layers, got.layers) is None
    assert [n for n, _ in got.layers] == [n for n, _ in layers] == ["0", "1", "2", "3", "4", "5"]
    assert got.meta == {"label": "Sequential"} and np.array_equal(got.inputs[0].values, x.numpy().view(np.uint32))
    bad = tmp_path / "bad.npz"
    np.savez(bad, evil=np.array([object()], dtype=object))
    with pytest.raises(UsageError, match="not a probe recording"):
        load_outputs(str(bad))


def test_bad_inputs():
    model = linear_stack()
    with pytest.raises(UsageError, match="unknown check 'speed'"):
        probe(model, torch.randn(4, 512), checks=("speed",))
    with pytest.raises(UsageError, match="first dimensions agree"):
        probe(lambda a, b: a, (torch.randn(4, 2), torch.randn(5, 2)))
    with pytest.raises(UsageError, match="not callable"):
        probe(3, np.ones((2, 2)))
    with pytest.raises(UsageError, match="sub-batch sizes"):
        probe(model, torch.randn(4, 512), sub_batches=[4])
    with pytest.raises(UsageError, match="no numeric array"):
        probe(lambda b: "text", np.ones((3, 2)))
    one = probe(model, torch.randn(1, 512), checks=("batch_invariance",)).checks["batch_invariance"]
    assert one.stable is None and "one row" in one.note
