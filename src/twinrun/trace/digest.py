"""The digest and statistics kernel: what every recorded tensor is reduced to.

A digest is the 128-bit xxh3 of ``dtype[shape]`` followed by the tensor's bytes (little-endian),
hashed through the buffer protocol without a copy; statistics (l2 norm, mean, max |x|, count of
non-finite values) are computed in float64. ``digest_and_stats`` does both in one pass over memory.

>>> import numpy as np
>>> len(digest(np.arange(6).reshape(2, 3)))
32
>>> stats(np.array([3.0, 4.0, np.nan], np.float32))
(5.0, 3.5, 4.0, 1)
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import xxhash

__all__ = ["RAW_DTYPES", "SMALL", "STORAGE", "as_float", "contiguous", "digest", "digest_and_stats", "digest_prefix",
           "dtype_name", "sample_digests", "segment_sums", "stats"]

# dtype name -> how its value is stored (little-endian). Dtypes NumPy lacks are kept as raw
# same-width integer bits, exactly as adapters hand them over (bf16 as int16, float8 as uint8).
STORAGE = {
    "bool": "|b1",
    "int8": "|i1", "int16": "<i2", "int32": "<i4", "int64": "<i8",
    "uint8": "|u1", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8",
    "float16": "<f2", "float32": "<f4", "float64": "<f8",
    "complex64": "<c8", "complex128": "<c16",
    "bfloat16": "<i2",
    "float8_e4m3fn": "|u1", "float8_e5m2": "|u1", "float8_e4m3fnuz": "|u1", "float8_e5m2fnuz": "|u1",
}
RAW_DTYPES = frozenset(k for k, v in STORAGE.items() if v[1] in "iu" and not k.startswith(("int", "uint")))


def contiguous(array: np.ndarray) -> np.ndarray:
    """``array`` as C-contiguous little-endian memory (copied only when it is not already)."""
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":  # digests are of little-endian bytes, as every tensor here is
        array = array.astype(array.dtype.newbyteorder("<"))
    return array


# A cache, not state: the same few (dtype, shape) prefixes recur every step, and a dict lookup is
# cheaper than formatting (or lru_cache). Cleared when it grows past 4096 entries.
_PREFIXES: dict[tuple[str, tuple[int, ...]], bytes] = {}


def digest_prefix(dtype: str, shape: tuple[int, ...]) -> bytes:
    """``dtype[shape]`` as bytes: what a digest hashes before the tensor's bytes."""
    key = (dtype, shape)
    prefix = _PREFIXES.get(key)
    if prefix is None:
        if len(_PREFIXES) > 4096:
            _PREFIXES.clear()
        prefix = _PREFIXES[key] = f"{dtype}[{','.join(map(str, shape))}]".encode()
    return prefix


_DTYPE_NAMES: dict[np.dtype[Any], str] = {}


def dtype_name(dt: np.dtype[Any]) -> str:
    """``str(dt)``, cached: str() of a NumPy dtype runs Python code (microseconds per event), and the
    same few dtypes recur every step."""
    name = _DTYPE_NAMES.get(dt)
    if name is None:
        if len(_DTYPE_NAMES) > 256:
            _DTYPE_NAMES.clear()
        name = _DTYPE_NAMES[dt] = str(dt)
    return name


def digest(array: np.ndarray, dtype: str | None = None) -> str:
    """128-bit xxh3 of ``dtype`` + shape + the array's bytes, as 32 hex characters.

    The bytes are hashed through the buffer protocol, without a copy (a non-contiguous array is made
    contiguous first). ``dtype`` is the tensor's real dtype name (``"bfloat16"`` for a bf16 tensor
    handed over as its int16 bits); by default the array's own.

    >>> digest(np.zeros(3, np.float32)) == digest(np.zeros(3, np.float64))
    False
    """
    if type(array) is not np.ndarray:
        array = np.asarray(array)
    if array.dtype.byteorder == ">":
        array = contiguous(array)
    h = xxhash.xxh3_128(digest_prefix(dtype or dtype_name(array.dtype), array.shape))
    try:  # asking first (array.flags) costs as much as hashing a small tensor
        h.update(array)  # type: ignore[arg-type]  # ndarray implements the buffer protocol
    except ValueError:  # not C-contiguous
        h.update(np.ascontiguousarray(array))  # type: ignore[arg-type]
    return h.hexdigest()


