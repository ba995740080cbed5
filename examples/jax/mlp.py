"""A JAX MLP on scikit-learn's digits with explicit keys, recorded with ``twinrun.jax.Tracer``.

    python mlp.py                    # keys from twinrun's named streams: repeats exactly
    python mlp.py --key-from-time    # the init key from the clock: parameters differ at init
    python mlp.py --unseeded-shuffle # the batch order from NumPy's unseeded default_rng()

Without ``twinrun run`` the tracer calls do nothing. Prints ``params=<digest> loss=<last loss>``.
"""

import argparse
import hashlib
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

import twinrun
import twinrun.jax


def init_params(key, sizes):
    params = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        key, sub = jax.random.split(key)
        params[f"dense{i}"] = {"w": jax.random.normal(sub, (n_in, n_out)) * jnp.sqrt(2.0 / n_in),
                               "b": jnp.zeros(n_out)}
    return params


def forward(params, x, dropout_key=None, rate=0.1):
    n = len(params)
    for i in range(n):
        layer = params[f"dense{i}"]
        x = x @ layer["w"] + layer["b"]
        if i < n - 1:
            x = jnp.tanh(x)
            if dropout_key is not None:
                keep = jax.random.bernoulli(jax.random.fold_in(dropout_key, i), 1 - rate, x.shape)
                x = jnp.where(keep, x / (1 - rate), 0.0)
    return x


def loss_fn(params, x, y, key):
    logits = forward(params, x, key)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


@jax.jit
def update(params, x, y, key, lr=0.1):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, key)
    params = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
    return params, loss, grads


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--key-from-time", action="store_true")
    p.add_argument("--unseeded-shuffle", action="store_true")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()

    seeds = twinrun.seed_everything(args.seed)
    init_key = jax.random.key(time.time_ns() % 2**31) if args.key_from_time else seeds.jax("init")
    dropout_key = seeds.jax("dropout")
    order_rng = np.random.default_rng() if args.unseeded_shuffle else seeds.numpy("data")

    digits = load_digits()
    x = jnp.asarray(digits.data / 16.0, dtype=jnp.float32)
    y = jnp.asarray(digits.target, dtype=jnp.int32)
    params = init_params(init_key, [64, 32, 10])

    tracer = twinrun.jax.Tracer()
    tracer.init(params)
    step = 0
    for _ in range(args.epochs):
        order = order_rng.permutation(len(x))
        for start in range(0, len(x) - args.batch + 1, args.batch):
            idx = order[start:start + args.batch]
            xb, yb = x[idx], y[idx]
            params, loss, grads = update(params, xb, yb, jax.random.fold_in(dropout_key, step))
            tracer.step(batch=(xb, yb), params=params, grads=grads, loss=loss)
            step += 1
    leaves = jax.tree_util.tree_leaves(params)
    h = hashlib.sha256(b"".join(np.asarray(leaf).tobytes() for leaf in leaves))
    print(f"params={h.hexdigest()[:16]} loss={float(loss):.6f}")


if __name__ == "__main__":
    main()
