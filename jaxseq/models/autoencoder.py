"""Autoencoders: dense (linear ≡ PCA, sigmoid), denoising, sequence, greedy layer-wise pretraining.

The lecture's autoencoder compresses x ∈ R^D into a code z ∈ R^k and back
(weights right-multiply, as everywhere in jaxseq):

    z = σ(x W + b)                 encoder
    x̂ = z D + c                    linear decoder
    L = Σ_n ‖x̂_n − x_n‖²           reconstruction error

    ae = autoencoder((32,), corruption=corruption("mask", 0.25))    # denoising
    params = ae.init(key, input_size=64)
    z = ae.encode(params, x)                                        # [*batch, 64] -> [*batch, 32]
    loss = reconstruction_loss(ae, params, x, key=step_key)         # key: corrupt the input

    sae = sequence_autoencoder(jaxseq.rnn(jaxseq.lstm(64)), jaxseq.rnn(jaxseq.lstm(64)))
    params = sae.init(key, input_size=12)
    z = sae.embed(params, xs, lengths)                              # [T, B, 12] -> [B, 128]
    loss = sequence_reconstruction_error(sae.apply(params, xs, lengths), xs, lengths)

The pieces live in `autoencoder_dense` (dense models, corruptions),
`autoencoder_sequence` and `autoencoder_layerwise` (stacked pretraining).
"""

from jaxseq.models.autoencoder_dense import (
    CORRUPTIONS,
    Autoencoder,
    Corruption,
    autoencoder,
    corruption,
    gaussian_noise,
    mask_noise,
    reconstruction_loss,
)
from jaxseq.models.autoencoder_layerwise import (
    encode_stack,
    freeze,
    layerwise_loss,
    mlp_from_encoders,
)
from jaxseq.models.autoencoder_sequence import (
    SequenceAutoencoder,
    sequence_autoencoder,
    sequence_reconstruction_error,
)

__all__ = [
    "CORRUPTIONS",
    "Autoencoder",
    "Corruption",
    "SequenceAutoencoder",
    "autoencoder",
    "corruption",
    "encode_stack",
    "freeze",
    "gaussian_noise",
    "layerwise_loss",
    "mask_noise",
    "mlp_from_encoders",
    "reconstruction_loss",
    "sequence_autoencoder",
    "sequence_reconstruction_error",
]
