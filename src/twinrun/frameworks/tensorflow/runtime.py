"""TensorFlow's side of the adapter, imported once the program has imported TensorFlow: seeding,
determinism switches, environment facts, tensor conversion, and the hook that records ``model.fit``."""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import config as _tf_config

from ..base import RecorderLike, Switch
from . import KERAS_TRAINER, UnseededRandomOpError

__all__ = ["dtype_name", "environment", "install", "is_tensor", "seed", "switches", "to_numpy"]

_TF_SEED_MESSAGE = "Random ops require a seed"


# Decorator frames of TensorFlow's public API, which say nothing about the op.
_WRAPPER_FRAMES = {"error_handler", "op_dispatch_handler", "wrapper", "new_func", "_wrapper", "wrapped",
                   "__call__", "_call", "decorated"}


def _user_call_site() -> tuple[str, str, int]:
    """(the TensorFlow/Keras function the user called, file, line of the call) for the current stack."""
    frames = traceback.extract_stack()[:-1]
    inner = "a random op"
    for frame in reversed(frames):
        path = frame.filename.replace("\\", "/")
        if any(part in path for part in ("/tensorflow/", "/keras/", "/twinrun/", "/tf_keras/", "<frozen")):
            if frame.name not in _WRAPPER_FRAMES and not frame.name.startswith("<"):
                inner = frame.name
            continue
        return inner, frame.filename, frame.lineno or 0
    return inner, "?", 0


class _UnseededRandomOps:
    """Wraps TensorFlow's ``get_seed``: under op determinism, an unseeded random op raises a twinrun
    error that names the op and the fix (strict), or warns and draws an unseeded seed (non-strict)."""

    def __init__(self):
        self.mode = "tensorflow"   # untouched: TensorFlow's own behaviour
        self._original: Callable | None = None
        self._warned: set[str] = set()

    def get(self) -> str:
        return self.mode

    def set(self, mode: str) -> None:
        from tensorflow.python.framework import random_seed

        if mode == "tensorflow":
            if self._original is not None:
                random_seed.get_seed = self._original
                self._original = None
        elif self._original is None:
            self._original = original = random_seed.get_seed

            def get_seed(op_seed, _original=original):
                try:
                    return _original(op_seed)
                except RuntimeError as e:
                    if _TF_SEED_MESSAGE not in str(e):
                        raise
                    return self._unseeded()

            random_seed.get_seed = get_seed
        self.mode = mode

    def _unseeded(self):
        op, filename, lineno = _user_call_site()
        where = f"{filename}:{lineno}"
        msg = (f"TensorFlow random op {op}() at {where} has no seed while op determinism is on; "
               "seed it: call twinrun.seed_everything(SEED) (sets tf.random.set_seed) before it, or pass "
               "seed=seeds.int('data') (any named stream) to this call")
        if self.mode == "raise":
            raise UnseededRandomOpError(msg) from None
        if where not in self._warned:
            self._warned.add(where)
            warnings.warn_explicit(msg + "; it stays unseeded (twinrun.deterministic(strict=True) raises instead)",
                                   RuntimeWarning, filename, lineno)
        # The C++ kernels refuse (0, 0) under determinism: draw a seed, as an unseeded op would.
        return tuple(int.from_bytes(os.urandom(4), "little") % (2**31 - 1) + 1 for _ in range(2))


_unseeded_random_ops = _UnseededRandomOps()


def _set_op_determinism(on: bool) -> None:
    if on:
        tf.config.experimental.enable_op_determinism()
    else:  # the public API has no disable; the private switch restores the previous state
        _tf_config.disable_op_determinism()


def seed(seed: int) -> dict:
    seed %= 2**32
    done = {}
    keras = sys.modules.get("keras")
    # Only a Keras the program imported, and only once it finished importing (TensorFlow finishes
    # first when Keras imports it). Unseeded Keras initialisers and layers draw their seeds from
    # Python's `random`, which the NumPy adapter seeds, so a Keras imported later is covered too.
    if keras is not None and not getattr(getattr(keras, "__spec__", None), "_initializing", False):
        # Seeds Python, NumPy, TF and Keras's global SeedGenerator in one call.
        keras.utils.set_random_seed(seed)
        done["keras.utils.set_random_seed"] = seed
    tf.random.set_seed(seed)
    done["tf.random.set_seed"] = seed
    return done

