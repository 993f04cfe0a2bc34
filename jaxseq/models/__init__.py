"""Heads and whole models on `jaxseq.rnn(...)` layers, and non-recurrent baselines.

Every model is a NamedTuple of pure functions, `init(key, ...) -> params` and
`apply(params, ..., *, key=None)`, where `key` only switches dropout on. Params
are dicts such as `{"rnn": layer params, "readout": DenseParams}`.

    model = models.classifier(jaxseq.rnn(jaxseq.lstm(64)), num_classes=10)
    params = model.init(key, input_size=8)
    logits = model.apply(params, xs, lengths)          # xs [T, B, 8] -> [B, 10]
    loss = models.cross_entropy(logits, labels)

`classifier`, `mlp` and `cnn1d` share `init(key, input_size)` and
`apply(params, xs, lengths=None, *, key=None) -> [*batch, O]`, so experiments
swap them with `--model=rnn|mlp|cnn`.
"""

from jaxseq.models import autoencoder  # module: models.autoencoder.autoencoder(...), ...
from jaxseq.models._bridge import flatten_carry
from jaxseq.models._dense import (
    DenseParams,
    accuracy,
    cross_entropy,
    dense,
    dense_apply,
    dropout,
    masked_mean,
    mean_squared_error,
)
from jaxseq.models._sequence import Model, pool, time_mask
from jaxseq.models.baselines import ConvParams, cnn1d, conv1d, mlp
from jaxseq.models.classifier import classifier
from jaxseq.models.language import LanguageModel, language_model, tagger
from jaxseq.models.seq2seq import Seq2Seq, seq2seq

__all__ = [
    "ConvParams",
    "DenseParams",
    "LanguageModel",
    "Model",
    "Seq2Seq",
    "accuracy",
    "autoencoder",
    "classifier",
    "cnn1d",
    "conv1d",
    "cross_entropy",
    "dense",
    "dense_apply",
    "dropout",
    "flatten_carry",
    "language_model",
    "masked_mean",
    "mean_squared_error",
    "mlp",
    "pool",
    "seq2seq",
    "tagger",
    "time_mask",
]
