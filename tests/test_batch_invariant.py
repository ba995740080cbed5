"""batch_invariant(): each row's bits do not depend on the batch size or the thread count (CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from twinrun.frameworks.torch.batch_invariant import batch_invariant, is_active

SUB_BATCHES = (1, 3, 7, 10, 32)


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def linear_stack() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(512, 512), nn.ReLU())]).eval()


class Block(nn.Module):
    """Pre-norm transformer block: attention with an explicit softmax (or SDPA), layer_norm, GELU MLP."""

    def __init__(self, d: int = 128, heads: int = 4, sdpa: bool = False) -> None:
        super().__init__()
        self.heads, self.sdpa = heads, sdpa
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.sdpa:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1) @ v
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


def rows_by_sub_batches(model: nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + k]) for i in range(0, x.shape[0], k)])


def invariance_failures(model: nn.Module, x: torch.Tensor) -> list[str]:
    """What differs from the whole batch at 2 threads: sub-batch sizes and other thread counts."""
    with torch.no_grad():
        full = model(x)
    bad = [f"sub-batch {k}" for k in SUB_BATCHES if not torch.equal(rows_by_sub_batches(model, x, k), full)]
    for threads in (1, 3):
        torch.set_num_threads(threads)
        try:
            with torch.no_grad():
                if not torch.equal(model(x), full):
                    bad.append(f"{threads} threads")
            if not torch.equal(rows_by_sub_batches(model, x, 1), full):
                bad.append(f"rows alone at {threads} threads")
        finally:
            torch.set_num_threads(2)
    return bad


def test_linear_stack_default_is_not_batch_invariant_and_is_under_the_context():
    model = linear_stack()
    x = torch.randn(64, 512, generator=torch.Generator().manual_seed(1))
    assert any(f.startswith("sub-batch") for f in invariance_failures(model, x))   # the problem, measured
    with batch_invariant():
        assert invariance_failures(model, x) == []


def test_rows_agree_across_many_batch_sizes():
    torch.manual_seed(0)
    lin = nn.Linear(384, 200)
    x = torch.randn(130, 384, generator=torch.Generator().manual_seed(7))
    with batch_invariant(), torch.no_grad():
        alone = torch.cat([lin(x[i:i + 1]) for i in range(130)])
        for rows in (2, 31, 32, 33, 64, 65, 100, 130):
            assert torch.equal(lin(x[:rows]), alone[:rows]), rows
            assert torch.equal(lin(x[130 - rows:]), alone[130 - rows:]), rows   # unaligned slices too


@pytest.mark.parametrize("sdpa", [False, True])
def test_transformer_block_is_batch_and_thread_invariant(sdpa):
    torch.manual_seed(0)
    model = Block(sdpa=sdpa).eval()
    x = torch.randn(64, 16, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        default = model(x)
    with batch_invariant():
        assert invariance_failures(model, x) == []
        with torch.no_grad():
            inside = model(x)
    torch.testing.assert_close(inside, default, rtol=1e-5, atol=1e-5)   # the same function, other bits


def test_wide_layer_thread_count():
    torch.manual_seed(0)
    wide = nn.Linear(2048, 2048)
    x = torch.randn(10, 2048)
    outs = {}
    for ctx in ("default", "invariant"):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with (batch_invariant() if ctx == "invariant" else torch.enable_grad()), torch.no_grad():
                outs[ctx, threads] = wide(x)
    assert torch.equal(outs["invariant", 1], outs["invariant", 2])
    torch.testing.assert_close(outs["invariant", 2], outs["default", 2])


def _row_check(fn, x: torch.Tensor) -> None:
    """fn's rows agree bitwise whether computed in the batch, alone or 3 at a time; and match the
    default kernels closely (the overrides compute the same function)."""
    default = fn(x)
    with batch_invariant():
        full = fn(x)
        alone = torch.cat([fn(x[i:i + 1]) for i in range(x.shape[0])])
        threes = torch.cat([fn(x[i:i + 3]) for i in range(0, x.shape[0], 3)])
    assert torch.equal(full, alone) and torch.equal(full, threes)
    torch.testing.assert_close(full, default, rtol=1e-5, atol=1e-5)


W = torch.randn(96, 200, generator=torch.Generator().manual_seed(3)) / 10
B = torch.randn(200, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("name,fn,shape", [
    ("mm", lambda x: x @ W, (20, 96)),
    ("addmm", lambda x: torch.addmm(B, x, W, beta=0.5, alpha=2.0), (20, 96)),
    ("linear", lambda x: F.linear(x, W.t(), B), (20, 96)),
    ("matmul3d", lambda x: x @ W, (20, 5, 96)),
    ("bmm", lambda x: torch.bmm(x, x.transpose(1, 2)), (20, 7, 96)),
    ("baddbmm", lambda x: torch.baddbmm(torch.ones(1, 7, 7), x, x.transpose(1, 2), alpha=0.5), (20, 7, 96)),
    ("softmax", lambda x: torch.softmax(x * 4, -1), (20, 5, 96)),
    ("log_softmax", lambda x: torch.log_softmax(x * 4, dim=-1), (20, 96)),
    ("layer_norm", lambda x: F.layer_norm(x, (96,), torch.ones(96) * 2, torch.ones(96)), (20, 5, 96)),
    ("layer_norm_2d", lambda x: F.layer_norm(x, (5, 96)), (20, 5, 96)),
    ("rms_norm", lambda x: F.rms_norm(x, (96,), torch.ones(96) * 3, 1e-6), (20, 5, 96)),
    ("sum", lambda x: x.sum(-1), (20, 5, 96)),
    ("sum_keepdim", lambda x: x.sum(dim=(-2, -1), keepdim=True), (20, 5, 96)),
    ("mean", lambda x: x.mean(-1, keepdim=True), (20, 96)),
    ("mean_dtype", lambda x: x.mean(-1, dtype=torch.float64), (20, 96)),
    ("sdpa_causal", lambda x: F.scaled_dot_product_attention(x, x * 0.5, x, is_causal=True), (20, 2, 7, 16)),
    ("sdpa_mask", lambda x: F.scaled_dot_product_attention(
        x, x, x, attn_mask=torch.ones(7, 7, dtype=torch.bool).tril()), (20, 2, 7, 16)),
    ("sdpa_scale", lambda x: F.scaled_dot_product_attention(x, x, x, scale=0.3), (20, 2, 7, 16)),
])
def test_each_op_is_row_invariant_and_computes_the_same_function(name, fn, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        _row_check(fn, x)


def test_half_types_and_float64():
    for dtype in (torch.bfloat16, torch.float64):
        x = torch.randn(20, 96, generator=torch.Generator().manual_seed(6)).to(dtype)
        w = W.to(dtype)
        with torch.no_grad():
            default = F.layer_norm(x @ w, (200,))
            with batch_invariant():
                full = F.layer_norm(x @ w, (200,))
                alone = torch.cat([F.layer_norm(x[i:i + 1] @ w, (200,)) for i in range(20)])
        assert full.dtype == dtype and torch.equal(full, alone)
        torch.testing.assert_close(full, default, rtol=2e-2, atol=2e-2)


def test_autograd_still_works_and_gives_the_same_gradients():
    torch.manual_seed(0)
    model = Block(sdpa=True)
    x = torch.randn(4, 8, 128)
    grads = []
    for ctx in (torch.enable_grad(), batch_invariant()):
        model.zero_grad()
        with ctx:
            model(x).square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_context_nests_restores_and_decorates():
    model = linear_stack()
    x = torch.randn(5, 512)
    with torch.no_grad():
        before = model(x[:1])
    assert not is_active()
    with batch_invariant():
        with batch_invariant():
            assert is_active()
        assert is_active()   # the inner exit leaves the outer context on
    assert not is_active()
    with torch.no_grad():
        assert torch.equal(model(x[:1]), before)   # PyTorch's own kernels are back

    @batch_invariant()
    def rows(t: torch.Tensor) -> torch.Tensor:
        assert is_active()
        with torch.no_grad():
            return model(t)

    assert torch.equal(rows(x)[2:3], rows(x[2:3]))
    assert not is_active()


def test_unsupported_inputs_take_the_original_kernels():
    with batch_invariant():
        a = torch.arange(12).reshape(3, 4)
        assert torch.equal(a @ a.t(), torch.tensor([[14, 38, 62], [38, 126, 214], [62, 214, 366]]))
        assert torch.equal(a.sum(-1), torch.tensor([6, 22, 38]))
        assert torch.softmax(torch.ones(2, 3), dim=0).shape == (2, 3)   # not the last dim
        assert torch.ones(2, 3).sum().item() == 6.0                     # a full reduction
        assert (torch.ones(0, 4) @ torch.ones(4, 2)).shape == (0, 2)
