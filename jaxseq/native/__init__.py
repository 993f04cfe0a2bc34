"""Fused CPU kernels for the Elman, LSTM and GRU layers, called through the XLA FFI.

On a CPU, `jaxseq.unroll` runs the standard Elman (tanh), LSTM (sigmoid/tanh,
forget gate, no peepholes) and GRU (reset after the product) cells in float32
with one hand-written kernel per direction (`rnn_cpu.cc`) instead of a
`lax.scan`, the way PyTorch runs oneDNN's RNN primitive:

- forward: each step's `x_t W + h_{t-1} U`, the gates, the state and the output
  in one pass over a tile that stays in cache (a 12×32 AVX-512 micro-kernel where
  the CPU has AVX-512F, else a 6×16 AVX2/FMA one, over weights packed once per
  call), split over threads by batch row, or by hidden
  unit with one barrier per step (the helper threads start once per process and
  wait between calls);
- backward: a reverse loop that computes the gates' pre-activation gradients
  ∂z_t and ∂h_{t-1} = ∂z_t Uᵀ. Where the weight gradients fit twice a core's L2,
  and for the GRU up to 32 MiB (`grads_in_kernel`), it also adds x_tᵀ∂z_t,
  h_{t-1}ᵀ∂z_t and ∂z_t to them every few steps; else they are single large products
  over all steps in XLA, as the input gradient ∂z Wᵀ always is.

The kernel is compiled from source with the system's C++ compiler (`$CXX`, else
`g++`) against jaxlib's FFI headers the first time it is needed, and cached in
`$JAXSEQ_CACHE_DIR` (default `~/.cache/jaxseq`). Where it cannot be built or run
(no compiler, no AVX2/FMA, another platform), `unroll` uses the XLA path with
the same results; `status()` says which and why.

`JAXSEQ_NATIVE_THREADS` sets the thread count (default: the CPUs this process
may run on); `JAXSEQ_NATIVE_ISA=avx2` keeps the AVX2 micro-kernel on a CPU with
AVX-512 (`isa()` says which one runs).
"""

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

_SOURCE = Path(__file__).with_name("rnn_cpu.cc")
_FLAGS = ("-O3", "-mavx2", "-mfma", "-std=c++17", "-fPIC", "-shared", "-w")
CELLS = {"elman": 0, "lstm": 1, "gru": 2}
_GATES = {"elman": 1, "lstm": 4, "gru": 3}
_ACTS = {"elman": 1, "lstm": 4, "gru": 3}  # saved activations per unit


def _cache_dir() -> Path:
    return Path(os.environ.get("JAXSEQ_CACHE_DIR") or Path.home() / ".cache" / "jaxseq")


def _build() -> Path:
    """Compiles `rnn_cpu.cc` (once per source, flags and jaxlib version) and returns the library."""
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set $CXX)")
    include = jax.ffi.include_dir()
    key = hashlib.sha256(
        _SOURCE.read_bytes() + " ".join((compiler, *_FLAGS, jax.__version__)).encode()
    ).hexdigest()[:16]
    target = _cache_dir() / f"rnn_cpu-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        cmd = [compiler, *_FLAGS, f"-I{include}", str(_SOURCE), "-o", str(built)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
        os.replace(built, target)  # atomic: concurrent builders agree on the result
    return target


@functools.cache
def _load() -> tuple[bool, str]:
    """Builds, loads and registers the kernels once per process: `(ok, reason)`."""
    if os.environ.get("JAXSEQ_NATIVE", "1") == "0":
        return False, "disabled by JAXSEQ_NATIVE=0"
    try:
        lib = ctypes.CDLL(str(_build()))
    except Exception as error:  # no compiler, no FFI headers, unwritable cache: use XLA
        return False, f"the kernel could not be built or loaded: {error!r}"
    level = lib.jaxseq_native_supported()  # 0: no AVX2/FMA, 1: AVX2, 2: AVX-512 too
    if not level:
        return False, "this CPU lacks AVX2/FMA"
    _ISAS[:] = ISAS[:level]
    lib.jaxseq_native_fma_probe.restype = ctypes.c_double
    lib.jaxseq_native_fma_probe.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64]
    _LIB[:] = [lib]
    for name, symbol in (("forward", lib.JaxseqRnnForward), ("backward", lib.JaxseqRnnBackward)):
        jax.ffi.register_ffi_target(f"jaxseq_rnn_{name}", jax.ffi.pycapsule(symbol), platform="cpu")
    return True, "built and registered"