def sample_digests(array: np.ndarray, dtype: str) -> bytes:
    """Binary digests (16 bytes each) of each slice along dim 0."""
    out = bytearray()
    prefix = digest_prefix(dtype, array.shape[1:])
    for row in array:
        h = xxhash.xxh3_128(prefix)
        if row.size:
            h.update(row)
        out += h.digest()
    return bytes(out)


def as_float(array: np.ndarray, dtype: str) -> np.ndarray | None:
    """The values as floats (float64 for ints), or None for raw dtypes without a NumPy decoder."""
    if dtype == "bfloat16" and array.dtype.kind in "iu":
        return (array.astype(np.int32) << 16).view(np.float32) if array.dtype.itemsize == 2 else None
    if dtype in RAW_DTYPES and array.dtype.kind in "iu":
        return None  # float8: bits only
    if array.dtype.kind == "c":
        magnitude: np.ndarray = np.abs(array)
        return magnitude
    if array.dtype.kind in "biu":
        return array.astype(np.float64)
    if array.dtype.kind == "f":
        return array
    try:  # e.g. ml_dtypes' bfloat16 from JAX
        converted: np.ndarray = array.astype(np.float32)
        return converted
    except (TypeError, ValueError):
        return None


# Stats read every element of every recorded tensor, which makes them most of the cost of tracing.
# Blocks of _CHUNK elements are cast to float64 into a reused buffer (512 KiB: stays in cache, and
# no float64 copy of the whole tensor), then each row of _ROW values is reduced by BLAS ``ddot``:
# the products x*x and x*1 and every addition are float64 operations. Rows are short enough that
# BLAS keeps to the calling thread (OpenBLAS threads ddot only above 10,000 elements): BLAS threads
# started inside the user's training loop crawl when the cores are busy. About 0.45 ns per float32
# element in all, against 0.65 for einsum over the cast chunk (AVX-512 EPYC, one core).
_ROW = 4096
SMALL = _ROW   # elements: a float32 tensor of at most this many has its stats from segment_sums
_CHUNK = 16 * _ROW
_local = threading.local()   # one cast buffer per thread
_ONES = np.ones(_ROW)
_ONES.flags.writeable = False


