"""Training: `TrainState`, the one train step, the optimizer factory and the loop.

    optimizer = training.make_optimizer("adam", 1e-3, grad_clip=1.0)
    state = training.init_state(params, optimizer)
    train_step = training.make_train_step(loss_fn, optimizer)
    state, history = training.fit(train_step, state, sample_batch, key=key,
                                  steps=1000, out_dir="runs/x", checkpoint_every=500)

With `num_seeds=K` (in `init_state`, `make_train_step`, `fit`, `evaluate`) K
independent models train at once under `jax.vmap`; `seed_summary` reports mean ±
std over seeds.
"""

from jaxseq.training.checkpoint import load_checkpoint
from jaxseq.training.classify import train_classifier
from jaxseq.training.experiment import (
    check_config,
    join_distributed,
    mesh_sharding,
    place_state,
    run_summary,
    seed_keys,
    seed_results,
    train_seeds,
)
from jaxseq.training.guard import NonFiniteError
from jaxseq.training.loop import fit
from jaxseq.training.optim import make_optimizer
from jaxseq.training.records import json_safe, write_results
from jaxseq.training.seeds import evaluate, seed_summary
from jaxseq.training.state import TrainState, init_state, make_train_step

__all__ = [
    "NonFiniteError",
    "TrainState",
    "check_config",
    "evaluate",
    "fit",
    "init_state",
    "join_distributed",
    "json_safe",
    "load_checkpoint",
    "make_optimizer",
    "make_train_step",
    "mesh_sharding",
    "place_state",
    "run_summary",
    "seed_keys",
    "seed_results",
    "seed_summary",
    "train_classifier",
    "train_seeds",
    "write_results",
]
