"""Decoding values read from a file twinrun did not necessarily write, with bounds.

A trace, a results file or an env fingerprint may come from anyone: its JSON may be 100,000 levels
deep (``RecursionError`` in the decoder, or in code that walks it), a shape may be negative or
name 2**64 elements, and a column may hold a value of any SQLite type. These functions decode such
values with bounds and raise the caller's one-line error (naming the file) for anything else.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from typing import Any

from ._errors import BadTraceError, TwinrunError

__all__ = ["DEFAULT_MAX_JSON_DEPTH", "decode_json", "decode_shape", "expect_type", "json_depth", "read_bounded",
           "sql_type"]

DEFAULT_MAX_JSON_DEPTH = 64
_MAX_JSON_BYTES = 32 * 2**20
_MAX_NDIM = 32
_MAX_ELEMENTS = 2**48

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON ``text``, found without recursion.

    >>> json_depth('{"a": [1, [2]], "b": "[[["}')
    3
    """
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub('""', text)):
        if m.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def decode_json(raw: Any, *, what: str, path: str | os.PathLike, error: type[TwinrunError] = BadTraceError,
                fix: str = "record it again", max_bytes: int = _MAX_JSON_BYTES,
                max_depth: int = DEFAULT_MAX_JSON_DEPTH, types: tuple[type, ...] | None = None) -> Any:
    """JSON text from a file, decoded with bounds: at most ``max_bytes`` long, at most ``max_depth``
    deep (deep JSON otherwise ends in RecursionError, in the decoder or in code that walks it),
    and of one of ``types`` when given. Anything else raises ``error`` naming ``what`` and ``path``.

    >>> decode_json('{"a": 1}', what="the header", path="x.trace", types=(dict,))
    {'a': 1}
    >>> decode_json("5", what="the header", path="x.trace", types=(dict,))
    Traceback (most recent call last):
    ...
    twinrun._errors.BadTraceError: x.trace is corrupt: the header is a int, not a JSON object; record it again
    """
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise error(f"{path} is corrupt: {what} is not UTF-8 text; {fix}") from None
    if not isinstance(raw, str):
        raise error(f"{path} is corrupt: {what} is {sql_type(raw)}, not JSON text; {fix}")
    if len(raw) > max_bytes:
        raise error(f"{path} is corrupt: {what} is {len(raw):,} characters long, more than twinrun reads "
                    f"({max_bytes:,}); {fix}")
    if json_depth(raw) > max_depth:
        raise error(f"{path} is corrupt: {what} is JSON nested more than {max_depth} deep; {fix}")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise error(f"{path} is corrupt: {what} is not JSON ({str(e)[:80]}); {fix}") from None
    if types is not None and not isinstance(value, types):
        names = " or ".join(_JSON_NAMES.get(t, t.__name__) for t in types)
        raise error(f"{path} is corrupt: {what} is a {type(value).__name__}, not {names}; {fix}")
    return value


def read_bounded(path: str | os.PathLike, *, what: str, fix: str, error: type[TwinrunError] = BadTraceError,
                 max_bytes: int = _MAX_JSON_BYTES) -> bytes:
    """The bytes of a small regular file (a fingerprint), read through a non-blocking descriptor: a FIFO,
    a device, a folder or a file over ``max_bytes`` is one ``error`` line naming ``path``, never a hang."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such file; {fix}") from None
    except OSError as e:
        why = ("permission denied" if e.errno in (errno.EACCES, errno.EPERM)
               else "a symbolic link loop" if e.errno == errno.ELOOP else e.strerror)
        raise error(f"cannot read {path}: {why}; {fix}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, device or socket)"
            raise error(f"{path} is {kind}, not {what}; {fix}")
        if st.st_size > max_bytes:
            raise error(f"{path} is {st.st_size:,} bytes, more than {what} ever is ({max_bytes:,}); {fix}")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise error(f"{path} is more than {max_bytes:,} bytes, more than {what} ever is; {fix}")
        return b"".join(chunks)
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror}; {fix}") from None
    finally:
        os.close(fd)


_JSON_NAMES = {dict: "a JSON object", list: "a JSON array", str: "a JSON string", int: "a whole number",
               float: "a number"}


def decode_shape(raw: Any, *, path: str | os.PathLike, error: type[TwinrunError] = BadTraceError,
                 fix: str = "record the run again", max_ndim: int = _MAX_NDIM,
                 max_elements: int = _MAX_ELEMENTS) -> tuple[int, ...]:
    """A tensor shape stored as JSON (``"[2, 3]"``): at most ``max_ndim`` whole numbers >= 0 whose
    product is at most ``max_elements``.

    >>> decode_shape("[2, 3]", path="x.trace")
    (2, 3)
    >>> decode_shape("[-1]", path="x.trace", fix="record it again")
    Traceback (most recent call last):
    ...
    twinrun._errors.BadTraceError: x.trace is corrupt: a shape [-1] is not a list of whole numbers >= 0; record it again
    """
    if not isinstance(raw, str):   # the writer stores shapes as text; a blob or number is not one
        raise error(f"{path} is corrupt: a shape is {sql_type(raw)}, not JSON text; {fix}")
    value = decode_json(raw, what="a shape", path=path, error=error, fix=fix, max_bytes=4096, max_depth=1)
    if (not isinstance(value, list) or len(value) > max_ndim
            or not all(type(s) is int and s >= 0 for s in value)):
        shown = raw if isinstance(raw, str) and len(raw) <= 60 else f"{str(raw)[:57]}..."
        raise error(f"{path} is corrupt: a shape {shown} is not a list of whole numbers >= 0; {fix}")
    n = 1
    for s in value:
        n *= s
    if n > max_elements:
        raise error(f"{path} is corrupt: a shape {value} has {n:,} elements, more than any real tensor; {fix}")
    return tuple(value)


def sql_type(value: Any) -> str:
    """How a message names an SQLite value's type: NULL, an integer, a real number, text, a blob."""
    if value is None:
        return "NULL"
    return {int: "an integer", float: "a real number", str: "text", bytes: "a blob"}.get(type(value),
                                                                                     type(value).__name__)


def expect_type(value: Any, types: type | tuple[type, ...], *, what: str, path: str | os.PathLike,
                error: type[TwinrunError] = BadTraceError, fix: str = "record it again") -> Any:
    """``value`` when it is of ``types`` (``int`` excludes ``bool``; SQLite has no bool), else ``error``.

    >>> expect_type(3, int, what="a step", path="x.trace")
    3
    >>> expect_type("3", int, what="a step", path="x.trace")
    Traceback (most recent call last):
    ...
    twinrun._errors.BadTraceError: x.trace is corrupt: a step is text, not integer; record it again
    """
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, types) and not isinstance(value, bool):
        return value
    want = " or ".join({int: "integer", float: "real", str: "text", bytes: "blob",
                        type(None): "NULL"}.get(t, t.__name__) for t in types)
    raise error(f"{path} is corrupt: {what} is {sql_type(value)}, not {want}; {fix}")
