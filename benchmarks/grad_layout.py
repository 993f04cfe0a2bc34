"""The weight gradients of one recurrent layer as XLA products: which operand layout.

Where the native kernel leaves ∂W and ∂U to XLA, they are Σ_t x_tᵀ ∂z_t and
Σ_t h_{t-1}ᵀ ∂z_t over all T·B rows. Two ways to hand XLA's CPU dot the residuals:
  transposed_operands:  x [T·B, D] and h [T·B, H] as saved by row; two products
                        `x.T @ dz` and `h.T @ dz` (XLA contracts their first axis);
  xh_transposed:        [x | h]ᵀ [D + H, T·B], as the LSTM and Elman forward kernels
                        save it (`jaxseq.native.xh_transposed`); one product `xh_t @ dz`.
They run in one process, alternating, 25 rounds; prints the min and median ms.

    .venv/bin/python -m benchmarks.grad_layout                 # shape B: T·B=6400, D=128, H=256
    .venv/bin/python -m benchmarks.grad_layout 12800 256 512   # shape D: T·B D H
"""

import sys

import jax
import jax.numpy as jnp

from benchmarks._alternate import alternate


def main(rows: int = 6400, inputs: int = 128, hidden: int = 256, gates: int = 4) -> dict:
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (rows, inputs))
    h = jax.random.normal(keys[1], (rows, hidden))
    dz = jax.random.normal(keys[2], (rows, gates * hidden))
    xh_t = jnp.concatenate([x, h], axis=1).T  # the kernel writes this layout directly

    def transposed_operands(x, h, xh_t, dz):
        return x.T @ dz, h.T @ dz

    def xh_transposed(x, h, xh_t, dz):
        d_w = xh_t @ dz
        return d_w[:inputs], d_w[inputs:]

    args = (x, h, xh_t, dz)
    compiled = {
        f.__name__: jax.jit(f).lower(*args).compile() for f in (transposed_operands, xh_transposed)
    }
    results = {name: f(*args) for name, f in compiled.items()}
    scale = float(jnp.max(jnp.abs(results["transposed_operands"][1])))
    diff = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(results["transposed_operands"], results["xh_transposed"], strict=True)
    )
    if not diff <= 1e-5 * scale:
        raise AssertionError(f"the two forms disagree: max |Δ| = {diff} (scale {scale})")
    result = alternate(compiled, args)
    print(f"T·B,D,H={rows},{inputs},{hidden}; max |Δ| {diff:.1e}; (min, median) ms:")
    print(result)
    return result


if __name__ == "__main__":
    main(*map(int, sys.argv[1:4]))
