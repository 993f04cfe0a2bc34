"""Greedy layer-wise pretraining of a deep MLP with stacked (denoising) autoencoders.

    h_0 = x
    for i = 1..L:   train an autoencoder on h_{i-1} (its encoder f(h W_i + b_i), any decoder),
                    keeping W_1..W_{i-1} frozen;  h_i = f(h_{i-1} W_i + b_i)
    MLP:            hidden layers (W_i, b_i) from the encoders, a fresh readout; fine-tune all

(Hinton & Salakhutdinov 2006; Bengio et al. 2007; Vincent et al. 2010.) A stage
trains params `{"frozen": encoders below, "autoencoder": this layer's}` with
`layerwise_loss` and the optimizer wrapped by `freeze`, so one vmapped train
step serves K seeds even though each seed has its own frozen encoders. The MLP
params from `mlp_from_encoders` are `jaxseq.models.mlp(hidden_sizes, O,
activation=f, seq_len=1)` params: its `apply` takes `x[None]` (`[1, *batch, D]`).
"""

from collections.abc import Callable, Sequence

import jax
import optax
from jaxtyping import Array, Float

from jaxseq import _checks
from jaxseq.models import _dense
from jaxseq.models.autoencoder_dense import (
    Autoencoder,
    activation,
    check_features,
    dense_stack,
    reconstruction_loss,
)
from jaxseq.types import PRNGKey

FROZEN = "frozen"


def encode_stack(
    encoders: Sequence[_dense.DenseParams],
    x: Float[Array, "*batch in"],
    activation_fn: str | _dense.Activation = "sigmoid",
) -> Float[Array, "*batch out"]:
    """The codes of a stack of encoders, h_i = f(h_{i-1} W_i + b_i); `x` itself for none.

    Args:
      encoders: DenseParams of layers 1..i (an `Autoencoder`'s `params["encoder"]`,
        or the encoders of several stages).
      x: `[*batch, D]`.
      activation_fn: f, a key of `jaxseq.cells.ACTIVATIONS`, "linear", or a callable.

    Returns:
      `[*batch, width of the last encoder]`.
    """
    f = activation("activation_fn", activation_fn)
    encoders = tuple(encoders)
    if not encoders:
        return x
    check_features("x", x, encoders[0].w.shape[0])
    return dense_stack(encoders, x, f, f)


def layerwise_loss(
    model: Autoencoder, activation_fn: str | _dense.Activation = "sigmoid"
) -> Callable:
    """The loss of one greedy stage: reconstruct the frozen stack's codes of a batch.

        h = stop_gradient(encode_stack(params["frozen"], x))
        loss = reconstruction_loss(model, params["autoencoder"], h, key=key)

    Args:
      model: the stage's `Autoencoder` (its corruption, if any, makes it denoising).
      activation_fn: f of the frozen encoders.

    Returns:
      `loss_fn(params, x, key) -> (loss, {})` for `training.make_train_step`.
    """
    activation("activation_fn", activation_fn)

    def loss_fn(params: dict, x: jax.Array, key: PRNGKey):
        codes = encode_stack(jax.lax.stop_gradient(params[FROZEN]), x, activation_fn)
        return reconstruction_loss(model, params["autoencoder"], codes, key=key), {}

    return loss_fn


def freeze(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """`optimizer` for every param except `params["frozen"]`, which gets zero updates."""

    def labels(params: dict) -> dict:
        if not isinstance(params, dict) or FROZEN not in params:
            raise ValueError(f"params must be a dict with a {FROZEN!r} entry, got {type(params)}")
        return {
            name: jax.tree.map(lambda _, n=name: FROZEN if n == FROZEN else "train", value)
            for name, value in params.items()
        }

    return optax.multi_transform({"train": optimizer, FROZEN: optax.set_to_zero()}, labels)


def mlp_from_encoders(
    key: PRNGKey, encoders: Sequence[_dense.DenseParams], output_size: int
) -> dict:
    """MLP params whose hidden layers are the pretrained encoders and whose readout is fresh.

    Args:
      key: PRNG key of the readout (Glorot uniform, zero bias).
      encoders: DenseParams of the L hidden layers, input first.
      output_size: O.

    Returns:
      `{"hidden": tuple(encoders), "readout": DenseParams [H_L, O]}`, the params of
      `jaxseq.models.mlp(widths, O, activation=f, seq_len=1)` on `D` input features.
    """
    encoders = tuple(encoders)
    if not encoders or not all(isinstance(e, _dense.DenseParams) for e in encoders):
        raise TypeError(f"encoders must be a non-empty sequence of DenseParams, got {encoders!r}")
    _checks.check_positive_int("output_size", output_size)
    for index, (below, above) in enumerate(zip(encoders[:-1], encoders[1:]), 1):
        if below.w.shape[-1] != above.w.shape[-2]:
            raise ValueError(
                f"encoders[{index}] must take {below.w.shape[-1]} inputs (the width of "
                f"encoders[{index - 1}]), got w of shape {above.w.shape}"
            )
    readout = _dense.dense(key, encoders[-1].w.shape[-1], output_size)
    return {"hidden": encoders, "readout": readout}
