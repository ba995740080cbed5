"""Batch-invariant PyTorch kernels on CPU: each row's bits do not depend on the batch around it.

Why rows change: a kernel picks its algorithm, its blocking and its split across threads from the
shape of the whole call. MKL's SGEMM computes a row of a 1-row or 5-row product with other kernels
than inside a 64-row product (the result differs by a few ULP), and at 10 rows it splits them
across 2 threads another way than on 1 thread; PyTorch's CPU flash attention differs for every batch
size (measured, docs/inference.md).

The fix here keeps every kernel in one regime whatever the batch:

- matrix products (mm, addmm, bmm) are called once with the rows (for bmm: the entries) padded
  with zeros to a multiple of a block, in fresh buffers whose rows and entries start 64-byte
  aligned. The block is the smallest of 4, 8 and 16 rows that the product's first call shows (on
  test rows, per shape, dtype, layout and thread count) to give every row the bits it has in a
  96-row call, else 32 (``_calibrated``). MKL's batched GEMM gives an entry other bits depending
  on its address modulo 64 (measured: entries whose stride is not a multiple of 64 bytes change with
  their position in the batch), so B and the result are padded with zero columns where needed;
- row-wise ops (softmax, norms, reductions over trailing dimensions) run as calls of a fixed number
  of rows (``ROW_BUDGET`` elements), so each call has the same shape and the same split across
  threads, and each row is computed by one thread.

That a row of a matrix product has the same bits in every call of a multiple of the block is MKL's
behaviour, measured here for 1-4 threads (the calibration checks two places of a 96-row call each
time; the tests check every row on the machine they run on), not a promise of MKL's. Thread counts
above the cores (3-4 threads on 2 cores) change some odd shapes (``Linear(100, 37)``) whatever the
block, 32 included.

Ops (CPU, float32/float64/bfloat16/float16, strided tensors; anything else takes the original
kernel): ``mm``, ``addmm`` (``Linear``, ``matmul``), ``bmm``, ``baddbmm``, ``_softmax``,
``_log_softmax`` (over the last dimension), ``native_layer_norm`` and ``_fused_rms_norm``
(recomputed per block from ``var_mean``/``mean``), ``sum`` and ``mean`` over trailing dimensions,
and ``_scaled_dot_product_flash_attention_for_cpu`` (``F.scaled_dot_product_attention``),
recomputed as padded ``bmm`` + softmax + ``bmm``.

Registration goes through ``torch.library.Library("aten", "IMPL")`` on the CPU dispatch key while
the context is active (about 0.1 ms to enter and leave). It acts on every thread of the process, and
autograd keeps working (the overrides sit below it).
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Self

import torch

__all__ = ["GEMM_ROWS", "ROW_BUDGET", "batch_invariant", "is_active"]

# Matrix products are called with a row count (batched products: an entry count) that is a multiple
# of a block, padded with zeros: each kind of product (shapes, dtype, layout, threads) gets the
# smallest block of CANDIDATES that its own first calls show to give rows the bits of a 32-row call
# (``_calibrated``), else GEMM_ROWS. Measured with MKL here (AVX-512, and its AVX2 code path) at 1-4
# threads: 4 rows suffice for every shape tried, 1 and 2 do not (other kernels below 4 rows).
GEMM_ROWS = 32
CANDIDATES: tuple[int, ...] = (4, 8, 16)
# Elements per call of a row-wise op (softmax, norms, reductions): the rows per block are
# ROW_BUDGET // row_length, a property of the layer.
ROW_BUDGET = 1 << 16

_FLOATS = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_lock = threading.Lock()
_depth = 0
# rows per padding block, by kind of product (a cache, filled by _calibrated; kept across contexts)
_blocks: dict[tuple[Any, ...], int] = {}
_lib: Any = None


def _plain(*tensors: Any) -> bool:
    """Tensors this module handles: dense CPU floats. Anything else goes to the original kernel."""
    return all(t is None or (isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.layout == torch.strided
                             and t.dtype in _FLOATS and not t.is_quantized)
               for t in tensors)


def _padded(x: torch.Tensor, rows: int, block: int) -> tuple[torch.Tensor, int]:
    """``x`` (rows first) copied into a fresh contiguous buffer of whole blocks, the tail zeroed."""
    n_blocks = max(1, -(-rows // block))
    buf = x.new_empty((n_blocks * block, *x.shape[1:]))  # new_empty is contiguous
    buf[:rows].copy_(x)
    buf[rows:].zero_()
    return buf, n_blocks


# --- matrix products ----------------------------------------------------------------------------

def _calibrated(key: tuple[Any, ...], product: Callable[[int], torch.Tensor]) -> int:
    """The rows per padding block for one kind of matrix product (``key``: its shapes but the rows,
    dtype, B's layout, the thread count): the smallest of ``CANDIDATES`` whose call gives 4 test rows
    the bits they have at rows 0-3 and 64-67 of a 96-row call, else ``GEMM_ROWS``. ``product(n)``
    computes an ``n``-row call with the test rows at those places (zeros elsewhere). Measured once per
    key and process (a cache): a 96-row product and one to three small ones."""
    block = _blocks.get(key)
    if block is None:
        ref = product(3 * GEMM_ROWS)
        block = GEMM_ROWS
        for b in CANDIDATES:
            got = product(b)[:4]
            if torch.equal(got, ref[:4]) and torch.equal(got, ref[64:68]):
                block = b
                break
        _blocks[key] = block
    return block


def _test_rows(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Fixed random test rows: which kernel runs does not depend on the values."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)


def _gemm_block(a: torch.Tensor, b: torch.Tensor, call: Callable[[torch.Tensor], torch.Tensor]) -> int:
    k = a.shape[1]

    def product(n: int) -> torch.Tensor:
        fill = _test_rows((4, k), a.dtype)
        buf = a.new_zeros((n, k))
        buf[:4] = fill
        if n > 64:
            buf[64:68] = fill
        return call(buf)

    return _calibrated(("mm", k, b.shape, b.stride(), a.dtype, torch.get_num_threads()), product)


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if not _plain(a, b) or a.dtype != b.dtype or a.dim() != 2 or b.dim() != 2:
        return torch.ops.aten.mm.out(a, b, out=a.new_empty(0))

    def call(buf: torch.Tensor) -> torch.Tensor:
        out = a.new_empty((buf.shape[0], b.shape[1]))
        return torch.ops.aten.mm.out(buf, b, out=out)

    rows = a.shape[0]
    return call(_padded(a, rows, _gemm_block(a, b, call))[0])[:rows]


def _addmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta: Any = 1, alpha: Any = 1) -> torch.Tensor:
    if not _plain(bias, a, b) or a.dtype != b.dtype or a.dim() != 2 or b.dim() != 2:
        return torch.ops.aten.addmm.out(bias, a, b, beta=beta, alpha=alpha, out=a.new_empty(0))
    rows = a.shape[0]
    per_row = bias.dim() == 2 and bias.shape[0] == rows and rows != 1
    if per_row:
        # a bias per row is one more row-first operand: the block is the plain product's
        block = _gemm_block(a, b, lambda buf: torch.ops.aten.mm.out(buf, b, out=a.new_empty((len(buf), b.shape[1]))))
        full_bias = _padded(bias, rows, block)[0]
        out = a.new_empty((full_bias.shape[0], b.shape[1]))
        torch.ops.aten.addmm.out(full_bias, _padded(a, rows, block)[0], b, beta=beta, alpha=alpha, out=out)
        return out[:rows]

    def call(buf: torch.Tensor) -> torch.Tensor:
        out = a.new_empty((buf.shape[0], b.shape[1]))
        return torch.ops.aten.addmm.out(bias, buf, b, beta=beta, alpha=alpha, out=out)

    return call(_padded(a, rows, _gemm_block(a, b, call))[0])[:rows]


def _round_up(n: int, q: int) -> int:
    return -(-n // q) * q


def _aligned_entries(x: torch.Tensor, total: int, cols: int) -> torch.Tensor:
    """``x`` (entries, rows, c) copied into ``total`` zeroed entries of ``cols`` columns whose
    entry stride is a multiple of 64 bytes."""
    entries, rows, c = x.shape
    q = max(1, 64 // x.element_size())
    buf = torch.empty_strided((total, rows, cols), (_round_up(rows * cols, q), cols, 1), dtype=x.dtype)
    buf.zero_()
    buf[:entries, :, :c].copy_(x)
    return buf


def _bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Blocked batched product. MKL's batched GEMM gives an entry other bits depending on where its
    matrices sit in memory (measured: entries whose stride is not a multiple of 64 bytes change with
    their position in the batch), so every entry of A, B and the result starts 64-byte aligned
    (B and the result padded with zero columns) and the calls have a fixed number of entries."""
    if not _plain(a, b) or a.dtype != b.dtype or a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0]:
        return torch.ops.aten.bmm.out(a, b, out=a.new_empty(0))
    entries, m, k = a.shape
    n = b.shape[2]
    q = max(1, 64 // a.element_size())
    n_pad = n
    while (m * n_pad) % q:   # the result's entries must be 64-byte aligned too (it is contiguous)
        n_pad += 1

    def call(a3: torch.Tensor, b3: torch.Tensor, total: int) -> torch.Tensor:
        out = a.new_empty((total, m, n_pad))
        torch.ops.aten.bmm.out(_aligned_entries(a3, total, k), _aligned_entries(b3, total, n_pad), out=out)
        return out

    def product(total: int) -> torch.Tensor:
        fill_a, fill_b = _test_rows((4, m, k), a.dtype), _test_rows((4, k, n), a.dtype)
        used = 68 if total > 64 else 4
        a3, b3 = a.new_zeros((used, m, k)), a.new_zeros((used, k, n))
        a3[:4], b3[:4] = fill_a, fill_b
        if used > 4:
            a3[64:], b3[64:] = fill_a, fill_b
        return call(a3, b3, total)

    block = _calibrated(("bmm", m, k, n, a.dtype, torch.get_num_threads()), product)
    out = call(a, b.expand(entries, k, n), _round_up(max(entries, 1), block))
    result = out[:entries, :, :n]
    return result if n_pad == n else result.contiguous()


def _baddbmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta: Any = 1, alpha: Any = 1) -> torch.Tensor:
    if not _plain(bias, a, b) or a.dtype != b.dtype or a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0]:
        return torch.ops.aten.baddbmm.out(bias, a, b, beta=beta, alpha=alpha, out=a.new_empty(0))
    product = _bmm(a, b)
    if alpha != 1:
        product = product * alpha
    if beta == 0:   # as baddbmm: the bias is ignored, NaN and inf included
        return product.expand(a.shape[0], a.shape[1], b.shape[2]).clone()
    return product + (bias if beta == 1 else bias * beta)