def status() -> tuple[bool, str]:
    """Whether the native kernels can run in this process, and why not (builds them if needed)."""
    return _load()


ISAS = ("avx2", "avx512")  # the micro-kernels, narrowest first
_ISAS: list[str] = []  # those this CPU runs, filled by `_load`
_LIB: list[ctypes.CDLL] = []  # the loaded library, filled by `_load`


def isas() -> tuple[str, ...]:
    """The micro-kernels this CPU runs, narrowest first (empty where the kernels cannot run)."""
    _load()
    return tuple(_ISAS)


def isa() -> str:
    """The products' micro-kernel: `$JAXSEQ_NATIVE_ISA` if set, else the widest this CPU runs.

    "avx512" (AVX-512F, 12×32 tiles) or "avx2" (AVX2/FMA, 6×16); "" where the
    kernels cannot run here (`status()` says why).
    """
    if not _load()[0]:
        return ""
    value = os.environ.get("JAXSEQ_NATIVE_ISA")
    if value:
        if value not in ISAS:
            raise ValueError(f"JAXSEQ_NATIVE_ISA must be one of {ISAS}, got {value!r}")
        if value not in _ISAS:
            raise ValueError(f"JAXSEQ_NATIVE_ISA={value!r}, but this CPU runs only {tuple(_ISAS)}")
        return value
    return _ISAS[-1]


