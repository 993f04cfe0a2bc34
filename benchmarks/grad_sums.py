"""Who sums a layer's weight gradients in its train step: the backward kernel, or XLA.

The native backward kernel can add x_tᵀ∂z_t, h_{t-1}ᵀ∂z_t and ∂z_t to the weight and
bias gradients every few steps, a chunk of ∂z rows at a time (`kernel_sums_<rows>`),
or leave them to single products over all T·B rows in XLA after it (`xla_products`;
for the GRU these compute h_{t-1}ᵀ∂z over all 3H columns and then h_{t-1}ᵀ(dn·r) for
U_n); `--prefetch=both` adds each chunk size with the kernel's tile prefetch off
(`_no_prefetch`, `jaxseq.native.GRAD_TILE_PREFETCH`). `jaxseq.native.grads_in_kernel`
and `grad_chunk_rows` choose between them; this
times each choice's train step (`jax.value_and_grad` of the summed squares of the
outputs) in one process, taking turns (`--rounds` rounds), after checking that they
agree. Prints and returns `{name: (min ms, median ms)}`.

    .venv/bin/python -m benchmarks.grad_sums                             # GRU at shape D
    .venv/bin/python -m benchmarks.grad_sums --cell=lstm --shape=100,64,128,256
    .venv/bin/python -m benchmarks.grad_sums --chunks=512 --prefetch=both
"""

import argparse
import contextlib

import jax
import jax.numpy as jnp

import jaxseq
from benchmarks._alternate import alternate
from jaxseq import native

CELLS = {"lstm": jaxseq.lstm, "gru": jaxseq.gru, "elman": jaxseq.elman}
PREFETCH = {"on": (True,), "off": (False,), "both": (True, False)}  # GRAD_TILE_PREFETCH


@contextlib.contextmanager
def _knobs(**values):
    old = {name: getattr(native, name) for name in values}
    try:
        for name, value in values.items():
            setattr(native, name, value)
        yield
    finally:
        for name, value in old.items():
            setattr(native, name, value)


def _positive_ints(text: str, name: str, count: int | None = None) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1 or (count is not None and len(values) != count):
        what = f"{count} positive integers" if count else "positive integers"
        raise ValueError(f"--{name} takes {what} separated by commas, got {text!r}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="gru", help=", ".join(CELLS))
    parser.add_argument("--shape", default="50,256,256,512", help="T,B,D,H (default: D)")
    parser.add_argument("--chunks", default="128,512,2048", help="rows per kernel update")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--prefetch",
        default="on",
        help="the kernel's sums with GRAD_TILE_PREFETCH on, off, or both (named _no_prefetch)",
    )
    args = parser.parse_args(argv)
    if args.prefetch not in PREFETCH:
        raise ValueError(f"--prefetch takes one of {', '.join(PREFETCH)}, got {args.prefetch!r}")
    if args.cell not in CELLS:
        raise ValueError(f"--cell takes one of {', '.join(CELLS)}, got {args.cell!r}")
    args.shape = _positive_ints(args.shape, "shape", 4)
    args.chunks = _positive_ints(args.chunks, "chunks")
    if args.rounds < 1:
        raise ValueError(f"--rounds must be a positive integer, got {args.rounds}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    T, B, D, H = args.shape
    layer = CELLS[args.cell](H)
    params = layer.init(jax.random.key(0), input_size=D)
    xs = jax.random.normal(jax.random.key(1), (T, B, D))

    def loss(params, xs):
        return jnp.sum(jaxseq.unroll(layer, params, xs, kernel="native")[1] ** 2)

    configs = {"xla_products": dict(GRADS_IN_KERNEL_BYTES=0, GRU_GRADS_IN_KERNEL_BYTES=0)}
    for rows in args.chunks:
        for prefetch in PREFETCH[args.prefetch]:
            name = f"kernel_sums_{rows}" + ("" if prefetch else "_no_prefetch")
            configs[name] = dict(
                GRADS_IN_KERNEL_BYTES=1 << 62,
                GRU_GRADS_IN_KERNEL_BYTES=1 << 62,
                GRAD_CHUNK_ROWS=rows,
                GRAD_CHUNK_ROWS_PAST_L2=rows,
                GRAD_TILE_PREFETCH=prefetch,
            )
    compiled = {}
    for name, knobs in configs.items():
        with _knobs(**knobs):  # read when the step is traced
            compiled[name] = jax.jit(jax.value_and_grad(loss)).lower(params, xs).compile()
    reference = jax.tree.leaves(compiled["xla_products"](params, xs))
    for name, f in compiled.items():
        for a, b in zip(reference, jax.tree.leaves(f(params, xs)), strict=True):
            scale = float(jnp.max(jnp.abs(a)))
            diff = float(jnp.max(jnp.abs(a - b)))
            if not diff <= 1e-4 * scale:
                raise AssertionError(f"{name} disagrees: max |Δ| = {diff} (scale {scale})")
    result = alternate(compiled, (params, xs), rounds=args.rounds)
    print(f"{args.cell} T,B,D,H={T},{B},{D},{H}; (min, median) ms per train step:")
    print(result)
    return result


if __name__ == "__main__":
    main()
