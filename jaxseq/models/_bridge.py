"""Bridges between an encoder's final carry and a decoder's initial carry.

Shared by the encoder–decoder models (seq2seq, sequence autoencoders). Carries
are the stacked carries of `jaxseq.rnn(...)` layers: every leaf `[L·D, *batch, H]`.
"""

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxseq.layers import Layer
from jaxseq.models import _dense
from jaxseq.types import Carry, PRNGKey

BRIDGES = ("auto", "identity", "dense")


def carry_spec(layer: Layer, input_size: int) -> Any:
    """Shapes of the layer's stacked carry for one example: leaves `[L·D, H]` (ShapeDtypeStruct)."""
    params = jax.eval_shape(lambda k: layer.init(k, input_size), jax.random.key(0))
    one = jax.eval_shape(lambda p: layer.cell.initial_carry(p[0][0], ()), params)
    count = layer.num_layers * layer.num_directions
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct((count, *s.shape), s.dtype), one)


def flatten_carry(carry: Carry) -> Float[Array, "*batch n"]:
    """A stacked carry (leaves `[L·D, *batch, H]`) as one vector per example (leaves joined)."""
    flat = [jnp.moveaxis(leaf, 0, -2) for leaf in jax.tree.leaves(carry)]
    return jnp.concatenate([f.reshape((*f.shape[:-2], -1)) for f in flat], axis=-1)


def init_bridge(key: PRNGKey, source_spec: Any, target_spec: Any) -> tuple:
    """One dense layer per target carry leaf, from the flattened source carry."""
    in_size = sum(s.size for s in jax.tree.leaves(source_spec))
    leaves = jax.tree.leaves(target_spec)
    keys = jax.random.split(key, len(leaves))
    return tuple(_dense.dense(k, in_size, s.size) for k, s in zip(keys, leaves, strict=True))


def apply_bridge(params: tuple, carry: Carry, target_spec: Any) -> Carry:
    """`tanh(flatten(carry) W_i + b_i)` reshaped into target carry leaf i `[L·D, *batch, H]`."""
    z = flatten_carry(carry)
    leaves, tree = jax.tree.flatten(target_spec)
    out = []
    for p, spec in zip(params, leaves, strict=True):
        h = jnp.tanh(_dense.dense_apply(p, z)).reshape((*z.shape[:-1], *spec.shape))
        out.append(jnp.moveaxis(h, -2, 0))
    return jax.tree.unflatten(tree, out)


def same_spec(a: Any, b: Any) -> bool:
    """Whether two carry specs have the same structure, leaf shapes and dtypes."""
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        x.shape == y.shape and x.dtype == y.dtype
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def needs_dense(bridge: str, source_spec: Any, target_spec: Any) -> bool:
    """Whether `bridge` ("auto", "identity" or "dense") learns a dense map between the carries.

    "identity" passes the carry through and needs equal specs (else `ValueError`);
    "auto" is identity when the specs are equal, dense otherwise.
    """
    if bridge == "identity" and not same_spec(source_spec, target_spec):
        raise ValueError(
            f"bridge='identity' needs equal encoder and decoder carries, got {source_spec} and "
            f"{target_spec}; use bridge='dense'"
        )
    return bridge == "dense" or not same_spec(source_spec, target_spec)
