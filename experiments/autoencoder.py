"""Autoencoders on real data: linear ≡ PCA, sigmoid, denoising, sequence, greedy pretraining.

    --kind=linear     linear autoencoder, k = 10, on scikit-learn's 8×8 digits (64 pixels): its
                      decoder's column space is PCA's top-k subspace (Baldi & Hornik 1989)
    --kind=sigmoid    the lecture's z = σ(x W + b), x̂ = z D + c (k = 32) against PCA at the same
                      k on clean and on corrupted test digits; a linear probe on codes vs pixels
    --kind=denoising  the same, trained to rebuild clean digits from corrupted ones (25% of the
                      pixels hidden; `--corruption=gaussian --noise_level=0.2` for Gaussian noise)
    --kind=sequence   an LSTM autoencoder on JapaneseVowels (lengths 7-29, 12 channels): the
                      encoder's final carry is the embedding; a linear probe names the speaker
    --kind=pretrain   greedy layer-wise pretraining of a 64-128-64-10 sigmoid MLP with denoising
                      autoencoders, then fine-tuning, against the same MLP from random init

    .venv/bin/python -m experiments.autoencoder --kind=linear
    .venv/bin/python -m experiments.autoencoder --kind=denoising --widths=64 --num_seeds=3
    .venv/bin/python -m experiments.autoencoder --kind=pretrain --labels_per_class=10

Every kind writes `out_dir` (default `runs/autoencoder_<kind>`): config.json,
metrics.jsonl, results.json and, with `--plots=True` (the default, needs
`pip install 'jaxseq[plot]'`), reconstructions.png and filters.png (embeddings.png
for the sequence kind). `pretrain` trains each greedy stage in `out_dir/layer<i>`,
the random-init MLP in `out_dir/random_init`, the pretrained one in `out_dir`.
Fields left at None or "" take the kind's value from `DEFAULTS`. `--mesh_data` splits
every training batch (the autoencoder's, each greedy stage's and the fine-tuning's) over
that many devices; the batch size must divide (a full batch of the 1347 training digits
does not split: pass --batch_size, or --mesh_data=1). PCA, probes and plots run unsplit.

Measured with the defaults (seed 0; 2 CPU cores shared with other jobs, so the
wall times are inflated; results.json has train_seconds and ms_per_step):
  linear:    pca_subspace_angle_max 0.0007 rad, reconstruction_mse 0.019737 vs PCA-10's
             0.019737 (ratio 1.00001);                                   34 s, 1.9 ms/step
  sigmoid:   test MSE 0.00281 vs PCA-32's 0.00264 (clean), 0.0487 vs 0.0509 with 25% of the
             pixels hidden; probe 0.958 (pixels 0.969, PCA codes 0.964);  38 s, 1.1 ms/step
  denoising: 0.0159 clean (it never saw clean inputs) but 0.0209 vs PCA's 0.0509 on
             corrupted digits; probe 0.956;                              38 s, 2.2 ms/step
  sequence:  teacher-forced test MSE 0.065 vs 0.163 for copying the previous frame and 1.01
             for the mean frame; free running from the embedding alone 0.231; probe on the
             embeddings 0.962 (= the per-channel mean/std probe);       83 s, 21 ms/step
  pretrain:  test accuracy 0.966 ± 0.002 pretrained vs 0.964 ± 0.005 from random init (5
             seeds); with --labels_per_class=10, 0.824 vs 0.821: on 8×8 digits and Adam
             the gain is within the seed spread;                        83 s, 1.7 ms/step
"""

import dataclasses
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxseq
from jaxseq import cli, data, models, training
from jaxseq.cells import registry
from jaxseq.models import autoencoder as ae_lib

