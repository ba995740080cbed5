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
    Case("torch-autograd-grad", "torch_autograd_grad.py"),
    Case("lightning-auto", "lightning_auto.py"),
    Case("lightning-manual", "lightning_manual.py"),
    Case("hf-trainer", "hf_trainer.py"),
    *_keras("keras-fit", "keras_fit.py"),
    *_keras("keras-train-step", "keras_train_step.py"),
    Case("tf-gradient-tape", "tf_gradient_tape.py", framework="tensorflow"),
    Case("flax-nnx", "flax_optax.py", framework="jax"),
    Case("flax-linen", "flax_optax.py", ("--api", "linen"), framework="jax"),
]
