"""Flax 0.12 + Optax: a jitted train step that returns what it computed.

``--api nnx`` (default, Flax's recommended API since 0.11): an ``nnx.Module`` CNN, ``nnx.Optimizer``
and an ``@nnx.jit`` step that updates the model in place and returns ``loss, grads``.
``--api linen``: a ``flax.linen`` CNN and the functional ``@jax.jit`` step
``params, opt_state, loss, grads = train_step(params, opt_state, x, y)`` with an Optax optimizer.
Either way the parameters are named by their tree path (``conv.kernel``). One step = one call of
the jitted step. Options: --seed S (the ``jax.random`` key), --unseeded (a key from os.urandom),
--wide (32 conv filters), --steps N, --api nnx|linen, --record-step (wrap the step with
``twinrun.jax.record_step``: the one line a user adds, as docs/trainers.md says).
"""

import os

import jax
import jax.numpy as jnp
import optax
from _truth import BATCH, Truth, batch_slice, digits, options


def path_name(path) -> str:
    """A tree path as dotted keys: ``(DictKey('conv'), DictKey('kernel'))`` -> ``conv.kernel``.

    An nnx ``Variable`` is a pytree node whose leaf sits under ``.value``; that last key is the
    wrapper's, not the user's, so it is dropped (``conv.kernel.value`` -> ``conv.kernel``).
    """
    keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    if len(keys) > 1 and keys[-1] == "value":
        keys.pop()
    return ".".join(keys)


def run_nnx(args, key_seed: int, x, y, truth: Truth) -> int:
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, width: int, rngs: nnx.Rngs):
            self.conv = nnx.Conv(1, width, (3, 3), padding="SAME", rngs=rngs)
            self.out = nnx.Linear(8 * 8 * width, 10, rngs=rngs)

        def __call__(self, x):
            h = nnx.relu(self.conv(x.reshape(-1, 8, 8, 1)))
            return self.out(h.reshape(h.shape[0], -1))

    model = CNN(32 if args.wide else 8, nnx.Rngs(key_seed))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1, momentum=0.9), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, xb, yb):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(xb), yb).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss, grads

    if args.record_step:
        import twinrun.jax

        train_step = twinrun.jax.record_step(train_step, returns=("loss", "grads"), batch_arg=(2, 3),
                                             params=lambda: nnx.state(model, nnx.Param))
    truth.params(path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0])
    steps = 0
    for i in range(args.steps):
        sl = batch_slice(i, len(x))
        loss, grads = train_step(model, optimizer, x[sl], y[sl])
        if steps == 0:
            truth.loss(loss)
            truth.grads((path_name(p), g) for p, g in jax.tree_util.tree_flatten_with_path(grads)[0])
        steps += 1
    return steps


def run_linen(args, key_seed: int, x, y, truth: Truth) -> int:
    import flax.linen as nn

    class CNN(nn.Module):
        width: int

        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Conv(self.width, (3, 3), padding="SAME", name="conv")(x.reshape(-1, 8, 8, 1)))
            return nn.Dense(10, name="out")(h.reshape(h.shape[0], -1))

    model = CNN(32 if args.wide else 8)
    params = model.init(jax.random.key(key_seed), jnp.zeros((1, 64)))["params"]
    tx = optax.sgd(0.1, momentum=0.9)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, xb, yb):
        def loss_fn(params):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": params}, xb), yb).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, loss, grads

    if args.record_step:
        import twinrun.jax

        train_step = twinrun.jax.record_step(train_step, returns=("params", None, "loss", "grads"), params_arg=0,
                                             batch_arg=(2, 3))
    truth.params(path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0])
    steps = 0
    for i in range(args.steps):
        sl = batch_slice(i, len(x))
        params, opt_state, loss, grads = train_step(params, opt_state, x[sl], y[sl])
        if steps == 0:
            truth.loss(loss)
            truth.grads((path_name(p), g) for p, g in jax.tree_util.tree_flatten_with_path(grads)[0])
        steps += 1
    return steps


def main() -> None:
    args = options(__doc__, api={"choices": ["nnx", "linen"], "default": "nnx"},
                   record_step={"action": "store_true"})
    key_seed = int.from_bytes(os.urandom(4), "little") if args.unseeded else args.seed
    x, y = digits()
    truth = Truth(f"flax-{args.api}", "jax", notes="grads: those the jitted step returned at step 0 (jax.value_and_grad)")
    steps = (run_nnx if args.api == "nnx" else run_linen)(args, key_seed, x, y, truth)
    truth.save(steps)
    print(f"{args.api}: {steps} steps, batch {BATCH}")


if __name__ == "__main__":
    main()
