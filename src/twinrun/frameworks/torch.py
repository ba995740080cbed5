"""PyTorch adapter: seeding, determinism switches, environment facts and tensor conversion.

Only this package imports torch, and only when the user's program already has.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ._base import Adapter, Switch

__all__ = ["TorchAdapter"]

# dtypes NumPy has no equivalent for: hash and store their raw bits through a same-width view.
_RAW_VIEWS = {
    torch.bfloat16: torch.int16,
}
for _name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"):
    if hasattr(torch, _name):
        _RAW_VIEWS[getattr(torch, _name)] = torch.uint8

CUBLAS_WORKSPACE = ":4096:8"


def _env_switch(var: str, want: str, note: str, too_late=None) -> Switch:
    def get():
        return os.environ.get(var)

    def set_(value):
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value

    return Switch(name=var, get=get, set=set_, want=want, note=note, too_late=too_late)


class TorchAdapter(Adapter):
    name = "torch"
    module = "torch"

    def seed(self, seed: int) -> dict:
        torch.manual_seed(seed)  # seeds the CPU generator and every CUDA device's
        done = {"torch.manual_seed": seed}
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
            done["torch.cuda.manual_seed_all"] = seed
        return done

    def switches(self, *, strict: bool, threads: int | None) -> list[Switch]:
        def get_algos():
            return {
                "enabled": torch.are_deterministic_algorithms_enabled(),
                "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            }

        def set_algos(v):
            torch.use_deterministic_algorithms(v["enabled"], warn_only=v["warn_only"])

        def attr_switch(obj, attr, label, want, note):
            return Switch(label, lambda: getattr(obj, attr), lambda v: setattr(obj, attr, v), want, note)

        def cublas_too_late():
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                return ("CUDA was already initialised when CUBLAS_WORKSPACE_CONFIG was set, so cuBLAS "
                        "ignores it; call twinrun.deterministic() before the first CUDA operation")
            return None

        import torch.utils.deterministic as tud

        out = [
            Switch("torch.use_deterministic_algorithms", get_algos, set_algos,
                   {"enabled": True, "warn_only": not strict},
                   "makes ops with a nondeterministic implementation use a deterministic one, or "
                   + ("raise" if strict else "warn")),
            attr_switch(torch.backends.cudnn, "deterministic", "torch.backends.cudnn.deterministic", True,
                        "cuDNN picks only deterministic convolution algorithms"),
            attr_switch(torch.backends.cudnn, "benchmark", "torch.backends.cudnn.benchmark", False,
                        "autotuning picks algorithms by timing, which differs run to run"),
            attr_switch(torch.backends.cuda.matmul, "allow_tf32", "torch.backends.cuda.matmul.allow_tf32", False,
                        "TF32 matmuls round inputs to 10 mantissa bits on Ampere and newer GPUs"),
            attr_switch(torch.backends.cudnn, "allow_tf32", "torch.backends.cudnn.allow_tf32", False,
                        "TF32 convolutions round inputs to 10 mantissa bits on Ampere and newer GPUs"),
            Switch("torch.float32_matmul_precision", torch.get_float32_matmul_precision,
                   torch.set_float32_matmul_precision, "highest",
                   "'high' or 'medium' allow TF32 or bfloat16 internally for float32 matmuls"),
            attr_switch(tud, "fill_uninitialized_memory", "torch.utils.deterministic.fill_uninitialized_memory",
                        True, "torch.empty memory is filled (NaN) so that reading it cannot differ run to run"),
            _env_switch("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE,
                        "cuBLAS needs a fixed workspace to be deterministic on CUDA >= 10.2", cublas_too_late),
        ]
        if threads is not None:
            out.append(Switch("torch.num_threads", torch.get_num_threads, torch.set_num_threads, threads,
                              "reductions are split by thread; another count sums in another order"))
        return out

    def environment(self) -> dict:
        info: dict[str, Any] = {
            "version": torch.__version__,
            "cuda": torch.version.cuda,
            "hip": getattr(torch.version, "hip", None),
            "git": getattr(torch.version, "git_version", None),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "num_threads": torch.get_num_threads(),
            "num_interop_threads": torch.get_num_interop_threads(),
            "mkl": torch.backends.mkl.is_available(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "openmp": torch.backends.openmp.is_available(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "deterministic_algorithms_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "fill_uninitialized_memory": _fill_uninitialized_memory(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "config": _parse_config(torch.__config__.show()),
        }
        if torch.cuda.is_available():
            info["cudnn"] = torch.backends.cudnn.version()
            info["gpus"] = [
                {"name": torch.cuda.get_device_name(i),
                 "capability": ".".join(map(str, torch.cuda.get_device_capability(i)))}
                for i in range(torch.cuda.device_count())
            ]
        return info

    def is_tensor(self, x: Any) -> bool:
        return isinstance(x, torch.Tensor)

    def to_numpy(self, x: Any) -> np.ndarray:
        t = x.detach()
        if t.is_conj():
            t = t.resolve_conj()
        if t.is_neg():
            t = t.resolve_neg()
        if t.device.type != "cpu":
            t = t.cpu()
        if not t.is_contiguous():
            t = t.contiguous()
        raw = _RAW_VIEWS.get(t.dtype)
        if raw is not None:
            t = t.view(raw)
        return t.numpy()

    def dtype_name(self, x: Any) -> str:
        return str(x.dtype).removeprefix("torch.")

    def install(self, recorder):
        """Record every module, backward and optimizer step through PyTorch's global hooks."""
        from .torch_trace import install

        return install(recorder)


def _fill_uninitialized_memory() -> bool | None:
    try:
        import torch.utils.deterministic as tud

        return bool(tud.fill_uninitialized_memory)
    except (ImportError, AttributeError):
        return None


def _parse_config(text: str) -> dict:
    """The numerics-relevant lines of ``torch.__config__.show()``: BLAS, oneDNN, OpenMP, capability."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        s = line.strip().lstrip("- ").strip()
        low = s.lower()
        if "math kernel library" in low:
            out["mkl"] = s
        elif "mkl-dnn" in low or "onednn" in low:
            out["onednn"] = s
        elif low.startswith("openmp"):
            out["openmp"] = s
        elif low.startswith("cpu capability usage"):
            out["cpu_capability_usage"] = s.split(":", 1)[1].strip()
        elif low.startswith("build settings"):
            for part in s.split(":", 1)[1].split(","):
                key, _, val = part.strip().partition("=")
                if key in ("BLAS_INFO", "LAPACK_INFO", "TORCH_VERSION", "CUDA_VERSION", "CUDNN_VERSION"):
                    out[key.lower()] = val
    return out