def switches(*, strict: bool, threads: int | None) -> list[Switch]:
    out = [
        Switch("tf.config.experimental.enable_op_determinism", _tf_config.is_op_determinism_enabled,
               _set_op_determinism, True,
               "deterministic kernels; TensorFlow then raises on ops that have none and on unseeded random ops"),
        Switch("tf.config.experimental.tensor_float_32_execution",
               tf.config.experimental.tensor_float_32_execution_enabled,
               tf.config.experimental.enable_tensor_float_32_execution, False,
               "TF32 rounds float32 matmul and conv inputs to 10 mantissa bits on Ampere and newer GPUs"),
        Switch("twinrun.tensorflow.unseeded_random_ops", _unseeded_random_ops.get, _unseeded_random_ops.set,
               "raise" if strict else "warn",
               "with op determinism on, TensorFlow refuses random ops without a seed; twinrun "
               + ("raises an error naming the op and its seed" if strict else
                  "warns, naming the op and its seed, and lets it draw an unseeded value")),
    ]
    if threads is not None:
        def set_threads(n, f=tf.config.threading.set_intra_op_parallelism_threads):
            try:
                f(n)
            except RuntimeError:  # the runtime has started: the count can no longer change
                pass

        def set_inter(n, f=tf.config.threading.set_inter_op_parallelism_threads):
            try:
                f(n)
            except RuntimeError:
                pass

        def threads_too_late():
            if tf.config.threading.get_intra_op_parallelism_threads() != threads:
                return ("TensorFlow's runtime had already started, so its thread count can no longer change; "
                        "call twinrun.deterministic(threads=N) before the first TensorFlow operation")
            return None

        out.append(Switch("tf.config.threading.intra_op_parallelism_threads",
                          tf.config.threading.get_intra_op_parallelism_threads, set_threads, threads,
                          "reductions are split by thread; another count sums in another order",
                          too_late=threads_too_late))
        out.append(Switch("tf.config.threading.inter_op_parallelism_threads",
                          tf.config.threading.get_inter_op_parallelism_threads, set_inter, 1,
                          "independent ops run concurrently; one at a time keeps their order fixed"))
    return out

def environment() -> dict:
    info: dict[str, Any] = {
        "version": tf.__version__,
        "build": {k: str(v) for k, v in tf.sysconfig.get_build_info().items()},
        "op_determinism": _tf_config.is_op_determinism_enabled(),
        "tensor_float_32": tf.config.experimental.tensor_float_32_execution_enabled(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
    }
    try:
        import keras

        info["keras"] = keras.__version__
    except ImportError:
        pass
    return info

def is_tensor(x: Any) -> bool:
    return isinstance(x, (tf.Tensor, tf.Variable, tf.IndexedSlices)) or _is_keras_variable(x)

def to_numpy(x: Any) -> np.ndarray:
    if _is_keras_variable(x):
        x = x.value
    if isinstance(x, tf.IndexedSlices):
        x = tf.convert_to_tensor(x)
    a = x.numpy()
    if a.dtype.name == "bfloat16":  # ml_dtypes bfloat16: hash its raw bits
        a = a.view(np.int16)
    return np.ascontiguousarray(a)

def dtype_name(x: Any) -> str:
    if _is_keras_variable(x):
        return str(x.dtype)
    return x.dtype.name


def install(recorder: RecorderLike) -> Callable[[], None]:
    """Record every ``model.fit`` batch (Keras on the TensorFlow backend), now or once Keras is imported."""
    from .. import when_imported

    state: dict[str, Any] = {"uninstall": None, "active": True}

    def hook(_module=None):
        if state["active"] and state["uninstall"] is None:
            from .keras_trace import install

            state["uninstall"] = install(recorder)

    trainer = sys.modules.get(KERAS_TRAINER)
    if trainer is not None and not getattr(trainer.__spec__, "_initializing", False):
        hook()
    else:  # Keras not imported yet (or still importing TensorFlow): hook once its trainer exists
        when_imported(KERAS_TRAINER, hook)

    def uninstall() -> None:
        state["active"] = False
        if state["uninstall"] is not None:
            state["uninstall"]()
            state["uninstall"] = None

    return uninstall


def _is_keras_variable(x: Any) -> bool:
    keras = sys.modules.get("keras")
    var = getattr(keras, "Variable", None) if keras is not None else None
    return var is not None and isinstance(x, var)