KINDS = ("linear", "sigmoid", "denoising", "sequence", "pretrain")
DEFAULTS = {  # per kind: widths, num_seeds, steps, batch_size, learning_rate
    "linear": dict(widths="10", num_seeds=1, steps=3000, batch_size=2048, learning_rate=0.02),
    "sigmoid": dict(widths="32", num_seeds=1, steps=5000, batch_size=256, learning_rate=0.01),
    "denoising": dict(widths="32", num_seeds=1, steps=5000, batch_size=256, learning_rate=0.01),
    "sequence": dict(widths="64", num_seeds=1, steps=1500, batch_size=32, learning_rate=3e-3),
    "pretrain": dict(widths="128,64", num_seeds=5, steps=1000, batch_size=64, learning_rate=3e-3),
}
PCA_ANGLE = 0.05  # radians: "the decoder spans PCA's subspace"
PCA_MSE_RATIO = 0.01  # "reconstruction MSE within 1% of PCA's"


@dataclasses.dataclass(frozen=True)
class Config:
    kind: str = "linear"  # linear, sigmoid, denoising, sequence or pretrain
    widths: str = ""  # comma-separated hidden widths, last = code size k ("": kind default)
    corruption: str = "mask"  # "mask" or "gaussian": denoising/pretrain noise, corrupted test set
    noise_level: float = 0.25  # fraction of pixels hidden (mask) or noise std (gaussian)
    cell: str = "lstm"  # sequence: the cell of encoder and decoder (registry name)
    embed_size: int = 0  # sequence: tanh bottleneck width (0: the flattened final carry)
    pretrain_steps: int = 1500  # pretrain: updates of each greedy autoencoder stage
    labels_per_class: int = 0  # pretrain: labelled digits per class to fine-tune on (0: all)
    plots: bool = True  # write PNG figures (needs matplotlib: pip install 'jaxseq[plot]')
    seed: int = 0  # base seed; seed k uses fold_in(key(seed), k)
    num_seeds: int | None = None  # independent models trained at once with jax.vmap
    steps: int | None = None  # updates per model (pretrain: of fine-tuning)
    batch_size: int | None = None  # examples per update; >= the training set: full batch
    optimizer: str = "adam"  # adam, adamw, rmsprop or sgd
    learning_rate: float | None = None  # peak step size
    grad_clip: float = 1.0  # global-norm clip; 0 disables
    schedule: str = "cosine"  # constant, cosine or linear decay to 0 at `steps`
    warmup_steps: int = 0  # linear warm-up from 0
    log_every: int = 500  # steps between host syncs and log records
    eval_every: int = 0  # steps between test evaluations (0: at the end only)
    checkpoint_every: int = 0  # steps between orbax checkpoints (0: none)
    resume: bool = False  # continue from the latest checkpoint in out_dir
    tensorboard: bool = False  # also write TensorBoard event files
    out_dir: str = ""  # config.json, metrics.jsonl, results.json ("": runs/autoencoder_<kind>)
    mesh_data: int = 0  # devices on the mesh's data axis (0: all); batches split over them
    distributed: bool = False  # join a multi-host run (JAX_COORDINATOR_ADDRESS etc., or auto)


def resolve(config: Config) -> Config:
    """Fills the fields left at None / "" with the kind's defaults."""
    if config.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {config.kind!r}")
    fill = {k: v for k, v in DEFAULTS[config.kind].items() if getattr(config, k) in (None, "")}
    if not config.out_dir:
        fill["out_dir"] = f"runs/autoencoder_{config.kind}"
    return dataclasses.replace(config, **fill)


def parse_widths(text: str) -> tuple[int, ...]:
    """Parses the `widths` field, "128,64" -> (128, 64); raises ValueError naming it."""
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise ValueError(
            f"widths must be comma-separated positive ints like '128,64', got {text!r}"
        )
    return widths