# --- row-wise ops ---------------------------------------------------------------------------------

def _block_rows(rows: int, width: int) -> tuple[int, int]:
    """Rows per block for rows of ``width`` elements, and the padded row count."""
    block = max(1, ROW_BUDGET // max(1, width))
    return block, max(1, -(-rows // block)) * block


def _row_blocks(x2d: torch.Tensor, fn: Callable[[torch.Tensor, slice], None]) -> None:
    """Call ``fn(block, slice)`` on fixed-size blocks of the zero-padded rows of ``x2d``."""
    rows = x2d.shape[0]
    block, _ = _block_rows(rows, math.prod(x2d.shape[1:]))
    buf, n_blocks = _padded(x2d, rows, block)
    for i in range(n_blocks):
        s = slice(i * block, (i + 1) * block)
        fn(buf[s], s)


def _lastdim_softmax(x: torch.Tensor, half_to_float: bool, op: Any) -> torch.Tensor:
    width = x.shape[-1]
    x2d = x.reshape(-1, width)
    out_dtype = torch.float32 if half_to_float and x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    out = torch.empty((_block_rows(x2d.shape[0], width)[1], width), dtype=out_dtype)
    _row_blocks(x2d, lambda blk, s: op(blk, 1, half_to_float, out=out[s]))
    return out[:x2d.shape[0]].reshape(x.shape)


def _softmax(x: torch.Tensor, dim: int, half_to_float: bool) -> torch.Tensor:
    if not _plain(x) or x.dim() == 0 or dim % x.dim() != x.dim() - 1 or x.numel() == 0:
        out = x.new_empty(0, dtype=torch.float32 if half_to_float else x.dtype)
        return torch.ops.aten._softmax.out(x, dim, half_to_float, out=out)
    return _lastdim_softmax(x, half_to_float, torch.ops.aten._softmax.out)


def _log_softmax(x: torch.Tensor, dim: int, half_to_float: bool) -> torch.Tensor:
    if not _plain(x) or x.dim() == 0 or dim % x.dim() != x.dim() - 1 or x.numel() == 0:
        out = x.new_empty(0, dtype=torch.float32 if half_to_float else x.dtype)
        return torch.ops.aten._log_softmax.out(x, dim, half_to_float, out=out)
    return _lastdim_softmax(x, half_to_float, torch.ops.aten._log_softmax.out)


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _layer_norm(x: torch.Tensor, normalized_shape: Sequence[int], weight: torch.Tensor | None,
                bias: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``native_layer_norm.out`` only wraps the functional op (calling it would come back here), so
    layer_norm is recomputed from ``var_mean``, row block by row block (in float32 for half types).
    Returns (output, mean, rstd) as the native kernel does, so its backward still applies."""
    k = len(normalized_shape)
    lead = tuple(x.shape[:x.dim() - k])
    stat = _stat_dtype(x)
    rows = math.prod(lead) if x.numel() else 0
    x2d = x.reshape(rows, *normalized_shape)
    total = _block_rows(rows, math.prod(normalized_shape))[1]
    out = x.new_empty((total, *normalized_shape))
    mean = x.new_empty((total, *([1] * k)), dtype=stat)
    rstd = x.new_empty((total, *([1] * k)), dtype=stat)
    dims = list(range(1, k + 1))

    def one(blk: torch.Tensor, s: slice) -> None:
        up = blk.to(stat)
        var, mu = torch.var_mean(up, dims, correction=0, keepdim=True)
        mean[s].copy_(mu)
        torch.rsqrt(var + eps, out=rstd[s])
        y = (up - mu) * rstd[s]
        if weight is not None:
            y = y * weight
        if bias is not None:
            y = y + bias
        out[s].copy_(y)

    _row_blocks(x2d, one)
    stats = (*lead, *([1] * k))
    return out[:rows].reshape(x.shape), mean[:rows].reshape(stats), rstd[:rows].reshape(stats)


def _rms_norm(x: torch.Tensor, normalized_shape: Sequence[int], weight: torch.Tensor | None,
              eps: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``_fused_rms_norm`` has no ``.out`` overload to call back into, so it is recomputed here as
    PyTorch's composite ``rms_norm`` does (in float32 for half types), row block by row block."""
    k = len(normalized_shape)
    lead = tuple(x.shape[:x.dim() - k])
    stat = _stat_dtype(x)
    eps_ = torch.finfo(stat).eps if eps is None else eps
    rows = math.prod(lead) if x.numel() else 0
    dims = list(range(1, k + 1))
    x2d = x.reshape(rows, *normalized_shape)
    total = _block_rows(rows, math.prod(normalized_shape))[1]
    out = x.new_empty((total, *normalized_shape))
    rstd = x.new_empty((total, *([1] * k)), dtype=stat)

    def one(blk: torch.Tensor, s: slice) -> None:
        up = blk.to(stat)
        ms = torch.ops.aten.mean.out(up * up, dims, True, out=rstd[s])
        torch.rsqrt(ms + eps_, out=rstd[s])
        y = up * rstd[s]
        if weight is not None:
            y = y * weight
        out[s].copy_(y)

    _row_blocks(x2d, one)
    return out[:rows].reshape(x.shape), rstd[:rows].reshape(*lead, *([1] * k))


def _trailing(x: torch.Tensor, dim: Sequence[int] | None) -> int:
    """How many trailing dimensions ``dim`` reduces (0 when it is not exactly the trailing ones)."""
    if not dim or x.dim() == 0:
        return 0
    norm = sorted({d % x.dim() for d in dim})
    if norm != list(range(x.dim() - len(norm), x.dim())) or len(norm) == x.dim():
        return 0
    return len(norm)


def _reduce(op: Any, x: torch.Tensor, dim: Sequence[int] | None, keepdim: bool,
            dtype: torch.dtype | None, default_dtype: torch.dtype) -> torch.Tensor:
    k = _trailing(x, dim)
    out_dtype = dtype or default_dtype
    if not _plain(x) or k == 0 or x.numel() == 0 or out_dtype not in _FLOATS:
        return op(x, dim, keepdim, dtype=dtype, out=x.new_empty(0, dtype=out_dtype))
    lead = tuple(x.shape[:x.dim() - k])
    rows = math.prod(lead)
    x2d = x.reshape(rows, *x.shape[x.dim() - k:])
    out = x.new_empty((_block_rows(rows, math.prod(x.shape[x.dim() - k:]))[1],), dtype=out_dtype)
    dims = list(range(1, k + 1))
    _row_blocks(x2d, lambda blk, s: op(blk, dims, False, dtype=dtype, out=out[s]))
    result = out[:rows].reshape(lead)
    return result.reshape(*lead, *([1] * k)) if keepdim else result


def _sum(x: torch.Tensor, dim: Sequence[int] | None, keepdim: bool = False, *,
         dtype: torch.dtype | None = None) -> torch.Tensor:
    default = torch.int64 if not (x.is_floating_point() or x.is_complex()) else x.dtype
    return _reduce(torch.ops.aten.sum.IntList_out, x, dim, keepdim, dtype, default)


def _mean(x: torch.Tensor, dim: Sequence[int] | None, keepdim: bool = False, *,
          dtype: torch.dtype | None = None) -> torch.Tensor:
    return _reduce(torch.ops.aten.mean.out, x, dim, keepdim, dtype, x.dtype)


# --- attention ------------------------------------------------------------------------------------

def _sdpa_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0, is_causal: bool = False,
              *, attn_mask: torch.Tensor | None = None, scale: float | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """CPU flash attention recomputed from blocked bmm and a row-wise softmax: (output, logsumexp)."""
    *batch, length, e = q.shape
    src, ev = k.shape[-2], v.shape[-1]
    entries = math.prod(batch)
    stat = _stat_dtype(q)
    factor = scale if scale is not None else 1.0 / math.sqrt(e)
    scores = _bmm(q.reshape(entries, length, e), k.reshape(entries, src, e).transpose(1, 2)).to(stat) * factor
    scores = scores.reshape(*batch, length, src)
    if is_causal:
        keep = torch.ones(length, src, dtype=torch.bool).tril(diagonal=src - length)
        scores = scores.masked_fill(~keep, -math.inf)
    if attn_mask is not None:
        scores = (scores.masked_fill(~attn_mask, -math.inf) if attn_mask.dtype == torch.bool
                  else scores + attn_mask.to(stat))
    lse = torch.logsumexp(scores, dim=-1)
    probs = _softmax(scores, -1, False)
    if dropout_p > 0.0:
        probs = torch.dropout(probs, dropout_p, True)
    out = _bmm(probs.to(v.dtype).reshape(entries, length, src), v.reshape(entries, src, ev))
    return out.reshape(*batch, length, ev), lse


_KERNELS: dict[str, Callable[..., Any]] = {
    "mm": _mm,
    "addmm": _addmm,
    "bmm": _bmm,
    "baddbmm": _baddbmm,
    "_softmax": _softmax,
    "_log_softmax": _log_softmax,
    "native_layer_norm": _layer_norm,
    "_fused_rms_norm": _rms_norm,
    "sum.dim_IntList": _sum,
    "mean.dim": _mean,
    "_scaled_dot_product_flash_attention_for_cpu": _sdpa_cpu,
}


def _register() -> Any:
    lib = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        # "Overriding a previously registered kernel": that is the point, and it is undone on exit.
        warnings.simplefilter("ignore", UserWarning)
        for name, fn in _KERNELS.items():
            lib.impl(name, fn, "CPU")
    return lib


def is_active() -> bool:
    """Whether batch-invariant kernels are registered now."""
    return _depth > 0


class batch_invariant(contextlib.ContextDecorator):
    """Inside it, Linear/matmul/bmm, softmax, layer_norm/rms_norm, trailing sum/mean and
    scaled_dot_product_attention give each row the same bits whatever the batch size and the thread
    count (PyTorch on CPU). Usable as ``with batch_invariant():`` or ``@batch_invariant()``; nests.

    >>> import torch
    >>> lin = torch.nn.Linear(512, 512)
    >>> x = torch.randn(64, 512)
    >>> with batch_invariant(), torch.no_grad():
    ...     bool((lin(x)[5] == lin(x[5:6])[0]).all())
    True
    """

    def __enter__(self) -> Self:
        global _depth, _lib
        with _lock:
            if _depth == 0:
                _lib = _register()
            _depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        global _depth, _lib
        with _lock:
            _depth -= 1
            if _depth == 0 and _lib is not None:
                _lib._destroy()  # restores the original kernels
                _lib = None
