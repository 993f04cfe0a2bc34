"""THE scan: runs any `Cell` over the time axis.

No other module calls `lax.scan` on a cell. The input-only part of every step
(`cell.project`) can be computed for all steps in one matrix product before the
scan, leaving the scan body only the recurrent part (`cell.recur`); `hoist`
chooses (by default: hoisted on accelerators, in-step on a CPU). The
parallel-in-time evaluators (`method="associative"`, `method="deer"`) live in
`jaxseq.parallel` and are reached through the same `unroll` call.
"""

import functools
import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxseq import _checks, native
from jaxseq import _masking as masking
from jaxseq import bptt as jaxseq_bptt
from jaxseq.types import Carry, Cell, Params


def _reverse_within_lengths(
    xs: jax.Array, lengths: jax.Array, valid: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Reverses each sequence within its own length; padding stays in place.

    Returns the permuted `xs` and the index `[T, *batch]` that did it; the
    permutation is its own inverse, so the same index maps outputs back.
    """
    t = jnp.arange(xs.shape[0], dtype=lengths.dtype).reshape((-1,) + (1,) * lengths.ndim)
    t = jnp.broadcast_to(t, valid.shape)
    index = jnp.where(valid, lengths[None] - 1 - t, t)
    return jnp.take_along_axis(xs, index[..., None], axis=0), index


METHODS = ("scan", "associative", "deer")
DEER_JACOBIANS = ("full", "diag")
BPTT = ("fused", "autodiff")
KERNELS = ("auto", "native", "xla")


def unroll(
    cell: Cell,
    params: Params,
    xs: Float[Array, "time *batch in"],
    carry: Carry | None = None,
    *,
    lengths: Int[Array, "*batch"] | None = None,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool = False,
    truncate: int | None = None,
    method: str = "scan",
    bptt: str = "fused",
    hoist: bool | None = None,
    kernel: str = "auto",
    deer_iters: int = 100,
    deer_tol: float = 1e-5,
    deer_jacobian: str = "full",
) -> tuple[Carry, Float[Array, "time *batch hidden"]]:
    """Runs `cell` over the leading (time) axis of `xs` with `jax.lax.scan`.

    Equivalent to (without `lengths`, `reverse` or `truncate`):

        for t in range(T):
            carry, ys[t] = cell.step(params, carry, xs[t])

    with `cell.project(params, xs)` hoisted out of the loop as one matmul
    (`hoist=True`; the default on accelerators).

    Lengths: a step at t ≥ `lengths[b]` leaves sequence b's carry unchanged and
    emits zeros, so the final carry is the state after each sequence's last valid
    step (as in Flax's `RNN` and PyTorch's packed sequences). With
    `reverse=True` and `lengths`, each sequence is read from its own last valid
    step back to step 0, and `ys[t]` is the output after reading steps
    `lengths[b]-1, ..., t` (PyTorch's backward direction on packed sequences).

    Truncated BPTT: with `truncate=k` the gradient through the carry is stopped
    before every k-th step (in reading order), so ∂L/∂θ only flows back at most
    k steps through the state; the forward pass is unchanged, and k ≥ T equals
    full BPTT.

    Parallel-in-time evaluation (same results and gradients, within float
    tolerance; `lengths` and `reverse` work the same way):
      method="associative": for cells with `cell.linear` (mingru, minlstm, lru),
        whose step is h_t = a_t ⊙ h_{t-1} + b_t; one `lax.associative_scan`
        (O(log T) depth), differentiated by ordinary autodiff.
      method="deer": any cell, by Newton iterations on the whole trajectory, each
        solved with a parallel scan (see `jaxseq.parallel.deer`, which also
        reports the iteration count). If `deer_iters` iterations do not reach
        `deer_tol`, the sequential scan computes the result (`lax.cond`; under
        `vmap` both branches run).
    They pay off on accelerators with long sequences and small batches; on a CPU
    the sequential scan is usually faster. `unroll`, `remat` and `truncate` are
    options of the sequential scan only.

    Args:
      cell: the `Cell` (closed over, not traced).
      params: the cell's parameters.
      xs: inputs `[T, *batch, in]`, time-major.
      carry: initial state (leaves `[*batch, H]`); zeros from
        `cell.initial_carry` when None.
      lengths: optional valid lengths, int `[*batch]` with values in [0, T].
      reverse: read the sequences backwards (outputs stay time-aligned).
      unroll: `lax.scan`'s unroll factor (steps per loop iteration).
      remat: rematerialise in the backward pass (`jax.checkpoint` on chunks of
        ⌈√T⌉ steps, with the input projection inside them): memory O(√T·carry)
        plus the outputs instead of O(T·activations), for one more forward.
      truncate: stop the gradient through the carry every `truncate` steps.
      method: "scan" (default, sequential), "associative" or "deer".
      bptt: how `method="scan"` is differentiated. "fused" (default): for cells
        with `cell.recurrent` (Elman, LSTM, GRU with reset_after=True), one
        hand-written sequence-level VJP (`jaxseq.bptt`): the backward loop only
        propagates ∂h through Uᵀ and ∂U is one large product after it; reverse
        mode only. "autodiff": `jax.grad` through the scan step by step, which
        also supports forward mode (`jax.jvp`, `jax.hessian`). `remat` and
        `truncate` always use autodiff; other cells always do.
      hoist: compute every step's input projection in one product before the scan
        (True) or inside each step (False). None (default): True on accelerators,
        False on a CPU, where the `[T, *batch, K]` array it needs costs more than
        the one large product saves (freshly mapped memory each call; see README,
        Speed). Same results either way.
      kernel: who computes `method="scan"` with `bptt="fused"`. "auto" (default):
        on a CPU, the standard Elman, LSTM and GRU cells in float32 run as one
        fused native kernel per direction (`jaxseq.native`: each step's products,
        gates and state update in one pass, weight gradients summed by the
        kernel every few steps, or where they outgrow a core's cache as single
        products after the loop), everything else as XLA's scan; "native": the kernel or
        a ValueError saying why it cannot run here; "xla": never the kernel.
        Same results either way, within float32 rounding.
      deer_iters: most Newton iterations before falling back (method="deer").
      deer_tol: convergence tolerance on max |Δh| / (1 + |h|) (method="deer").
      deer_jacobian: "full" (Newton, DEER) or "diag" (quasi-Newton, as in ELK).

    Returns:
      `(final_carry, ys)` with `ys: [T, *batch, H]`.
    """
    options = dict(max_iters=deer_iters, tol=deer_tol, jacobian=deer_jacobian, fallback=True)
    carry, ys, _ = _evaluate(
        cell,
        params,
        xs,
        carry,
        lengths=lengths,
        reverse=reverse,
        unroll=unroll,
        remat=remat,
        truncate=truncate,
        method=method,
        bptt=bptt,
        hoist=hoist,
        kernel=kernel,
        deer_options=options,
    )
    return carry, ys


def _check_method(method: str, unroll: int, remat: bool, truncate, deer_options: dict) -> None:
    _checks.check_option("method", method, METHODS)
    _checks.check_positive_int("unroll", unroll)
    if truncate is not None:
        _checks.check_positive_int("truncate", truncate)
    if method != "scan" and (unroll != 1 or remat or truncate is not None):
        raise ValueError(
            f"unroll, remat and truncate are options of method='scan', got method={method!r} "
            f"with unroll={unroll!r}, remat={remat!r}, truncate={truncate!r}"
        )
    _checks.check_positive_int("deer_iters", deer_options["max_iters"])
    tol = deer_options["tol"]
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not tol > 0:
        raise ValueError(f"deer_tol must be a positive float, got {tol!r}")
    _checks.check_option("deer_jacobian", deer_options["jacobian"], DEER_JACOBIANS)


def _evaluate(
    cell: Cell,
    params: Params,
    xs: jax.Array,
    carry: Carry | None,
    *,
    lengths: jax.Array | None,
    reverse: bool,
    unroll: int = 1,
    remat: bool = False,
    truncate: int | None = None,
    method: str,
    bptt: str = "fused",
    hoist: bool | None = None,
    kernel: str = "auto",
    deer_options: dict,
):
    """`unroll` with the method's report: `(carry, ys, info)`, info None unless method="deer"."""
    _checks.check_inputs(cell, params, xs, name="xs", time_axis=True)
    _check_method(method, unroll, remat, truncate, deer_options)
    _checks.check_option("bptt", bptt, BPTT)
    _checks.check_option("kernel", kernel, KERNELS)
    if kernel == "native" and method != "scan":
        raise ValueError(f"kernel='native' computes method='scan', got method={method!r}")
    if hoist is not None and not isinstance(hoist, bool):
        raise TypeError(f"hoist must be None, True or False, got {hoist!r}")
    if method == "associative":
        from jaxseq.parallel.associative import check_linear  # deferred, as in _parallel

        check_linear(cell)
    num_steps, batch_shape = xs.shape[0], tuple(xs.shape[1:-1])
    if carry is None:
        carry = cell.initial_carry(params, batch_shape)
    else:
        _checks.check_carry(cell, params, carry, batch_shape)

    valid = index = None
    if lengths is not None:
        _checks.check_lengths(lengths, num_steps, batch_shape)
        lengths = jnp.asarray(lengths, jnp.int32)  # any integer dtype, under x64 too
        t = jnp.arange(num_steps, dtype=jnp.int32).reshape((-1,) + (1,) * len(batch_shape))
        valid = t < lengths[None]
        if reverse:
            xs, index = _reverse_within_lengths(xs, lengths, valid)
    scan_reverse = reverse and lengths is None
    info = None
    if method == "scan" or num_steps == 0:
        carry, ys = _scan(
            cell,
            params,
            xs,
            carry,
            valid,
            scan_reverse,
            unroll,
            remat,
            truncate,
            bptt,
            hoist,
            kernel,
        )
    else:
        carry, ys, info = _parallel(
            cell, params, xs, carry, valid, scan_reverse, method, deer_options
        )
    if index is not None:
        ys = jnp.take_along_axis(ys, index[..., None], axis=0)
    return carry, ys, info


def _parallel(cell, params, xs, carry, valid, reverse, method, deer_options):
    """The parallel evaluators read forwards: a reversed read flips the sequences around them."""
    # Deferred imports: jaxseq.parallel.newton imports this module (for `parallel.deer`).
    from jaxseq.parallel import associative, newton

    if reverse:
        xs = xs[::-1]
    xps = cell.project(params, xs)
    info = None
    if method == "associative":
        carry, ys = associative.evaluate(cell, params, xps, carry, valid)
    else:
        options = newton.Options(**deer_options)
        carry, ys, info = newton.evaluate(cell, params, xps, carry, valid, options)
    return carry, (ys[::-1] if reverse else ys), info


def _scan(
    cell, params, xs, carry, valid, scan_reverse, unroll, remat, truncate, bptt, hoist, kernel
):
    """The sequential scan of `cell.recur`: natively, or over the hoisted or in-step projection."""
    fused = bptt == "fused" and cell.recurrent is not None and not remat and truncate is None
    if kernel != "xla":
        if bptt != "fused" or remat or truncate is not None:
            why = (
                f"it runs with bptt='fused' and without remat or truncate, got bptt={bptt!r}, "
                f"remat={remat!r}, truncate={truncate!r}"
            )
        else:
            why = native.reason_not(cell, params, xs, carry)
        if why is None:
            return native.scan(cell, params, xs, carry, valid, scan_reverse)
        if kernel == "native":
            raise ValueError(f"kernel='native' cannot run {cell.name}: {why}")
    if hoist is None:  # on a CPU the [T, *batch, K] array costs more than it saves
        hoist = jax.default_backend() != "cpu"
    if fused:
        return jaxseq_bptt.scan(cell, params, xs, carry, valid, scan_reverse, unroll, hoist)
    num_steps = xs.shape[0]
    order = None  # position in reading order, scanned only when truncating
    if truncate is not None:
        order = jnp.arange(num_steps)
        order = order[::-1] if scan_reverse else order

    if remat or not hoist:  # the projection moves into the step
        original = cell

        def recur(params, carry, x_t):
            return original.recur(params, carry, original.project(params, x_t))

        cell = cell._replace(recur=recur)
        xps = xs
    else:
        xps = cell.project(params, xs)

    def body(carry, inputs):
        s, xp_t, valid_t = inputs
        if truncate is not None:
            cut = (s > 0) & (s % truncate == 0)
            if valid_t is not None:
                cut = cut & valid_t  # a padded step passes the carry on untouched
            carry = masking.keep(cut, jax.lax.stop_gradient(carry), carry)
        new_carry, y_t = cell.recur(params, carry, xp_t)
        if valid_t is not None:
            new_carry = masking.keep(valid_t, new_carry, carry)
            y_t = masking.zero(valid_t, y_t)
        return new_carry, y_t

    if remat:
        return _checkpointed_scan(body, carry, (order, xps, valid), scan_reverse, unroll)
    return jax.lax.scan(body, carry, (order, xps, valid), reverse=scan_reverse, unroll=unroll)


def _checkpointed_scan(body, carry, inputs, reverse: bool, unroll: int):
    """`lax.scan(body, carry, inputs)` in ⌈√T⌉ chunks of ⌈√T⌉ steps, each chunk `jax.checkpoint`ed.

    The backward pass keeps only the carry at each chunk's start (and recomputes
    one chunk at a time), so memory is O(√T·carry) plus the outputs instead of
    O(T·activations). Steps padded on to fill the last chunk are masked out
    (carry unchanged, zeros emitted) and cut from the outputs.
    """
    order, xps, valid = inputs
    num_steps = xps.shape[0]
    size = max(1, math.isqrt(num_steps - 1) + 1) if num_steps > 1 else 1
    chunks = -(-num_steps // size)
    if valid is None:
        valid = jnp.ones(xps.shape[:-1], bool)

    def chunked(a):  # [T, ...] -> [chunks, size, ...], padded at the end
        pad = [(0, chunks * size - num_steps)] + [(0, 0)] * (a.ndim - 1)
        return jnp.pad(a, pad).reshape(chunks, size, *a.shape[1:])

    inputs = jax.tree.map(chunked, (order, xps, valid))

    @functools.partial(jax.checkpoint, prevent_cse=False)
    def chunk(carry, inputs):
        return jax.lax.scan(body, carry, inputs, reverse=reverse, unroll=unroll)

    carry, ys = jax.lax.scan(chunk, carry, inputs, reverse=reverse)
    return carry, ys.reshape(chunks * size, *ys.shape[2:])[:num_steps]