def check(config: Config) -> None:
    """Rejects bad values of a resolved config by field name, before any work."""
    training.check_config(config, pretrain_steps=config.pretrain_steps)
    widths = parse_widths(config.widths)
    if config.kind == "sequence" and len(widths) != 1:
        raise ValueError(f"widths must be one RNN width for kind='sequence', got {config.widths!r}")
    ae_lib.corruption(config.corruption, config.noise_level)  # names corruption / level
    registry.by_name(config.cell, 1)
    for name in ("embed_size", "labels_per_class"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    if config.plots:
        figure_class()


def figure_class():
    """matplotlib's `Figure` (no pyplot, no global backend), or an ImportError naming the extra."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "plots=True needs matplotlib: pip install 'jaxseq[plot]' (or pass --plots=False)"
        ) from error
    return Figure


# ---------------------------------------------------------------- shared pieces


def digit_pixels() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(x_train [1347, 64], y_train, x_test [450, 64], y_test)`, pixels in [0, 1]."""
    train, test = data.digits()
    return train.xs.reshape(len(train.xs), -1), train.ys, test.xs.reshape(len(test.xs), -1), test.ys


def sampler(arrays: tuple, batch_size: int):
    """`(key, step) -> batch` of rows of `arrays` (all of them when batch_size >= N)."""
    arrays = tuple(jnp.asarray(a) for a in arrays)
    n = arrays[0].shape[0]
    if batch_size >= n:
        return lambda key, step: arrays if len(arrays) > 1 else arrays[0]

    def sample(key, step):
        index = jax.random.choice(key, n, (batch_size,))
        picked = tuple(a[index] for a in arrays)
        return picked if len(picked) > 1 else picked[0]

    return sample


def probe_accuracy(train_x, train_y, test_x, test_y) -> float:
    """Test accuracy of a linear probe (standardised features, logistic regression)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    with one_blas_thread():
        return float(probe.fit(np.asarray(train_x), train_y).score(np.asarray(test_x), test_y))


def one_blas_thread():
    """A context with single-threaded BLAS: on these small problems (and on shared cores)
    OpenBLAS's threads spin and cost 30× more CPU than they save."""
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    return threadpool_limits(limits=1)


def ms_per_step(history: list[dict]) -> float | None:
    """The mean steady-state ms/step of `fit`'s log records (compilation excluded)."""
    times = [r["ms_per_step"] for r in history if r.get("ms_per_step") is not None]
    return float(np.mean(times)) if times else None


def trainer(config: Config, loss_fn, steps: int, wrap=None):
    """`(optimizer, train_step)` for K seeds, built once and shared by runs with the same loss."""
    optimizer = training.make_optimizer(
        config.optimizer,
        config.learning_rate,
        grad_clip=config.grad_clip,
        schedule=config.schedule,
        warmup_steps=config.warmup_steps,
        total_steps=steps if config.schedule != "constant" else None,
    )
    optimizer = optimizer if wrap is None else wrap(optimizer)
    return optimizer, training.make_train_step(loss_fn, optimizer, num_seeds=config.num_seeds)


def fit_stacked(
    config: Config, train, params, sample_batch, *, steps, stream, out_dir, desc, eval_fn=None
):
    """`training.fit` from K given stacked params (`train_seeds` draws its own init).

    The batch (rows `[B, ...]`, every leaf) is split over the `mesh_data` devices.
    """
    optimizer, train_step = train
    batch_sharding = training.mesh_sharding(config, sample_batch, 0)
    state = training.init_state(params, optimizer, num_seeds=config.num_seeds)
    return training.fit(
        train_step,
        training.place_state(state, batch_sharding),
        sample_batch,
        key=training.seed_keys(config, stream),
        steps=steps,
        out_dir=out_dir,
        log_every=config.log_every,
        eval_fn=eval_fn,
        eval_every=config.eval_every,
        checkpoint_every=config.checkpoint_every,
        resume=config.resume,
        tensorboard=config.tensorboard,
        num_seeds=config.num_seeds,
        desc=desc,
        batch_sharding=batch_sharding,
    )


def periodic(config: Config, eval_fn, *args):
    """The `eval_fn` for `train_seeds`: only with `eval_every` (the final test runs after it)."""
    return (lambda params: eval_fn(params, *args)) if config.eval_every else None


def image_grid(path: Path, groups: dict[str, np.ndarray], columns: int, signed: bool) -> None:
    """Saves 8×8 images, one group of rows per entry of `groups` (`[m, 64]` each)."""
    rows = {name: -(-len(images) // columns) for name, images in groups.items()}
    fig = figure_class()(figsize=(0.7 * columns, 0.75 * sum(rows.values()) + 0.3))
    axes = fig.subplots(sum(rows.values()), columns, squeeze=False)
    row = 0
    for name, images in groups.items():
        for i, ax in enumerate(axes[row : row + rows[name]].reshape(-1)):
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= len(images):
                ax.axis("off")
                continue
            scale = float(np.abs(images[i]).max()) or 1.0
            limits = (
                dict(cmap="RdBu_r", vmin=-scale, vmax=scale)
                if signed
                else dict(cmap="gray_r", vmin=0.0, vmax=1.0)
            )
            ax.imshow(images[i].reshape(8, 8), **limits)
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        row += rows[name]
    fig.savefig(path, dpi=100, bbox_inches="tight")


def first(tree):
    """Seed 0 of stacked params, on the host."""
    return jax.tree.map(lambda a: np.asarray(a[0]), tree)


# ---------------------------------------------------------------- dense: linear, sigmoid, denoising


def decoder_matrix(decoder: tuple) -> np.ndarray:
    """A linear decoder's map z -> x̂ (minus its offset) as one matrix `[k, D]`, code side first."""
    weights = [np.asarray(p.w, np.float64) for p in decoder[::-1]]
    return weights[0] if len(weights) == 1 else np.linalg.multi_dot(weights)


def pca_agreement(seeds: list, pca, mse: np.ndarray, reference: dict) -> dict:
    """Per seed: the largest principal angle between the decoder's column space and PCA's
    top-k subspace (scipy), and the test MSE as a multiple of PCA's."""
    from scipy.linalg import subspace_angles

    with one_blas_thread():
        angles = [subspace_angles(decoder_matrix(p["decoder"]).T, pca.components_.T) for p in seeds]
    return {
        "pca_subspace_angle_max": np.array([a.max() for a in angles]),
        "reconstruction_mse_ratio": mse / reference["pca_reconstruction_mse"],
    }


def run_dense(config: Config) -> tuple[dict, list]:
    """linear / sigmoid / denoising autoencoders on the 64 digit pixels, against PCA."""
    from sklearn.decomposition import PCA

    x_train, y_train, x_test, y_test = digit_pixels()
    widths = parse_widths(config.widths)
    noise = ae_lib.corruption(config.corruption, config.noise_level)
    ae = ae_lib.autoencoder(
        widths,
        encoder_activation="linear" if config.kind == "linear" else "sigmoid",
        corruption=noise if config.kind == "denoising" else None,
    )
    test_data = (jnp.asarray(x_test), noise(jax.random.key(10_000 + config.seed), x_test))

    def loss_fn(params, batch, key):
        return ae_lib.reconstruction_loss(ae, params, batch, key=key), {}

    def test_fn(params, x, x_noisy):
        return {
            "reconstruction_mse": models.mean_squared_error(ae.apply(params, x), x),
            "corrupted_reconstruction_mse": models.mean_squared_error(ae.apply(params, x_noisy), x),
        }

    sample_batch = sampler((x_train,), config.batch_size)
    state, history = training.train_seeds(
        config,
        partial(ae.init, input_size=x_train.shape[1]),
        loss_fn,
        sample_batch,
        periodic(config, test_fn, *test_data),
        batch_sharding=training.mesh_sharding(config, sample_batch, 0),  # x [B, 64]
        desc=config.kind,
    )
    values = training.evaluate(test_fn, state.params, *test_data, num_seeds=config.num_seeds)
    with one_blas_thread():
        pca = PCA(widths[-1]).fit(x_train)
    rebuild = lambda x: pca.inverse_transform(pca.transform(np.asarray(x)))  # noqa: E731
    reference = {
        "pca_reconstruction_mse": float(np.mean((rebuild(x_test) - x_test) ** 2)),
        "pca_corrupted_reconstruction_mse": float(np.mean((rebuild(test_data[1]) - x_test) ** 2)),
    }
    seeds = [
        jax.tree.map(lambda a, i=i: np.asarray(a[i]), state.params) for i in range(config.num_seeds)
    ]
    if config.kind == "linear":
        values.update(pca_agreement(seeds, pca, values["reconstruction_mse"], reference))
        reference["pca_match_fraction"] = float(
            np.mean(
                (values["pca_subspace_angle_max"] < PCA_ANGLE)
                & (np.abs(values["reconstruction_mse_ratio"] - 1.0) < PCA_MSE_RATIO)
            )
        )
    else:
        codes = jax.jit(jax.vmap(ae.encode, (0, None)))(
            state.params, np.concatenate([x_train, x_test])
        )
        n = len(x_train)
        values["probe_accuracy"] = np.array(
            [probe_accuracy(c[:n], y_train, c[n:], y_test) for c in np.asarray(codes)]
        )
        reference["pixel_probe_accuracy"] = probe_accuracy(x_train, y_train, x_test, y_test)
        reference["pca_probe_accuracy"] = probe_accuracy(
            pca.transform(x_train), y_train, pca.transform(x_test), y_test
        )
    if config.plots:
        plot_dense(config, ae, seeds[0], pca, x_test, np.asarray(test_data[1]))
    results = {**training.seed_results(values), **reference, "code_size": widths[-1]}
    return results, history


def plot_dense(config: Config, ae, params, pca, x_test, x_noisy) -> None:
    """reconstructions.png (10 test digits) and filters.png (encoder rows; PCA components)."""
    out, n = Path(config.out_dir), 10
    jitted = jax.jit(ae.apply)
    apply = lambda x: np.asarray(jitted(params, x[:n]))  # noqa: E731
    pca_apply = lambda x: pca.inverse_transform(pca.transform(x[:n]))  # noqa: E731
    rows = {
        "test digit": x_test[:n],
        "autoencoder": apply(x_test),
        f"PCA-{pca.n_components_}": pca_apply(x_test),
        f"{config.corruption} noise": x_noisy[:n],
        "AE(noisy)": apply(x_noisy),
        "PCA(noisy)": pca_apply(x_noisy),
    }
    image_grid(
        out / "reconstructions.png", {k: np.clip(v, 0, 1) for k, v in rows.items()}, n, False
    )
    filters = {"encoder W": np.asarray(params["encoder"][0].w).T[:32]}
    if config.kind == "linear":
        filters["decoder D"] = decoder_matrix(params["decoder"])[:32]
        filters["PCA"] = pca.components_[:32]
    image_grid(out / "filters.png", filters, min(16, len(filters["encoder W"])), True)


# ---------------------------------------------------------------- sequence: JapaneseVowels


def vowels() -> tuple[data.Dataset, data.Dataset]:
    """JapaneseVowels, each channel standardised over the training set's valid frames; pads 0."""
    train, test = data.japanese_vowels()
    valid = lambda ds: np.arange(ds.xs.shape[1])[None, :] < ds.lengths[:, None]  # noqa: E731
    frames = train.xs[valid(train)]
    mean, std = frames.mean(axis=0), frames.std(axis=0)

    def standardise(ds: data.Dataset) -> data.Dataset:
        xs = np.where(valid(ds)[..., None], (ds.xs - mean) / std, 0.0).astype(np.float32)
        return data.Dataset(xs, ds.lengths, ds.ys)

    return standardise(train), standardise(test)


def frame_stats(ds: data.Dataset) -> np.ndarray:
    """Per sequence, the mean and std of each channel over its valid frames: `[N, 2F]`."""
    valid = (np.arange(ds.xs.shape[1])[None, :] < ds.lengths[:, None])[..., None]
    count = ds.lengths[:, None].astype(np.float64)
    mean = np.where(valid, ds.xs, 0).sum(axis=1) / count
    var = np.where(valid, (ds.xs - mean[:, None]) ** 2, 0).sum(axis=1) / count
    return np.concatenate([mean, np.sqrt(var)], axis=1)


def run_sequence(config: Config) -> tuple[dict, list]:
    """An RNN sequence autoencoder on JapaneseVowels; a linear probe on its embeddings."""
    train, test = vowels()
    width = parse_widths(config.widths)[0]
    layer = lambda: jaxseq.rnn(registry.by_name(config.cell, width))  # noqa: E731
    sae = ae_lib.sequence_autoencoder(layer(), layer(), embed_size=config.embed_size or None)
    train_jax = data.as_jax(train)
    error = ae_lib.sequence_reconstruction_error

    def sample_batch(key, step):
        return data.sample_batch(train_jax, key, config.batch_size)

    def loss_fn(params, batch, key):
        return error(
            sae.apply(params, batch.xs, batch.lengths, key=key), batch.xs, batch.lengths
        ), {}

    def test_fn(params, xs, lengths):
        z = sae.embed(params, xs, lengths)
        return {
            "reconstruction_mse": error(sae.decode(params, z, xs, lengths), xs, lengths),
            "free_running_mse": error(sae.generate(params, z, xs.shape[0]), xs, lengths),
        }

    as_batch = lambda ds: (jnp.swapaxes(jnp.asarray(ds.xs), 0, 1), jnp.asarray(ds.lengths))  # noqa: E731
    test_batch = as_batch(test)
    state, history = training.train_seeds(
        config,
        partial(sae.init, input_size=train.xs.shape[2]),
        loss_fn,
        sample_batch,
        periodic(config, test_fn, *test_batch),
        batch_sharding=training.mesh_sharding(config, sample_batch, data.Batch(1, 0, 0)),
        desc="sequence",
    )
    values = training.evaluate(test_fn, state.params, *test_batch, num_seeds=config.num_seeds)
    both = as_batch(data.Dataset(*(np.concatenate(pair) for pair in zip(train, test))))
    z = np.asarray(jax.jit(jax.vmap(sae.embed, (0, None, None)))(state.params, *both))
    n = len(train.ys)
    values["probe_accuracy"] = np.array(
        [probe_accuracy(z_k[:n], train.ys, z_k[n:], test.ys) for z_k in z]
    )
    xs, lengths = test_batch
    previous = jnp.concatenate([jnp.zeros_like(xs[:1]), xs[:-1]], axis=0)
    reference = {
        "previous_frame_mse": float(error(previous, xs, lengths)),
        "mean_frame_mse": float(error(jnp.zeros_like(xs), xs, lengths)),
        "frame_stats_probe_accuracy": probe_accuracy(
            frame_stats(train), train.ys, frame_stats(test), test.ys
        ),
    }
    if config.plots:
        plot_sequence(config, sae, first(state.params), test, z[0, n:])
    results = {**training.seed_results(values), **reference, "embed_size": sae.embed_size}
    return results, history


def plot_sequence(config: Config, sae, params, test: data.Dataset, z_test: np.ndarray) -> None:
    """reconstructions.png (3 test utterances, 2 channels) and embeddings.png (2-D PCA)."""
    from sklearn.decomposition import PCA

    out, picks = Path(config.out_dir), (0, 150, 300)
    xs = jnp.swapaxes(jnp.asarray(test.xs[list(picks)]), 0, 1)
    lengths = jnp.asarray(test.lengths[list(picks)])

    @jax.jit
    def rebuild(params, xs, lengths):
        z = sae.embed(params, xs, lengths)
        return sae.decode(params, z, xs, lengths), sae.generate(params, z, xs.shape[0])

    forced, free = (np.asarray(a) for a in rebuild(params, xs, lengths))
    xs = np.asarray(xs)
    fig = figure_class()(figsize=(12, 3.2))
    for j, ax in enumerate(fig.subplots(1, len(picks))):
        t = np.arange(int(lengths[j]))
        for c, color in ((0, "C0"), (1, "C1")):
            ax.plot(t, xs[t, j, c], color=color, label=f"channel {c}")
            ax.plot(t, forced[t, j, c], color=color, ls="--", label="teacher forced")
            ax.plot(t, free[t, j, c], color=color, ls=":", label="free running")
        ax.set_title(f"test utterance {picks[j]} (speaker {test.ys[picks[j]] + 1})", fontsize=9)
        ax.set_xlabel("step")
    fig.axes[0].legend(fontsize=7)
    fig.savefig(out / "reconstructions.png", dpi=100, bbox_inches="tight")
    points = PCA(2).fit_transform(z_test)
    fig = figure_class()(figsize=(5, 4))
    ax = fig.subplots()
    scatter = ax.scatter(points[:, 0], points[:, 1], c=test.ys + 1, cmap="tab10", s=8)
    ax.legend(*scatter.legend_elements(), title="speaker", fontsize=7)
    ax.set_title("test embeddings, first two principal components", fontsize=9)
    fig.savefig(out / "embeddings.png", dpi=100, bbox_inches="tight")


# ---------------------------------------------------------------- pretrain: stacked denoising AEs


def labelled_subset(ys: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first `per_class` examples of every class (all examples for 0)."""
    if per_class == 0:
        return np.arange(len(ys))
    index = [np.flatnonzero(ys == c)[:per_class] for c in np.unique(ys)]
    if min(len(i) for i in index) < per_class:
        raise ValueError(f"labels_per_class={per_class} exceeds the smallest class's size")
    return np.sort(np.concatenate(index))


def pretrain_stages(config: Config, x_train: np.ndarray, widths: tuple[int, ...]):
    """Greedy stages: stage i trains a denoising AE on the codes of the frozen stages below."""
    noise = ae_lib.corruption(config.corruption, config.noise_level)
    encoders, losses, stage_one = (), [], None
    for i, width in enumerate(widths, 1):
        ae = ae_lib.autoencoder((width,), corruption=noise)
        size = x_train.shape[1] if i == 1 else widths[i - 2]
        keys = training.seed_keys(config, 10 + i)
        params = {
            "frozen": encoders,
            "autoencoder": jax.jit(jax.vmap(partial(ae.init, input_size=size)))(keys),
        }
        train = trainer(config, ae_lib.layerwise_loss(ae), config.pretrain_steps, ae_lib.freeze)
        state, history = fit_stacked(
            config,
            train,
            params,
            sampler((x_train,), config.batch_size),
            steps=config.pretrain_steps,
            stream=20 + i,
            out_dir=Path(config.out_dir) / f"layer{i}",
            desc=f"layer {i}",
        )
        encoders += (state.params["autoencoder"]["encoder"][0],)
        losses.append(history[-1]["loss"])
        stage_one = stage_one or (ae, first(state.params["autoencoder"]))
    return encoders, losses, stage_one


def run_pretrain(config: Config) -> tuple[dict, list]:
    """Pretrained-then-fine-tuned sigmoid MLP vs the same MLP from random init, K seeds."""
    x_train, y_train, x_test, y_test = digit_pixels()
    widths, classes = parse_widths(config.widths), data.DIGITS_NUM_CLASSES
    labelled = labelled_subset(y_train, config.labels_per_class)
    cli.save_config(config, config.out_dir)
    encoders, stage_losses, stage_one = pretrain_stages(config, x_train, widths)
    mlp = models.mlp(widths, classes, activation="sigmoid", seq_len=1)

    def loss_fn(params, batch, key):
        x, y = batch
        return models.cross_entropy(mlp.apply(params, x[None]), y), {}

    def test_fn(params, x, y):
        logits = mlp.apply(params, x[None])
        return {
            "test_accuracy": models.accuracy(logits, y),
            "test_loss": models.cross_entropy(logits, y),
        }

    test_data = (jnp.asarray(x_test), jnp.asarray(y_test))
    sample = sampler((x_train[labelled], y_train[labelled]), config.batch_size)
    keys, train = training.seed_keys(config, 0), trainer(config, loss_fn, config.steps)
    random_init = jax.jit(jax.vmap(partial(mlp.init, input_size=x_train.shape[1])))
    pretrained = jax.jit(jax.vmap(partial(ae_lib.mlp_from_encoders, output_size=classes)))
    runs = {}  # the same train step, data stream and readout keys for both
    for name, params in (("random_init_", random_init(keys)), ("", pretrained(keys, encoders))):
        runs[name] = fit_stacked(
            config,
            train,
            params,
            sample,
            steps=config.steps,
            stream=1,
            out_dir=Path(config.out_dir) / "random_init" if name else Path(config.out_dir),
            eval_fn=periodic(config, test_fn, *test_data),
            desc=f"{name or 'pretrained_'}mlp",
        )
    values = {}
    for name, (state, _) in runs.items():
        for metric, value in training.evaluate(
            test_fn, state.params, *test_data, num_seeds=config.num_seeds
        ).items():
            values[name + metric] = value
    values["accuracy_gain"] = values["test_accuracy"] - values["random_init_test_accuracy"]
    if config.plots:
        plot_pretrain(config, encoders, runs, stage_one, x_test)
    results = {
        **training.seed_results(values),
        "pretrain_stage_losses": stage_losses,
        "labelled_examples": len(labelled),
        "pretrain_steps": config.pretrain_steps,
    }
    return results, runs[""][1]


def plot_pretrain(config: Config, encoders, runs, stage_one, x_test) -> None:
    """filters.png (layer-1 filters: pretrained, fine-tuned, random init trained) and
    reconstructions.png (the layer-1 denoising autoencoder on corrupted test digits)."""
    out, n = Path(config.out_dir), 10
    hidden = lambda name: np.asarray(runs[name][0].params["hidden"][0].w[0]).T[:32]  # noqa: E731
    filters = {
        "pretrained": np.asarray(encoders[0].w[0]).T[:32],
        "fine-tuned": hidden(""),
        "random init, trained": hidden("random_init_"),
    }
    image_grid(out / "filters.png", filters, 16, True)
    ae, params = stage_one
    noise = ae_lib.corruption(config.corruption, config.noise_level)
    noisy = np.asarray(noise(jax.random.key(10_000 + config.seed), x_test[:n]))
    rows = {"test digit": x_test[:n], "corrupted": noisy, "layer-1 AE": ae.apply(params, noisy)}
    rows = {k: np.clip(np.asarray(v), 0, 1) for k, v in rows.items()}
    image_grid(out / "reconstructions.png", rows, n, False)


# ---------------------------------------------------------------- main

RUNS = {
    "linear": run_dense,
    "sigmoid": run_dense,
    "denoising": run_dense,
    "sequence": run_sequence,
    "pretrain": run_pretrain,
}
HEADLINE = {
    "linear": ("pca_subspace_angle_max", "reconstruction_mse", "pca_reconstruction_mse"),
    "sigmoid": (
        "reconstruction_mse",
        "pca_reconstruction_mse",
        "corrupted_reconstruction_mse",
        "pca_corrupted_reconstruction_mse",
        "probe_accuracy",
        "pixel_probe_accuracy",
    ),
    "sequence": (
        "reconstruction_mse",
        "free_running_mse",
        "previous_frame_mse",
        "probe_accuracy",
        "frame_stats_probe_accuracy",
    ),
    "pretrain": ("test_accuracy", "random_init_test_accuracy", "accuracy_gain"),
}
HEADLINE["denoising"] = HEADLINE["sigmoid"]


def main(config: Config) -> dict:
    config = resolve(config)
    check(config)
    start = time.perf_counter()
    results, history = RUNS[config.kind](config)
    results = {
        "kind": config.kind,
        **results,
        "steps": config.steps,
        "num_seeds": config.num_seeds,
        "train_seconds": time.perf_counter() - start,  # end to end: training, probes, plots
        "ms_per_step": ms_per_step(history),
        "final_train_loss": history[-1]["loss"] if history else None,
    }
    training.write_results(config.out_dir, results)
    shown = ", ".join(f"{name} {results[name]:.4g}" for name in HEADLINE[config.kind])
    print(
        f"autoencoder --kind={config.kind}: {shown} (means over {config.num_seeds} seed(s)); "
        f"{results['train_seconds']:.0f} s; results in {config.out_dir}/results.json"
    )
    return results


if __name__ == "__main__":
    config = cli.parse(Config)
    training.join_distributed(config)  # --distributed=True: before any other JAX call
    main(config)