def _einsum_rowdot(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> Any:
    return np.einsum("...i,...i->...", a, b, out=out)


# NumPy < 2 has no vecdot ufunc; einsum is slower but the same float64 arithmetic.
_rowdot: Callable[..., Any] = getattr(np, "vecdot", _einsum_rowdot)


def _cast_buffer() -> np.ndarray:
    buf: np.ndarray | None = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = np.empty(_CHUNK, np.float64)
    return buf


_F32 = np.dtype(np.float32)
_ZERO = np.zeros(1, np.intp)
_ZERO.flags.writeable = False


def segment_sums(x32: np.ndarray, starts: np.ndarray,
                 buf: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per segment of a 1-d float32 array (segments begin at ``starts`` and run to the next start):
    sum of squares and sum in float64, max and min.

    One call for all the small tensors of a step (``twinrun.trace.batch``): a few nanoseconds per
    tensor instead of the microseconds of a NumPy call each. The squares of float32 values are exact
    in float64 and every addition is a float64 one. A lone small float32 tensor goes through the same
    arithmetic (``starts = [0]``, see ``_sums64``), so its stats are bit for bit those of the batch.
    ``buf``: float64 scratch of at least twice ``x32.size`` (fresh megabyte arrays cost a page fault
    per 4 KiB, more than the sums).

    >>> ss, total, hi, lo = segment_sums(np.array([3, 4, 1, -2], np.float32), np.array([0, 2]))
    >>> ss.tolist(), total.tolist(), hi.tolist(), lo.tolist()
    ([25.0, 5.0], [7.0, -1.0], [4.0, 1.0], [3.0, -2.0])
    """
    n = x32.size
    if buf is None:
        x, sq = x32.astype(np.float64), None
    else:
        x, sq = buf[:n], buf[n:2 * n]
        np.copyto(x, x32, casting="unsafe")
    sq = np.multiply(x, x, out=sq)
    return (np.add.reduceat(sq, starts), np.add.reduceat(x, starts),
            np.maximum.reduceat(x32, starts), np.minimum.reduceat(x32, starts))


def _sums64(flat: np.ndarray, h: Any = None) -> tuple[float, float, Any, Any]:
    """Sum of squares and sum of a 1-d array, every product and addition in float64, and its
    largest and smallest value. With ``h`` (an xxh3 hash), also feeds it the array's bytes, block
    by block while they are in cache (``flat`` must then be C-contiguous)."""
    n = flat.size
    cast = flat.dtype != np.float64
    if 0 < n <= _ROW and flat.dtype == _F32:
        if h is not None:
            h.update(flat)
        ss, total, hi, lo = segment_sums(flat, _ZERO)
        return float(ss[0]), float(total[0]), hi[0], lo[0]
    if n <= _ROW:
        if h is not None:
            h.update(flat)
        b = flat.astype(np.float64) if cast else flat
        return float(_rowdot(b, b)), float(np.add.reduce(b)), np.maximum.reduce(flat), np.minimum.reduce(flat)
    buf = _cast_buffer() if cast else None
    parts = np.empty((2, -(-n // _ROW)))  # per-row sums of squares and sums, added up at the end
    ends = np.empty((2, -(-n // _CHUNK)), flat.dtype)  # per-block max and min
    j = 0
    for k, i in enumerate(range(0, n, _CHUNK)):
        b = flat[i:i + _CHUNK]
        if h is not None:
            h.update(b)
        ends[0, k], ends[1, k] = np.maximum.reduce(b), np.minimum.reduce(b)
        if buf is not None:
            np.copyto(buf[:b.size], b, casting="unsafe")
            b = buf[:b.size]
        rows = b.size // _ROW
        if rows:
            m = b[:rows * _ROW].reshape(rows, _ROW)
            _rowdot(m, m, out=parts[0, j:j + rows])
            _rowdot(m, _ONES, out=parts[1, j:j + rows])
            j += rows
        if rows * _ROW < b.size:
            tail = b[rows * _ROW:]
            parts[0, j], parts[1, j] = _rowdot(tail, tail), np.add.reduce(tail)
            j += 1
    ss, total = np.add.reduce(parts[:, :j], axis=1)
    return float(ss), float(total), np.maximum.reduce(ends[0]), np.minimum.reduce(ends[1])


def _decoded(array: np.ndarray, dtype: str) -> np.ndarray | None:
    # Integers are cast block by block in _sums64 rather than copied whole to float64.
    return array if array.dtype.kind in "biu" and dtype not in RAW_DTYPES else as_float(array, dtype)


def _finish(flat: np.ndarray, ss: float, total: float, hi: Any, lo: Any) -> tuple[float, float, float, int]:
    if math.isfinite(ss) and math.isfinite(total):
        # Finite float64 sums mean every value was finite: the count is exactly 0. The max is
        # taken on the values as they are: comparisons round nothing (np.abs would copy).
        return math.sqrt(ss), total / flat.size, max(float(hi), -float(lo)), 0
    finite = np.isfinite(flat)
    nonfinite = int(flat.size - np.count_nonzero(finite))
    good = flat[finite].astype(np.float64)
    if good.size == 0:
        return 0.0, 0.0, 0.0, nonfinite
    # squares of huge finite float64 values overflow; scale by the largest to keep the norm finite
    maxabs = float(np.max(np.abs(good)))
    l2 = maxabs * float(np.sqrt(np.sum((good / maxabs) ** 2))) if maxabs else 0.0
    return l2, float(np.mean(good)), maxabs, nonfinite


def stats(array: np.ndarray, dtype: str | None = None) -> tuple[float, float, float, int]:
    """``(l2, mean, maxabs, nonfinite)`` computed in float64.

    ``l2``, ``mean`` and ``maxabs`` are over the finite values; ``nonfinite`` counts the others
    (NaN, +-inf). Raw dtypes that NumPy cannot decode (float8) give NaN stats.
    """
    array = np.asarray(array)
    x = _decoded(array, dtype or str(array.dtype))
    if x is None:
        return math.nan, math.nan, math.nan, 0
    if x.size == 0:
        return 0.0, 0.0, 0.0, 0
    flat = x.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):  # handled in _finish, not the user's business
        return _finish(flat, *_sums64(flat))


def digest_and_stats(array: np.ndarray, dtype: str) -> tuple[str, tuple[float, float, float, int]]:
    """``(digest(array, dtype), stats(array, dtype))`` of a C-contiguous little-endian array, in
    one pass over its memory when its values need no decoding (a large tensor is read from memory
    once, not twice)."""
    if array.size == 0 or _decoded(array, dtype) is not array:
        return digest(array, dtype), stats(array, dtype)
    h = xxhash.xxh3_128(digest_prefix(dtype, array.shape))
    flat = array.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        sums = _sums64(flat, h)
        return h.hexdigest(), _finish(flat, *sums)
