"""LSTM gate activations: one activation per gate slice vs one over the whole block.

The same LSTM forward scan (h_{t-1} @ U + xp_t, then the gates), written two ways:
  per_slice:  split the pre-activation [B, 4H] into i, f, g, o, then σ(i), σ(f), tanh(g), σ(o);
  one_block:  σ over the whole [B, 4H] block, then split (plus tanh of the g slice).
They run in one process, alternating, 25 rounds; prints the min and median ms.
On the CPU, XLA vectorised the one-block form and not the per-slice one; this is
why `jaxseq.lstm` and `jaxseq.gru` apply σ to all gate blocks at once.

    .venv/bin/python -m benchmarks.gate_layout              # shape A: T=100, B=32, H=128
    .venv/bin/python -m benchmarks.gate_layout 1000 16 64   # T B H
"""

import sys

import jax
import jax.numpy as jnp

from benchmarks._alternate import alternate


def per_slice(z, c):
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def one_block(z, c):
    i, f, _, o = jnp.split(jax.nn.sigmoid(z), 4, axis=-1)
    g = jnp.tanh(jnp.split(z, 4, axis=-1)[2])
    c = f * c + i * g
    return o * jnp.tanh(c), c


def main(num_steps: int = 100, batch: int = 32, hidden: int = 128) -> dict:
    w = 0.05 * jax.random.normal(jax.random.key(0), (hidden, 4 * hidden))
    xp = jax.random.normal(jax.random.key(1), (num_steps, batch, 4 * hidden))
    h0 = jnp.zeros((batch, hidden))

    def scan(gates):
        def run(w, xp):
            def body(carry, xp_t):
                h, c = gates(carry[0] @ w + xp_t, carry[1])
                return (h, c), h

            return jax.lax.scan(body, (h0, h0), xp)[1]

        return jax.jit(run).lower(w, xp).compile()

    compiled = {"per_slice": scan(per_slice), "one_block": scan(one_block)}
    diff = jnp.max(jnp.abs(compiled["per_slice"](w, xp) - compiled["one_block"](w, xp)))
    if not diff < 1e-5:
        raise AssertionError(f"the two forms disagree: max |Δh| = {float(diff)}")
    result = alternate(compiled, (w, xp))
    print(f"T,B,H={num_steps},{batch},{hidden}; max |Δh| {float(diff):.1e}; (min, median) ms:")
    print(result)
    return result


if __name__ == "__main__":
    main(*map(int, sys.argv[1:4]))
