"""An LSTM learns the adding problem (Hochreiter & Schmidhuber 1997) — the main job.

Each sequence has two channels: values drawn from U(0, 1), and a marker that is
1 at one step in the first half and one step in the second half. The target is
the sum of the two marked values. Predicting the mean (1) gives MSE 1/6 ≈ 0.167;
an LSTM that learns to gate its memory drives the test MSE to ~0.001.

Run (about a minute on 2 CPU cores; expect test MSE < 0.01 vs the 0.167 baseline):

    .venv/bin/python -m experiments.train_lstm
    .venv/bin/python -m experiments.train_lstm --seq_len=100 --steps=3000
"""

import dataclasses
import json
import os
import time
from functools import partial

import jax
import jax.numpy as jnp
import optax

import jaxseq
import jaxseq.data
from jaxseq import cli


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0
    seq_len: int = 50  # T: steps between the first marker and the read-out can reach T
    batch_size: int = 64  # sequences per training step
    hidden_size: int = 64  # LSTM width
    learning_rate: float = 3e-3  # Adam step size
    grad_clip: float = 1.0  # global-norm clip (Pascanu et al. 2013); 0 disables
    steps: int = 1500  # training steps
    log_every: int = 100  # host syncs and progress lines every this many steps
    eval_size: int = 1024  # held-out sequences for the final test MSE
    out_dir: str = "runs/train_lstm"  # results.json and metrics.jsonl go here


def init_model(key: jax.Array, layer: jaxseq.Layer):
    k_rnn, k_out = jax.random.split(key)
    w_out = jax.random.normal(k_out, (layer.output_size,)) / jnp.sqrt(layer.output_size)
    return {"rnn": layer.init(k_rnn, 2), "w_out": w_out, "b_out": jnp.ones(())}


def predict(layer: jaxseq.Layer, params, xs):
    ys, _ = layer.apply(params["rnn"], xs)
    return ys[-1] @ params["w_out"] + params["b_out"]


def loss_fn(layer, params, xs, targets):
    return jnp.mean((predict(layer, params, xs) - targets) ** 2)


def main(config: Config) -> dict:
    cli.save_config(config, config.out_dir)
    layer = jaxseq.rnn(jaxseq.lstm(config.hidden_size, forget_bias=1.0))
    init_key, data_key, eval_key = jax.random.split(jax.random.key(config.seed), 3)
    params = init_model(init_key, layer)
    clip = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip > 0 else []
    optimizer = optax.chain(*clip, optax.adam(config.learning_rate))
    opt_state = optimizer.init(params)

    @partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, step):
        xs, targets = jaxseq.data.adding(
            jax.random.fold_in(data_key, step), config.batch_size, config.seq_len
        )
        loss, grads = jax.value_and_grad(partial(loss_fn, layer))(params, xs, targets)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        return optax.apply_updates(params, updates), opt_state, metrics

    metrics_path = os.path.join(config.out_dir, "metrics.jsonl")
    open(metrics_path, "w").close()
    start = last = time.perf_counter()
    for step in range(config.steps):
        params, opt_state, metrics = train_step(params, opt_state, step)
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            record = {"step": step + 1, **jax.tree.map(float, jax.device_get(metrics))}
            now = time.perf_counter()
            record["ms_per_step"] = 1e3 * (now - last) / config.log_every
            last = now
            print(
                f"step {record['step']:5d}: loss {record['loss']:.4f}, "
                f"grad_norm {record['grad_norm']:.3f}, {record['ms_per_step']:.1f} ms/step",
                flush=True,
            )
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    xs, targets = jaxseq.data.adding(eval_key, config.eval_size, config.seq_len)
    test_mse = float(jax.jit(partial(loss_fn, layer))(params, xs, targets))
    results = {
        "test_mse": test_mse,
        "baseline_mse": 1.0 / 6.0,
        "solved": test_mse < 0.01,
        "train_seconds": time.perf_counter() - start,
        "steps": config.steps,
    }
    with open(os.path.join(config.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(
        f"test MSE {test_mse:.4f} (predicting the mean: {1 / 6:.4f}); "
        f"{'solved' if results['solved'] else 'not solved'}; results in {config.out_dir}"
    )
    return results


if __name__ == "__main__":
    main(cli.parse(Config))
