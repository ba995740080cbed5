"""A JAX function applied to a batch: not a PyTorch model, so twinrun probe SCRIPT points to
twinrun.probe(fn, batch)."""

import jax
import jax.numpy as jnp

w = jax.random.normal(jax.random.PRNGKey(0), (16, 4))
x = jax.random.normal(jax.random.PRNGKey(1), (8, 16))
print(float(jnp.tanh(x @ w).sum()))
