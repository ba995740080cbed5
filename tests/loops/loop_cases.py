"""Every loop kind as (script, arguments, environment): what tests/test_loops.py and survey.py run."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    name: str
    script: str                     # in tests/loops/
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    framework: str = "torch"        # torch, tensorflow, jax: which thread knob moves its numerics
    slow: bool = False              # minutes rather than seconds on 2 shared cores (first compile)

    @property
    def id(self) -> str:
        return self.name


def _keras(kind: str, script: str) -> list[Case]:
    return [Case(f"{kind}-{b}", script, env={"KERAS_BACKEND": b}, framework="jax" if b == "jax" else "tensorflow"
                 if b == "tensorflow" else "torch") for b in ("tensorflow", "torch", "jax")]


CASES: list[Case] = [
    Case("torch-plain", "torch_plain.py"),
    Case("torch-manual-sub", "torch_manual.py"),
    Case("torch-manual-data", "torch_manual.py", ("--update", "data")),
    Case("torch-closure-sgd", "torch_closure.py"),
    Case("torch-closure-lbfgs", "torch_closure.py", ("--optim", "lbfgs")),
    Case("torch-accum", "torch_accum.py"),
    Case("torch-gan", "torch_gan.py"),
    Case("torch-loss-model", "torch_loss_module.py"),
    Case("torch-loss-loop", "torch_loss_module.py", ("--where", "loop")),
    Case("torch-compile", "torch_compile.py", slow=True),
    Case("torch-compile-aot", "torch_compile.py", ("--backend", "aot_eager")),
    Case("torch-autograd-grad", "torch_autograd_grad.py"),
    Case("lightning-auto", "lightning_auto.py"),
    Case("lightning-manual", "lightning_manual.py"),
    Case("lightning-callback", "lightning_auto.py", ("--callback",)),
    Case("hf-trainer", "hf_trainer.py"),
    Case("hf-trainer-callback", "hf_trainer.py", ("--callback",)),
    *_keras("keras-fit", "keras_fit.py"),
    *_keras("keras-train-step", "keras_train_step.py"),
    Case("tf-gradient-tape", "tf_gradient_tape.py", framework="tensorflow"),
    Case("flax-nnx", "flax_optax.py", framework="jax"),
    Case("flax-linen", "flax_optax.py", ("--api", "linen"), framework="jax"),
    Case("flax-nnx-record-step", "flax_optax.py", ("--record-step",), framework="jax"),
    Case("flax-linen-record-step", "flax_optax.py", ("--api", "linen", "--record-step"), framework="jax"),
]
