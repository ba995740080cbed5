"""TensorFlow / Keras adapter: seeding, determinism switches, environment facts, tensor conversion."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import config as _tf_config

from ._base import Adapter, Switch

__all__ = ["TensorflowAdapter"]


def _set_op_determinism(on: bool) -> None:
    if on:
        tf.config.experimental.enable_op_determinism()
    else:  # the public API has no disable; the private switch restores the previous state
        _tf_config.disable_op_determinism()


class TensorflowAdapter(Adapter):
    name = "tensorflow"
    module = "tensorflow"

    def seed(self, seed: int) -> dict:
        done = {}
        try:
            import keras

            # Seeds Python, NumPy, TF and Keras's own seed generator in one call.
            keras.utils.set_random_seed(seed % 2**32)
            done["keras.utils.set_random_seed"] = seed % 2**32
        except ImportError:
            pass
        tf.random.set_seed(seed % 2**32)
        done["tf.random.set_seed"] = seed % 2**32
        return done

    def switches(self, *, strict: bool, threads: int | None) -> list[Switch]:
        out = [
            Switch("tf.config.experimental.enable_op_determinism", _tf_config.is_op_determinism_enabled,
                   _set_op_determinism, True,
                   "deterministic kernels; TensorFlow then raises on ops that have none and on unseeded random ops"),
            Switch("tf.config.experimental.tensor_float_32_execution",
                   tf.config.experimental.tensor_float_32_execution_enabled,
                   tf.config.experimental.enable_tensor_float_32_execution, False,
                   "TF32 rounds float32 matmul and conv inputs to 10 mantissa bits on Ampere and newer GPUs"),
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

    def environment(self) -> dict:
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

    def is_tensor(self, x: Any) -> bool:
        return isinstance(x, (tf.Tensor, tf.Variable))

    def to_numpy(self, x: Any) -> np.ndarray:
        a = x.numpy()
        if a.dtype.name == "bfloat16":  # ml_dtypes bfloat16: hash its raw bits
            a = a.view(np.int16)
        return np.ascontiguousarray(a)

    def dtype_name(self, x: Any) -> str:
        return x.dtype.name
