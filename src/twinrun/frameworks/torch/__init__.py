"""PyTorch adapter: seeding, determinism switches, environment facts, tensor conversion, recording hooks
(``tracing``), probe recording and batch-invariant kernels (``probe``, ``batch_invariant``),
data-loader seeding (``data``), the ``seed-loaders`` intervention (``interventions``)
and the instruction-set reruns doctor can make (``portability``).

Importing this package does not import torch: the adapter's class-level facts serve doctor in a
process that never imports it; ``TorchAdapter()`` does (``twinrun.frameworks.get("torch")``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..base import Adapter, EnvVar, FixWords, Intervention, ProbeSink, RecorderLike, Switch, Variant

__all__ = ["ADAPTER", "CUBLAS_WORKSPACE", "TorchAdapter"]

CUBLAS_WORKSPACE = ":4096:8"


def _env_switch(var: str, want: str, note: str, too_late: Callable[[], str | None] | None = None) -> Switch:
    def get() -> str | None:
        return os.environ.get(var)

    def set_(value: str | None) -> None:
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value

    return Switch(name=var, get=get, set=set_, want=want, note=note, too_late=too_late)


class TorchAdapter(Adapter):
    name = "torch"
    module = "torch"
    extra = "torch"
    words = FixWords(
        seed="Seed every RNG before the model is built: add `import twinrun; twinrun.seed_everything(0)` at the top "
             "of {script} (or run it with `twinrun run --seed 0`).",
        fixed_seed="`torch.manual_seed(seeds.int(\"init\"))`",
        pin_threads="`torch.set_num_threads({n})`",
        deterministic="`torch.use_deterministic_algorithms(True)`",
        content_tail="; inside DataLoader workers use `twinrun.torch.worker_rng()`.",
    )
    env_vars = (
        EnvVar("ATEN_CPU_CAPABILITY", "numerics", "forces PyTorch's kernels to another instruction set"),
        EnvVar("CUBLAS_WORKSPACE_CONFIG", "numerics", "cuBLAS needs a fixed workspace to be deterministic"),
        EnvVar("NVIDIA_TF32_OVERRIDE", "numerics", "turns TF32 on or off for every CUDA library"),
        EnvVar("ONEDNN_*", "numerics", "limits or tunes oneDNN, PyTorch's (and TensorFlow's) convolution kernels"),
        EnvVar("DNNL_*", "numerics", "limits or tunes oneDNN, PyTorch's (and TensorFlow's) convolution kernels"),
    )

    def __init__(self) -> None:
        import torch

        self._torch = torch
        # dtypes NumPy has no equivalent for: hash and store their raw bits through a same-width view.
        self._raw_views = {torch.bfloat16: torch.int16}
        for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"):
            if hasattr(torch, name):
                self._raw_views[getattr(torch, name)] = torch.uint8

    # --- class level ---
    @classmethod
    def interventions(cls) -> list[Intervention]:
        from .distributed import BUCKET_INTERVENTIONS
        from .interventions import INTERVENTIONS

        return [*INTERVENTIONS, *BUCKET_INTERVENTIONS]

    @classmethod
    def launcher(cls, nproc: int) -> list[str]:
        from .distributed import launcher

        return launcher(nproc)

    @classmethod
    def isa_variants(cls, flags: set[str], environ: Mapping[str, str]) -> tuple[list[Variant], list[str]]:
        from .portability import isa_variants

        return isa_variants(flags=flags, environ=environ)

    @classmethod
    def thread_variant(cls, count: int) -> Variant:
        # twinrun run --threads N: torch.set_num_threads, threadpoolctl and the OMP_NUM_THREADS family.
        return Variant(f"threads-{count}", "thread-count", f"PyTorch with {count} thread(s)", threads=count)

    @classmethod
    def default_threads(cls) -> int | None:
        from .portability import probe

        threads = probe().get("threads")
        return int(threads) if isinstance(threads, int) else None

    @classmethod
    def emulations(cls, other_env: Mapping[str, Any]) -> list[Variant]:
        from .portability import emulations

        return emulations(other_env)

    # --- instance level ---
    def seed(self, seed: int) -> dict[str, Any]:
        torch = self._torch
        torch.manual_seed(seed)  # seeds the CPU generator and every CUDA device's
        done = {"torch.manual_seed": seed}
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
            done["torch.cuda.manual_seed_all"] = seed
        return done

    def switches(self, *, strict: bool, threads: int | None) -> list[Switch]:
        torch = self._torch

        def get_algos() -> dict[str, bool]:
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

    def environment(self) -> dict[str, Any]:
        torch = self._torch
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
            "fill_uninitialized_memory": _fill_uninitialized_memory(torch),
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
        return isinstance(x, self._torch.Tensor)

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
        raw = self._raw_views.get(t.dtype)
        if raw is not None:
            t = t.view(raw)
        return t.numpy()

    def dtype_name(self, x: Any) -> str:
        return str(x.dtype).removeprefix("torch.")

    def install(self, recorder: RecorderLike) -> Callable[[], None]:
        """Record every module, backward and optimizer step through PyTorch's global hooks."""
        from .tracing import install

        return install(recorder)

    def process_group(self) -> dict[str, Any] | None:
        from .distributed import process_group

        return process_group()

    def end_process_group(self) -> bool:
        from .distributed import end_process_group

        return end_process_group()

    def install_probe(self, sink: ProbeSink, *, max_calls: int, threads: int | None = None) -> Callable[[], None]:
        """Record root models' no-grad forward calls for ``twinrun probe`` (``probe.ProbeRecorder``)."""
        from .probe import ProbeRecorder

        return ProbeRecorder(sink, max_calls=max_calls, threads=threads).install()


ADAPTER = TorchAdapter


def _fill_uninitialized_memory(torch: Any) -> bool | None:
    try:
        import torch.utils.deterministic as tud

        return bool(tud.fill_uninitialized_memory)  # type: ignore[attr-defined]  # set at runtime
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
