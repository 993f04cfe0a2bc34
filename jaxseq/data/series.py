"""A univariate series for forecasting (Mauna Loa CO2), sliding windows, baselines."""

import functools
import math

import numpy as np
from jaxtyping import ArrayLike, Float

from jaxseq import _checks
from jaxseq.data import _packages


@functools.lru_cache(maxsize=1)
def _read_co2(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads statsmodels' co2.csv: `(dates int YYYYMMDD [W], ppm float64 [W] with NaN)`."""
    with open(path, encoding="utf-8") as f:
        header, *rows = f.read().split()
    if header.strip() != "date,co2":
        raise ValueError(f"{path}: expected the header 'date,co2', got {header!r}")
    fields = [row.split(",") for row in rows]
    dates = np.array([int(date) for date, _ in fields], np.int64)
    values = np.array([float(v) if v else np.nan for _, v in fields], np.float64)
    return dates, values


def co2(*, freq: str = "monthly") -> Float[np.ndarray, " n"]:
    """Atmospheric CO2 at Mauna Loa (ppm), from statsmodels' bundled data set.

    The source holds weekly averages from 1958-03-29 to 2001-12-29 (2284
    Saturdays), 59 of them missing; missing weeks are filled by linear
    interpolation between their neighbours. `freq="monthly"` averages the
    (filled) weeks of each calendar month: 526 values, March 1958 to December
    2001. The series rises from about 316 to about 371 ppm with a yearly cycle
    of a few ppm (season 12 monthly, 52 weekly).

    Args:
      freq: "monthly" or "weekly".

    Returns:
      float32 `[N]`, oldest first.

    Raises:
      ImportError: statsmodels is not installed (`pip install 'jaxseq[data]'`).
    """
    _checks.check_option("freq", freq, ("monthly", "weekly"))
    path = _packages.package_file(
        "statsmodels",
        "datasets",
        "co2",
        "co2.csv",
        distribution="statsmodels",
        what="jaxseq.data.co2",
    )
    dates, values = _read_co2(str(path))
    known = ~np.isnan(values)
    steps = np.arange(len(values))
    filled = np.interp(steps, steps[known], values[known])
    if freq == "weekly":
        return filled.astype(np.float32)
    _, month = np.unique(dates // 100, return_inverse=True)
    means = np.bincount(month, weights=filled) / np.bincount(month)
    return means.astype(np.float32)


def _check_series(series: np.ndarray) -> np.ndarray:
    series = np.asarray(series)
    if series.ndim != 1:
        raise ValueError(f"series must have shape [time] (rank 1), got shape {series.shape}")
    return series


def forecast_windows(
    series: Float[np.ndarray, " time"], window: int, horizon: int = 1
) -> tuple[Float[np.ndarray, "n window 1"], Float[np.ndarray, "n horizon"]]:
    """Every (past window → next values) pair of a series, for supervised forecasting.

    `xs[i] = series[i : i + window]` and `ys[i] = series[i + window : i + window + horizon]`
    for i = 0 .. N - 1 with N = len(series) - window - horizon + 1 (stride 1).

    Args:
      series: `[time]` values.
      window: the input length ≥ 1.
      horizon: how many following values to predict, ≥ 1.

    Returns:
      `(xs float32 [N, window, 1], ys float32 [N, horizon])`, batch-major like a
      `Dataset` (`Dataset(xs, np.full(N, window, np.int32), ys)`).
    """
    series = _check_series(series)
    _checks.check_positive_int("window", window)
    _checks.check_positive_int("horizon", horizon)
    count = len(series) - window - horizon + 1
    if count < 1:
        raise ValueError(
            f"series of {len(series)} steps is too short for window {window} + horizon "
            f"{horizon}; it needs at least {window + horizon}"
        )
    views = np.lib.stride_tricks.sliding_window_view(series.astype(np.float32), window + horizon)
    return views[:, :window, None].copy(), views[:, window:].copy()


def split_series(
    series: Float[np.ndarray, " time"], test_fraction: float = 0.2, *, context: int = 0
) -> tuple[Float[np.ndarray, " train"], Float[np.ndarray, " test"]]:
    """Splits a series by position: the last `test_fraction` of steps is the test part.

    With `context=window` the test part also starts with the last `window`
    training steps, so `forecast_windows(test, window)` predicts exactly the
    test steps (their inputs may reach back into the training period, their
    targets never do).

    Args:
      series: `[time]` values.
      test_fraction: the share of steps to hold out, in (0, 1); the count is
        rounded and at least 1.
      context: training steps to repeat at the start of the test part, ≥ 0.

    Returns:
      `(train [time - n_test], test [context + n_test])`, copies.
    """
    series = _check_series(series)
    if isinstance(test_fraction, bool) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    n_test = max(1, round(len(series) * test_fraction))
    n_train = len(series) - n_test
    if n_train < 1:
        raise ValueError(f"series of {len(series)} steps is too short to split")
    if isinstance(context, bool) or not isinstance(context, int) or not 0 <= context <= n_train:
        raise ValueError(f"context must be an int in [0, {n_train}], got {context!r}")
    return series[:n_train].copy(), series[n_train - context :].copy()


def seasonal_naive_forecast(
    xs: Float[ArrayLike, "n window *one"], season: int, horizon: int = 1
) -> Float[ArrayLike, "n horizon"]:
    """The seasonal naive baseline: predict the value one season earlier.

    ŷ_{t+h} = x_{t+h-m·k} with m the season and k = ⌈h / m⌉, the latest
    observed step at the same phase of the season; `season=1` is the naive
    (last value) forecast.

    Args:
      xs: windows `[N, window, 1]` or `[N, window]`, batch-major as from
        `forecast_windows` (NumPy or jax), with window ≥ season.
      season: the period m ≥ 1 (12 for monthly CO2).
      horizon: how many steps ahead, ≥ 1.

    Returns:
      `[N, horizon]` predictions, comparable to the `ys` of `forecast_windows`.
    """
    _checks.check_positive_int("season", season)
    _checks.check_positive_int("horizon", horizon)
    shape = tuple(np.shape(xs))
    if len(shape) == 3 and shape[-1] == 1:
        xs = xs[..., 0]
    elif len(shape) != 2:
        raise ValueError(f"xs must have shape [N, window, 1] or [N, window], got shape {shape}")
    window = shape[1]
    if window < season:
        raise ValueError(f"window ({window} steps) must be >= season, got season {season}")
    steps = np.arange(1, horizon + 1)
    index = window - 1 + steps - season * np.array([math.ceil(h / season) for h in steps])
    return xs[:, index]
