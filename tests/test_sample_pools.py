"""Order or content from the whole run (issue 11, part 1): pooled per-sample digests on real traces.

The traces are written by the real Recorder from the digits images, batch by batch, as a training loop
records its inputs; only the sample order or content differs between the two runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from twinrun.comparison.samples import sample_pools
from twinrun.recording import Recorder
from twinrun.trace import TraceWriter

X = (load_digits().data / 16.0).astype(np.float32)
Y = load_digits().target.astype(np.int64)


def write(path: Path, order: np.ndarray, steps: int, batch: int = 32, noise: np.random.Generator | None = None,
          noisy: float = 1.0) -> str:
    """A trace of ``steps`` training steps whose inputs are ``X[order]`` cut into batches."""
    rec = Recorder(TraceWriter(path, {}))
    for s in range(steps):
        idx = order[s * batch:(s + 1) * batch]
        xb = X[idx].copy()
        if noise is not None:
            hit = noise.random(len(idx)) < noisy
            xb[hit] += noise.normal(0, 0.05, size=xb[hit].shape).astype(np.float32)
        rec.event("input", "x", xb, per_sample=True)
        rec.event("input", "y", Y[idx], per_sample=True)
        rec.event("param", "w", np.zeros(3, np.float32))
        rec.end_step()
    rec.close()
    return str(path)


def test_whole_epoch_reshuffled_across_batches_is_order(tmp_path: Path) -> None:
    """The same 256 samples in two permutations: batches mix samples across steps, none is changed."""
    base = np.arange(256)
    a = write(tmp_path / "a.trace", np.random.default_rng(1).permutation(base), 8)
    b = write(tmp_path / "b.trace", np.random.default_rng(2).permutation(base), 8)
    p = sample_pools(a, b)
    assert p is not None and p.name == "x"           # the images, not the labels
    assert (p.count, p.unseen, p.steps) == (256, 0, 8)
    assert p.moved + p.same_place == 256 and p.fraction_moved > 0.9
    assert p.mixed and p.detail == "order" and p.order_proven
    assert "arrive unchanged at another position" in p.sentence() and "None" not in p.sentence()


def test_partial_epoch_of_a_shuffled_dataset_is_still_order(tmp_path: Path) -> None:
    """4 steps of 64 out of 1,797 images, each run its own permutation: few samples are shared, and those
    that are shared arrive elsewhere; the rest were seen by one run only (not 'changed')."""
    n = len(X)
    a = write(tmp_path / "a.trace", np.random.default_rng(3).permutation(n), 4, batch=64)
    b = write(tmp_path / "b.trace", np.random.default_rng(4).permutation(n), 4, batch=64)
    p = sample_pools(a, b)
    assert p is not None and p.count == 256 and p.unseen > 150   # most were seen in only one run
    assert p.moved >= 0.05 * p.count and p.detail == "order"
    assert "partial epoch" in p.sentence()


def test_augmentation_in_a_fixed_order_is_content(tmp_path: Path) -> None:
    """The order is fixed; half of the samples get fresh noise in each run: none arrives elsewhere."""
    order = np.arange(192)
    a = write(tmp_path / "a.trace", order, 3, noise=np.random.default_rng(5), noisy=0.5)
    b = write(tmp_path / "b.trace", order, 3, noise=np.random.default_rng(6), noisy=0.5)
    p = sample_pools(a, b)
    assert p is not None and p.moved == 0 and p.unseen > 0 and p.same_place > 0
    assert p.detail == "content" and not p.order_proven
    assert "content changed" in p.sentence()


def test_labels_alone_prove_nothing(tmp_path: Path) -> None:
    """Ten classes repeat: a label found elsewhere is not the same sample."""
    a = write(tmp_path / "a.trace", np.random.default_rng(7).permutation(128), 4)
    b = write(tmp_path / "b.trace", np.random.default_rng(8).permutation(128), 4)
    p = sample_pools(a, b, name="y")
    assert p is not None and not p.distinguishable and p.detail is None
    assert "prove neither order nor content" in p.sentence()


def test_identical_runs_have_no_detail(tmp_path: Path) -> None:
    order = np.arange(96)
    a = write(tmp_path / "a.trace", order, 3)
    b = write(tmp_path / "b.trace", order, 3)
    p = sample_pools(a, b)
    assert p is not None and not p.differ and p.detail is None and p.same_place == 96
