"""Many-to-one: a recurrent layer, pooling over time, and a dense readout."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxseq import _checks
from jaxseq.layers import Layer
from jaxseq.models import _dense, _sequence
from jaxseq.types import PRNGKey


def _last_states(layer: Layer, ys: jax.Array, lengths: jax.Array) -> jax.Array:
    """Each direction's output after reading the whole sequence.

    Forward: `ys[length - 1]`. Backward (bidirectional layers): `ys[0]`, the
    backward direction reads each sequence from its last valid step down to 0.
    """
    if layer.num_directions == 1:
        return _sequence.last_valid(ys, lengths)
    h = layer.cell.hidden_size
    forward = _sequence.last_valid(ys[..., :h], lengths)
    return jnp.concatenate([forward, ys[0, ..., h:]], axis=-1)


def classifier(
    layer: Layer,
    num_classes: int,
    *,
    pooling: str = "last",
    dropout: float = 0.0,
    compute_dtype=None,
) -> _sequence.Model:
    """A sequence classifier (many-to-one): RNN → pool over time → dense readout.

        ys, _ = layer(xs)                  # [T, *batch, D·H]
        z = pool(ys, lengths)              # [*batch, D·H]
        logits = dropout(z) W + b          # [*batch, num_classes]

    Pooling (padded steps never contribute; a length-0 sequence pools to zeros):
      "last": the output at each sequence's last valid step, `ys[length - 1]`;
        for a bidirectional layer the backward half is taken at step 0 (where
        the backward direction has read the whole sequence), as PyTorch's h_n.
      "mean": the mean of the valid outputs.
      "max": the elementwise max of the valid outputs.

    `apply(params, xs, lengths=None, *, key=None) -> logits`:
      xs: float `[T, *batch, input_size]`; lengths: int `[*batch]` in [0, T]
      (None: all T steps valid); key: switches dropout on (between the layer's
      layers and before the readout); logits: `[*batch, num_classes]`.

    Args:
      layer: a `jaxseq.rnn(...)` layer.
      num_classes: C, the width of the readout.
      pooling: "last", "mean" or "max".
      dropout: dropout rate on the pooled features (only when `apply` gets a key).
      compute_dtype: dtype of the readout's matrix product (None: the parameter
        dtype; `jnp.bfloat16`: bfloat16 operands, float32 accumulation and
        logits). The layer's precision is its cell's own `compute_dtype`.

    Returns:
      A `Model`; params `{"rnn": layer params, "readout": DenseParams}`.
    """
    _sequence.check_layer("layer", layer)
    _checks.check_positive_int("num_classes", num_classes)
    _checks.check_option("pooling", pooling, _sequence.POOLINGS)
    _dense.check_rate("dropout", dropout)
    compute_dtype = _checks.check_compute_dtype(compute_dtype)

    def init(key: PRNGKey, input_size: int) -> dict:
        k_rnn, k_out = jax.random.split(key)
        return {
            "rnn": layer.init(k_rnn, input_size),
            "readout": _dense.dense(k_out, layer.output_size, num_classes),
        }

    def apply(
        params: dict,
        xs: Float[Array, "time *batch in"],
        lengths: Int[Array, "*batch"] | None = None,
        *,
        key: PRNGKey | None = None,
    ) -> Float[Array, "*batch classes"]:
        _sequence.check_features("xs", xs, _sequence.layer_input_size(layer, params["rnn"]))
        full = _sequence.lengths_or_full(lengths, xs.shape[0], tuple(xs.shape[1:-1]))
        k_rnn, k_drop = _sequence.split_key(key, 2)
        ys, _ = layer.apply(params["rnn"], xs, lengths=lengths, key=k_rnn)
        if pooling == "last":
            pooled = _last_states(layer, ys, full)
        else:
            pooled = _sequence.pool(ys, full, pooling)
        pooled = _dense.dropout(k_drop, dropout, pooled)
        return _dense.dense_apply(params["readout"], pooled, compute_dtype)

    return _sequence.Model(init, apply)