def threads() -> int:
    """Threads per kernel call: `$JAXSEQ_NATIVE_THREADS`, else the CPUs this process may use."""
    value = os.environ.get("JAXSEQ_NATIVE_THREADS")
    if value:
        if not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"JAXSEQ_NATIVE_THREADS must be a positive integer, got {value!r}")
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def fma_probe(rounds: int) -> float:
    """Runs `rounds` rounds of 12 independent vector FMAs, in registers only, on each of
    `threads()` threads at once, `isa()`'s width (AVX-512: 16 lanes, AVX2: 8), and
    returns the float32 FLOPs done.

    Timed, it gives this CPU's peak float32 FMA rate: the ceiling of any float32
    product here, the kernels' and XLA's (`python -m benchmarks.speed` reports it
    beside the matmul rate). Raises RuntimeError where the kernels cannot run
    (`status()` says why), ValueError for `rounds` that is not a positive integer.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    ok, why = _load()
    if not ok:
        raise RuntimeError(f"jaxseq.native cannot run here: {why}")
    return _LIB[0].jaxseq_native_fma_probe(threads(), int(isa() == "avx512"), int(rounds))


def reason_not(cell, params, xs, carry) -> str | None:
    """None when `unroll` can run `cell` natively on these arguments, else why not."""
    spec = cell.recurrent
    kind = None if spec is None else spec.kernel
    if kind is None:
        return "it has no native kernel (the standard elman, lstm and gru cells do)"
    if spec.compute_dtype is not None:
        return f"compute_dtype={spec.compute_dtype} (the kernels compute in float32)"
    if jax.default_backend() != "cpu":
        return f"the default backend is {jax.default_backend()!r}, not 'cpu'"
    if jax.device_count() > 1:
        return f"{jax.device_count()} devices (the kernel has no rule to split over a mesh)"
    leaves = [params.w_x, params.w_h, params.b, *jax.tree.leaves(carry)]
    if any(leaf.dtype != jnp.float32 for leaf in leaves):
        return "params and carry must be float32"
    if cell.hidden_size % 8:
        return f"hidden_size={cell.hidden_size} is not a multiple of 8"
    if xs.size == 0 and xs.shape[0] > 0:
        return "empty batch or input features"
    ok, why = _load()
    return None if ok else why


_CACHE_INFO = Path("/sys/devices/system/cpu/cpu0/cache")


def l2_bytes(default: int = 512 * 1024, root: Path = _CACHE_INFO) -> int:
    """One core's L2 cache in bytes, from Linux's sysfs (`root`), else `default`."""
    for index in sorted(Path(root).glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        if level == "2" and kind in ("Unified", "Data") and size[:-1].isdigit():
            scale = {"K": 1024, "M": 1024**2}.get(size[-1])
            if scale:
                return int(size[:-1]) * scale
    return default


# The largest weight and bias gradients (bytes, per kernel thread) the Elman and
# LSTM backward kernels sum themselves, every few steps while those steps' ∂z are
# in cache: twice one core's L2. Larger ones are single products over all steps in
# XLA after the kernel, which ran faster there. Measured in one process, turn about
# (train step, `python -m benchmarks.grad_sums`). On the Zen 5 (1 MiB L2), median ms,
# the kernel's sums in 128-row chunks against XLA's products: LSTM at (T, B, D, H) =
# (100, 64, 128, 256), 1.6 MB of gradients per thread, 38.81 / 39.58 and 39.12 /
# 40.74 (`--cell=lstm --chunks=128,512,2048 --rounds=80`, twice); Elman at (50, 256,
# 256, 512), 1.5 MB, 76.69 / 80.97 (`--cell=elman --chunks=128,512 --rounds=30`);
# LSTM at (100, 64, 192, 256), 1.8 MB, 43.83 / 45.18; past the bound, LSTM at (100,
# 64, 128, 384), 3.1 MB, 73.9 / 75.5 (512 rows), at (100, 32, 64, 512), 4.7 MB, 64.9
# / 61.1, and at (50, 256, 256, 512), 6.3 MB, 290 / 277. Earlier, one L2 was the
# bound: on a Zen 3 (512 KiB L2) XLA's products were faster at 1.5 MiB; on a Xeon
# with 2 MiB L2 the kernel was 4% faster there and 6% slower at 6 MiB.
GRADS_IN_KERNEL_BYTES = 2 * l2_bytes()
# The same for the GRU, past L2 up to the largest scratch block the kernel keeps
# between calls (32 MiB; a larger one is mapped afresh every call). XLA's products
# for the GRU compute h_{t-1}ᵀ∂z over all 3H columns and then h_{t-1}ᵀ(dn·r) for
# U_n, a third more work on U than the kernel's sums. GRU train step, `python -m
# benchmarks.grad_sums --chunks=512` on the Zen 5, kernel against XLA, median ms:
# 4.08 / 7.74 at (200, 4, 128, 256), 138.1 / 145.3 at (50, 32, 64, 1024), 139.1 /
# 142.2 at (100, 64, 512, 512), 154.0 / 161.8 at (20, 32, 128, 1536) (30 MiB of
# gradients per thread); past the bound, 529.6 / 498.3 at (20, 64, 256, 2048)
# (56 MiB). Shapes B and D: below, and README, "Speed".
GRU_GRADS_IN_KERNEL_BYTES = 32 << 20
# Its updates sum about this many rows of ∂z (a thread's batch rows at consecutive
# steps) at a time: a longer sum per load and store of the gradients' tiles, while
# those steps' ∂z stay in cache. 64-128 ran fastest at (100, 32, 32, 128).
GRAD_CHUNK_ROWS = 128
# The same where the gradients outgrow GRADS_IN_KERNEL_BYTES (the GRU's): their
# tiles then come from L3, so each load and store should serve a longer sum. GRU
# train step, `python -m benchmarks.grad_sums --chunks=128,512,2048 --rounds=20` on
# the Zen 5: medians 228.9 / 218.6 / 215.0 ms against 228.4 for XLA's products at
# (50, 256, 256, 512); with `--shape=100,64,128,256 --rounds=40` (1.2 MB per thread,
# within GRADS_IN_KERNEL_BYTES: 128 rows), 30.79 / 30.77 / 32.36 against 35.19.
GRAD_CHUNK_ROWS_PAST_L2 = 512
# Whether each of those updates loads the next tile of the gradients ahead
# (`_mm_prefetch`, while the current tile computes): between two updates the rest
# of the backward step evicts them from cache. GRU train step at (50, 256, 256,
# 512), `python -m benchmarks.grad_sums --chunks=512 --prefetch=both --rounds=20`
# on the Zen 5, median ms with and without: 222.42 / 229.95 and 210.10 / 215.06;
# level where the gradients fit in cache (LSTM and GRU at (100, 64, 128, 256), LSTM
# at (100, 32, 32, 128), `--chunks=128`).
GRAD_TILE_PREFETCH = True


def _grad_bytes(kind: str, D: int, H: int) -> int:
    if kind not in CELLS:
        raise ValueError(f"kind must be one of {tuple(CELLS)}, got {kind!r}")
    for name, value in (("D", D), ("H", H)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    K = _GATES[kind] * H
    return 4 * ((D + H) * K + K + H)


def grads_in_kernel(kind: str, D: int, H: int) -> bool:
    """Whether the backward kernel sums the weight and bias gradients (else XLA does):
    where they fit `GRADS_IN_KERNEL_BYTES` (the GRU: `GRU_GRADS_IN_KERNEL_BYTES`).

    Args:
      kind: the kernel's cell, one of `CELLS` ("elman", "lstm", "gru").
      D: input features, a positive integer.
      H: hidden units, a positive integer.
    """
    bound = GRU_GRADS_IN_KERNEL_BYTES if kind == "gru" else GRADS_IN_KERNEL_BYTES
    return _grad_bytes(kind, D, H) <= bound


def grad_chunk_rows(kind: str, D: int, H: int) -> int:
    """Rows of ∂z per update of the kernel's gradient sums: `GRAD_CHUNK_ROWS` where the
    gradients fit `GRADS_IN_KERNEL_BYTES`, else `GRAD_CHUNK_ROWS_PAST_L2`. Arguments as
    for `grads_in_kernel`."""
    fits = _grad_bytes(kind, D, H) <= GRADS_IN_KERNEL_BYTES
    name = "GRAD_CHUNK_ROWS" if fits else "GRAD_CHUNK_ROWS_PAST_L2"
    rows = GRAD_CHUNK_ROWS if fits else GRAD_CHUNK_ROWS_PAST_L2
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"jaxseq.native.{name} must be a positive integer, got {rows!r}")
    return rows


HIGHER_ORDER = (
    "jaxseq's native kernel gives first-order reverse-mode derivatives only (jax.grad, "
    "jax.vjp); for second derivatives (Hessian-vector products, grad of grad) pass "
    "kernel='xla' to unroll (or set JAXSEQ_NATIVE=0)"
)


def _call(name: str, outs, *args, cell: str, reverse: bool, masked: bool, aliases=None, **extra):
    out_types = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in outs]
    kernel = jax.ffi.ffi_call(
        f"jaxseq_rnn_{name}", out_types, vmap_method="sequential", input_output_aliases=aliases
    )
    attrs = dict(
        cell=np.int64(CELLS[cell]),
        reverse=np.int64(reverse),
        threads=np.int64(threads()),
        masked=np.int64(masked),
        wide=np.int64(isa() == "avx512"),
        **{key: np.int64(value) for key, value in extra.items()},
    )

    @jax.custom_jvp
    def call(*args):
        return tuple(kernel(*args, **attrs))

    @call.defjvp
    def no_jvp(primals, tangents):  # reached by differentiating the VJP itself
        raise TypeError(HIGHER_ORDER)

    return call(*args)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _run(kind, reverse, w_x, b, w_h, b_hn, x, h0, c0, valid):
    return _forward_call(kind, reverse, w_x, b, w_h, b_hn, x, h0, c0, valid, save=False)[:3]


def xh_transposed(kind: str, D: int, H: int) -> bool:
    """Whether a training step saves `[x_t | h_{t-1}]` transposed, `[D + H, T·B]`, for XLA.

    Where XLA computes the weight gradients (`grads_in_kernel` is False), the LSTM and
    Elman forward kernels save `[x | h_{t-1}]ᵀ` instead of `h_{t-1}`, and ∂[W; U] is one
    product `[x | h]ᵀ ∂z` with both operands in the layout XLA's CPU dot ran fastest
    (`python -m benchmarks.grad_layout`, at (T, B, D, H) = (100, 64, 128, 256), median
    11.2-12.5 ms against 14.9-16.0 ms for `xᵀ ∂z` and `hᵀ ∂z` as transposed operands;
    level at (50, 256, 256, 512)). The GRU's backward kernel reads h_{t-1}
    by row, so it keeps that layout. Arguments as for `grads_in_kernel`.
    """
    return not grads_in_kernel(kind, D, H) and kind != "gru"


def _forward_call(kind, reverse, w_x, b, w_h, b_hn, x, h0, c0, valid, save: bool):
    T, B, D = x.shape
    H = w_h.shape[0]
    transposed = save and xh_transposed(kind, D, H)
    # activations, h_{t-1} (or [x | h_{t-1}]ᵀ), and "extra": LSTM c_{t-1}, GRU h_{t-1} U_n + b_hn
    hprev = (D + H, T * B) if transposed else (T, B, H)
    saved = [(T, B, _ACTS[kind] * H), hprev, (T, B, H) if kind != "elman" else (0,)]
    outs = [(T, B, H), (B, H), (B, H), *(saved if save else [(0,)] * 3)]
    args = (x, w_x, b, w_h, b_hn, h0, c0, valid)
    return _call(
        "forward", outs, *args, cell=kind, reverse=reverse, masked=valid.size > 0, xh_t=transposed
    )


def _fwd(kind, reverse, w_x, b, w_h, b_hn, x, h0, c0, valid):
    ys, hT, cT, acts, hprev, extra = _forward_call(
        kind, reverse, w_x, b, w_h, b_hn, x, h0, c0, valid, save=True
    )
    return (ys, hT, cT), (w_x, w_h, b_hn, x, acts, hprev, extra, valid)


def _bwd(kind, reverse, residuals, cotangents):
    w_x, w_h, b_hn, x, acts, hprev, extra, valid = residuals
    d_ys, d_hT, d_cT = cotangents
    T, B, D = x.shape
    H = w_h.shape[0]
    K = _GATES[kind] * H
    # dzx: ∂ of every gate's pre-activation; dzh (GRU): ∂(h U_n + b_hn) = dn · r.
    outs = [(T, B, K), (T, B, H) if kind == "gru" else (0,), (B, H), (B, H)]
    in_kernel = grads_in_kernel(kind, D, H)
    chunk_rows = grad_chunk_rows(kind, D, H) if in_kernel else 0  # (0: unused)
    if not isinstance(GRAD_TILE_PREFETCH, bool):
        raise ValueError(
            f"jaxseq.native.GRAD_TILE_PREFETCH must be True or False, got {GRAD_TILE_PREFETCH!r}"
        )
    if in_kernel:  # the weight and bias gradients, summed by the kernel
        outs += [(D, K), (H, K), (K,), (H,) if kind == "gru" else (0,)]
    else:
        outs += [(0,)] * 4
    args = (w_h, acts, hprev, extra, valid, d_ys, d_hT, d_cT, x)
    # The kernel writes dzx over the activations and dzh over GRU's `extra` (it
    # reads a unit's residuals before writing its gradients): [T, B, K] less (GRU:
    # [T, B, 6H]) for XLA to allocate, and for the OS to page in, on every call.
    in_place = {1: 0} | ({3: 1} if kind == "gru" else {})
    dzx, dzh, d_h0, d_c0, d_w_x, d_w_h, d_b, d_b_hn = _call(
        "backward",
        outs,
        *args,
        cell=kind,
        reverse=reverse,
        masked=valid.size > 0,
        aliases=in_place,
        chunk_rows=chunk_rows,
        prefetch=in_kernel and GRAD_TILE_PREFETCH,
    )
    d_x = dzx @ w_x.T
    if in_kernel:
        return d_w_x, d_b, d_w_h, d_b_hn, d_x, d_h0, d_c0, None
    flat = lambda a: a.reshape(T * B, a.shape[-1])  # noqa: E731
    d_b = dzx.sum(axis=(0, 1))
    if xh_transposed(kind, D, H):  # hprev is [x | h_{t-1}]ᵀ: one product for W and U
        d_w = hprev @ flat(dzx)
        return d_w[:D], d_b, d_w[D:], jnp.zeros_like(b_hn), d_x, d_h0, d_c0, None
    # The GRU, whose backward kernel reads h_{t-1} by row: Σ_t h_{t-1}ᵀ ∂z_t, one product
    # over all steps. U_n sees dn · r, not dn (the product's last H columns are dropped:
    # cheaper than slicing dzx, which XLA copies).
    d_w_h = flat(hprev).T @ flat(dzx)
    d_w_h = jnp.concatenate([d_w_h[:, : 2 * H], flat(hprev).T @ flat(dzh)], axis=1)
    d_w_x = flat(x).T @ flat(dzx)
    return d_w_x, d_b, d_w_h, dzh.sum(axis=(0, 1)), d_x, d_h0, d_c0, None


_run.defvjp(_fwd, _bwd)


def scan(cell, params, xs, carry, valid, reverse: bool):
    """`unroll`'s sequential scan of `cell` by the native kernels: `(final_carry, ys)`.

    Args:
      cell: a cell whose `cell.recurrent.kernel` names a kernel ("elman", "lstm", "gru").
        Anything `reason_not` rejects raises a ValueError with its reason.
      params: its float32 parameters.
      xs: `[T, *batch, in]`, any float dtype (cast to float32, as `cell.project` does).
      carry: the initial carry (float32).
      valid: None, or bool `[T, *batch]`: False steps keep the carry and emit zeros.
      reverse: scan from the last step to the first.
    """
    why = reason_not(cell, params, xs, carry)
    if why is not None:
        raise ValueError(f"jaxseq.native.scan cannot run {cell.name}: {why}")
    kind = cell.recurrent.kernel
    T, batch, D = xs.shape[0], xs.shape[1:-1], xs.shape[-1]
    B = int(np.prod(batch))
    H = cell.hidden_size
    leaves, treedef = jax.tree.flatten(carry)
    h0 = leaves[0].reshape(B, H)
    c0 = leaves[1].reshape(B, H) if kind == "lstm" else jnp.zeros((B, H), jnp.float32)
    b_hn = params.b_hn if kind == "gru" else jnp.zeros((0,), jnp.float32)
    mask = jnp.zeros((0,), bool) if valid is None else valid.reshape(T, B)
    x = xs.astype(jnp.float32).reshape(T, B, D)
    ys, hT, cT = _run(kind, reverse, params.w_x, params.b, params.w_h, b_hn, x, h0, c0, mask)
    final = [hT.reshape(*batch, H)] + ([cT.reshape(*batch, H)] if kind == "lstm" else [])
    return jax.tree.unflatten(treedef, final), ys.reshape(T, *batch, H)
