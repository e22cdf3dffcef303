"""Per-row feature engineering for validated telemetry: Polars in, Polars out (no Dagster here).

Every feature at time ``t`` uses only samples at or before ``t`` of the same device, and only samples
inside a bounded look-back *horizon* (the longest window): the rolling statistics over their own
window, the robust z-score over the mid window plus one block, the spectral features over the last
complete FFT block that ended within the horizon, and the "time since"/"streak" counters capped at
the horizon.  Consequences the pipeline relies on:

* causality: changing or dropping a future sample changes no past feature;
* continuity: given day D-1 and day D of a device, the features of day D rows equal those computed
  over any longer history (up to float rounding of the sliding sums, far below float32 resolution);
* ``warmup`` marks exactly the rows whose history is shorter than the horizon (history from the frame's first
  row, or from the device's first stored sample when ``history_start`` gives it: a gap does not warm up again).

Windows (fixed durations or ``"auto"``, per device) and the auto rules: see :mod:`itap_assets.core.windows`.

How it is computed (Polars expressions and numpy vectorisation, no per-row Python):

* devices are laid out on one monotonic time axis ``_k`` (device ordinal x stride + ts, with gaps
  between devices wider than any window), so a time-window statistic is a single
  ``rolling_*_by("_k", w)`` call over the whole frame, with no ``over()`` partitioning and no
  mixing of devices;
* fast path: when each device's samples sit on the regular grid of the chunk's interval (gaps
  allowed), rows are scattered onto that grid (NULLs in gaps and between devices) and the same
  statistics come from Polars' fixed-length rolling kernels, which are 2-4x cheaper and give the
  same numbers (see ``_Layout``);
* the least-squares slope uses the polarisation identity
  ``cov(t, x) = (var(t + x) - var(t) - var(x)) / 2`` on Polars' numerically stable rolling
  variance, with ``t`` in minutes since the device's first sample (relative error ~1e-10, where
  raw sums of t, x, t*x, t^2 lose ~6 digits on 1-minute windows of a two-day history);
* the robust z-score compares ``x`` with the median of the means (location) and of the standard
  deviations (scale) of the last ``ROBUST_BLOCKS`` completed epoch-aligned blocks
  (block = mid window / ROBUST_BLOCKS): an outlier spoils only its own block and the median over
  blocks discards it, while an exact rolling median by time costs ~3 s per column at 8.6 M rows;
* spectra come from non-overlapping, epoch-aligned blocks of ``fft_block`` samples
  (numpy reshape + one ``rfft`` over all blocks); a row gets the spectrum of the last complete
  block that ended at or before it;
* work runs in chunks of whole devices (~``CHUNK_ROWS`` rows) so temporaries stay small.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from itap_assets.core.parallel import ordered_map
from itap_assets.core.windows import (
    DEFAULT_WINDOWS,
    FFT_BLOCK,
    ROBUST_BLOCKS,
    SPECTRAL_FAMILIES,
    Durations,
    Windows,
    WindowsArg,
    device_intervals,
    feature_windows,
    is_grouped_sorted,
)

if TYPE_CHECKING:
    from itap_assets.settings import Settings

STATE_FAMILY = "State"
DATA_QUALITY_FAMILY = "DataQuality"
RUN_STATE = "RUN"
KEY_COLUMNS: tuple[str, ...] = ("ts", "day", "device_id", "state")
OUTPUT_KEY_COLUMNS: tuple[str, ...] = (*KEY_COLUMNS, "warmup")
STATE_PREFIX = "state"

ROBUST_Z_CLIP = 50.0
# Spectral bands as fractions of the Nyquist frequency: low = (0, 1/4], high = (1/2, 1].
BAND_LOW_MAX = 0.25
BAND_HIGH_MIN = 0.5
MAX_SPECTRAL_MISSING = 0.25  # a block with more NULL samples than this share gives no spectrum
F32_RESOLUTION = 2.0**-24  # relative: deltas smaller than this of the reading are rounding residue
CHUNK_ROWS = 50_000  # rows per unit of work (whole devices; a bigger device is a chunk of its own)
GRID_MAX_EXPANSION = 3.0  # regular-grid fast path only while gaps at most triple the rows

_NAME_RE = re.compile(
    r"^(?P<kind>[a-z][a-z0-9]*(?:_[a-z][a-z0-9]*)*?)(?:_(?P<window>[1-9][0-9]*[smh]|short|mid|long))?$"
)
_US_PER_MIN = 60_000_000.0


@dataclass(frozen=True)
class FeatureSpec:
    name: str  # column name, e.g. "temp_c__mean_5m"
    sensor: str | None  # source sensor, None for state features
    family: str  # sensor family, or "State" / "DataQuality" for event features
    kind: str  # "mean", "std", "slope", "band_energy_low", ...
    window: str | None  # "5m", ... or "short"/"mid"/"long" (auto windows); None: instantaneous, spectral
    # block or horizon-capped counter


# What each kind means (units), for explanations and docs.
KIND_DESCRIPTIONS: dict[str, str] = {
    "mean": "rolling mean over the window",
    "std": "rolling sample standard deviation over the window (not at the shortest window; auto: 1 sample there)",
    "min": "rolling minimum over the window",
    "max": "rolling maximum over the window",
    "slope": "least-squares trend over the window, sensor units per minute",
    "delta": "value minus its rolling mean over the window (auto windows: long only, short would be 0)",
    "robust_z": (
        "(value - median of block means) / median of block stds, over the blocks completed in the window"
        " before the current block; clipped to +-50. Blocks: the window / 5 (auto windows: max(3, mid / 5)"
        " samples, so a block always has a spread)"
    ),
    "roc": "rate of change since the previous valid sample, units per minute",
    "dom_freq": (
        "dominant frequency of the last complete FFT block that ended within the horizon, Hz; blocks of 64"
        " samples (auto windows: the largest even number <= min(64, long / 2), at least 8, so a spectrum is"
        " always at most half a horizon old)"
    ),
    "band_energy_low": "share of the AC spectral energy below Nyquist/4 in the last complete FFT block",
    "band_energy_high": "share of the AC spectral energy above Nyquist/2 in the last complete FFT block",
    "missing_streak": "consecutive NULL samples up to and including t (capped at the samples in the horizon)",
    "time_since_dropout": "seconds since the last NULL sample (or the start of history), capped at the horizon",
    "flatline": "1 if the sensor did not change over the window while the device is in RUN, else 0",
    "transitions": "number of state changes in the window",
    "time_since_change": "seconds since the last state change (or the start of history), capped at the horizon",
}


def feature_name(sensor: str | None, kind: str, window: str | None) -> str:
    prefix = STATE_PREFIX if sensor is None else sensor
    return f"{prefix}__{kind}" if window is None else f"{prefix}__{kind}_{window}"


def parse_feature_name(name: str) -> tuple[str | None, str, str | None]:
    """Inverse of :func:`feature_name`: ``(sensor or None for state, kind, window or None)``."""
    prefix, sep, rest = name.rpartition("__")
    m = _NAME_RE.match(rest)
    if not sep or not prefix or m is None:
        raise ValueError(f"not a feature name: {name!r}")
    return (None if prefix == STATE_PREFIX else prefix), m.group("kind"), m.group("window")


def _check_sensors(sensor_families: Mapping[str, str]) -> None:
    if not sensor_families:
        raise ValueError("at least one sensor is required")
    for sensor in sensor_families:
        if sensor in OUTPUT_KEY_COLUMNS or sensor.startswith("_") or "__" in sensor or not sensor:
            raise ValueError(f"sensor name {sensor!r} is reserved or not usable as a feature prefix")


def feature_registry(sensor_families: Mapping[str, str], windows: WindowsArg = DEFAULT_WINDOWS) -> list[FeatureSpec]:
    """Every feature :func:`device_day_features` produces, in output column order, each exactly once.

    Per sensor (family = the sensor's family): mean at every window; std at every window but the
    shortest; min/max and robust z at the mid window; least-squares slope at the longest window
    (a short-window trend is mostly mean_short - mean_mid, and each slope costs two rolling
    variances); delta from the mean at the shortest and longest windows; instantaneous rate of
    change; for Vibration/Current sensors dominant frequency and low/high band-energy shares.
    Per sensor (family DataQuality): missing streak, time since dropout, flat-line at the mid
    window.  State: transitions at every window but the shortest, time since the last change.
    Default 5 sensors, windows 1m/5m/30m: 84 features.  ``windows="auto"`` (or :class:`AutoWindows`): the
    same with windows short/mid/long, except delta at the long window only (the short window is one
    sample): 79 features, whatever the sample rate and the baseline.
    """
    _check_sensors(sensor_families)
    w = Windows.of(windows)
    specs: list[FeatureSpec] = []

    def add(sensor: str | None, family: str, kind: str, window: str | None) -> None:
        specs.append(FeatureSpec(feature_name(sensor, kind, window), sensor, family, kind, window))

    for sensor, family in sensor_families.items():
        for win in w.all:
            add(sensor, family, "mean", win)
        for win in w.stat:
            add(sensor, family, "std", win)
        add(sensor, family, "min", w.mid)
        add(sensor, family, "max", w.mid)
        add(sensor, family, "slope", w.long)
        for win in w.delta:
            add(sensor, family, "delta", win)
        add(sensor, family, "robust_z", w.mid)
        add(sensor, family, "roc", None)
        if family in SPECTRAL_FAMILIES:
            for kind in ("dom_freq", "band_energy_low", "band_energy_high"):
                add(sensor, family, kind, None)
    for sensor in sensor_families:
        add(sensor, DATA_QUALITY_FAMILY, "missing_streak", None)
        add(sensor, DATA_QUALITY_FAMILY, "time_since_dropout", None)
        add(sensor, DATA_QUALITY_FAMILY, "flatline", w.mid)
    for win in w.stat:
        add(None, STATE_FAMILY, "transitions", win)
    add(None, STATE_FAMILY, "time_since_change", None)
    return specs


def model_feature_specs(settings: Settings) -> list[FeatureSpec]:
    """The features a configuration produces, in column order: the model's candidate features (fixed or auto
    windows alike; with auto windows they do not depend on the data or the baseline)."""
    return feature_registry(settings.sensor_families, feature_windows(settings))


def _empty_output(specs: list[FeatureSpec]) -> pl.DataFrame:
    schema = {
        "ts": pl.Datetime("us"),
        "day": pl.Date,
        "device_id": pl.String,
        "state": pl.String,
        "warmup": pl.Boolean,
        **{s.name: pl.Float32 for s in specs},
    }
    return pl.DataFrame(schema=schema)


class _Layout:
    """Where the rolling windows are evaluated.

    General case: ``rolling_<stat>_by("_k", window)`` over the rows (``_k`` = the monotonic
    device-offset time axis).  Fast case, when every device's samples sit on one regular grid of
    the chunk's interval ``dt`` (gaps allowed): the rows are scattered onto that grid with NULL
    samples in the gaps and NULL separators between devices, the time window (t - W, t] becomes
    exactly the last ceil(W / dt) grid points, and Polars' fixed-length rolling kernels (the same
    numerics, 2-4x cheaper than the ``_by`` ones, which find window bounds for every call) are
    filtered back to the rows.  A single device without gaps is its own grid (no copies at all).
    """

    def __init__(self, base: pl.DataFrame, d: Durations) -> None:
        self.n = base.height
        self.key = base["_k"]
        self.grid: tuple[np.ndarray, pl.Series, int, int] | None = None
        self._padded: dict[str, pl.Series] = {}
        self.identity = False
        self.d = d
        dt_us = d.dt_us
        if dt_us is None or self.n < 2:
            return
        ts = base["_ts"].to_numpy()
        start = base["_start"].to_numpy()
        steps = np.diff(ts)[~start[1:]]
        if steps.size and (np.any(steps <= 0) or np.any(steps % dt_us)):
            return  # duplicated or off-grid timestamps: general path
        g = (ts - base["_first_ts"].to_numpy()) // dt_us
        sep = max(-(-us // dt_us) for us in self.d.us.values())
        dev_first = np.flatnonzero(start)
        dev_last = np.append(dev_first[1:], self.n) - 1
        span = g[dev_last] + 1 + sep  # each device's grid, then a separator
        dev_pos = np.cumsum(span) - span
        size = int(dev_pos[-1] + g[-1] + 1)
        if size > GRID_MAX_EXPANSION * self.n:
            return  # too gappy: padding would cost more than it saves
        pos = np.repeat(dev_pos, dev_last - dev_first + 1) + g  # strictly increasing
        keep = np.zeros(size, dtype=bool)
        keep[pos] = True
        self.grid = (pos, pl.Series("_keep", keep), size, dt_us)
        self.identity = size == self.n  # one device without gaps: the rows already are the grid

    def frame(
        self,
        inputs: Mapping[str, pl.Series],
        stats: Sequence[tuple[str, str, str, str]],
        derived: Sequence[pl.Expr] = (),
        shared: Mapping[str, pl.Series] | None = None,
    ) -> pl.DataFrame:
        """``stats``: (output name, input name, stat in mean/var/min/max/sum, window) -> Float64 frame
        aligned with the rows.  ``derived`` columns are computed from the inputs before rolling;
        ``shared`` inputs are padded once per layout (same name = same data).  Empty windows give
        NULL (sum: 0 on the general path; callers only sum windows that contain the row itself)."""
        shared = shared or {}
        if self.grid is None:
            frame = pl.DataFrame({"_k": self.key, **shared, **inputs}).with_columns(derived)
            return frame.select(
                [getattr(pl.col(i), f"rolling_{st}_by")("_k", self.d.rolling(win)).alias(o) for o, i, st, win in stats]
            )
        _, keep, _, dt_us = self.grid
        for name, series in shared.items():
            if name not in self._padded:
                self._padded[name] = self._place(series)
        placed = {name: self._padded[name] for name in shared}
        placed.update({name: self._place(series) for name, series in inputs.items()})
        rolled = (
            pl.DataFrame(placed)
            .with_columns(derived)
            .select(
                [
                    getattr(pl.col(i), f"rolling_{st}")(-(-self.d.us[win] // dt_us), min_samples=1).alias(o)
                    for o, i, st, win in stats
                ]
            )
        )
        return rolled if self.identity else rolled.filter(keep)  # grid positions of the rows, in row order

    def _place(self, series: pl.Series) -> pl.Series:
        """The row-aligned ``series`` on the grid (NULL in gaps and separators)."""
        assert self.grid is not None
        if self.identity:
            return series
        pos, _, size, _ = self.grid
        arr = np.full(size, np.nan)
        arr[pos] = series.cast(pl.Float64).to_numpy()
        return pl.Series(series.name, arr).fill_nan(None)


def _block_slots(
    ts_us: np.ndarray, starts: np.ndarray, lengths: np.ndarray, n: int, block_start_us: np.ndarray, dt_us: int
) -> tuple[np.ndarray, np.ndarray]:
    """Auto windows: the rows of each block on their slot of the block's time grid (slot = rint((ts - block
    start) / dt)), so a row that never arrived counts as a missing sample instead of voiding the block.  Returns
    an ``(n_blocks, n)`` array of row indices (-1: no row) and each block's last row.  Blocks with fewer rows than
    a usable spectrum needs, or with two rows on one slot (sampled faster than dt), are left out."""
    need = int(np.ceil((1 - MAX_SPECTRAL_MISSING) * n))
    cand = (lengths >= need) & (lengths <= n)
    first, size, b0 = starts[cand], lengths[cand], block_start_us[cand]
    if first.size == 0:
        return np.empty((0, n), np.int64), np.empty(0, np.int64)
    blk = np.repeat(np.arange(first.size), size)
    rows = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size - first, size)
    slot = np.clip(np.rint((ts_us[rows] - b0[blk]) / dt_us).astype(np.int64), 0, n - 1)
    clash = np.r_[False, (blk[1:] == blk[:-1]) & (slot[1:] <= slot[:-1])]
    bad = np.zeros(first.size, dtype=bool)
    bad[blk[clash]] = True
    idx = np.full((first.size, n), -1, dtype=np.int64)
    idx[blk, slot] = rows
    return idx[~bad], (first + size - 1)[~bad]


def _spectra(
    x: np.ndarray, ts_us: np.ndarray, starts: np.ndarray, lengths: np.ndarray, n: int,
    slots: tuple[np.ndarray, np.ndarray, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Spectra of the complete blocks (``lengths == n``; auto windows: the blocks of ``slots`` =
    :func:`_block_slots` and the interval): row index of each block's last sample and an ``(n_blocks, 3)``
    array of dominant frequency (Hz), low-band and high-band energy shares.  Blocks with too many NULL (or,
    with ``slots``, absent) samples or no AC energy are left out (they are not usable spectra)."""
    if slots is None:
        first = starts[lengths == n]
        if first.size == 0:
            return np.empty(0, np.int64), np.empty((0, 3))
        idx = first[:, None] + np.arange(n)
        blocks = x[idx]  # (n_blocks, n), NaN = missing sample
        last = idx[:, -1]
        dt_s = (ts_us[last] - ts_us[first]) / (n - 1) / 1e6
    else:
        idx, last, dt_us = slots
        if last.size == 0:
            return np.empty(0, np.int64), np.empty((0, 3))
        blocks = np.where(idx >= 0, x[np.maximum(idx, 0)], np.nan)
        dt_s = np.full(last.size, dt_us / 1e6)
    missing = np.isnan(blocks)
    ok = missing.sum(axis=1) <= MAX_SPECTRAL_MISSING * n
    blocks, missing, last, dt_s = blocks[ok], missing[ok], last[ok], dt_s[ok]
    if last.size == 0:
        return np.empty(0, np.int64), np.empty((0, 3))
    means = np.nanmean(blocks, axis=1, keepdims=True)
    blocks = np.where(missing, means, blocks) - means
    spec = np.fft.rfft(blocks * np.hanning(n), axis=1)
    power = (spec.real**2 + spec.imag**2)[:, 1:]  # drop DC
    total = power.sum(axis=1)
    frac = np.arange(1, power.shape[1] + 1) / (n / 2)  # bin frequency as a fraction of Nyquist
    valid = (total > 0) & (dt_s > 0)
    total, dt_s, power, last = total[valid], dt_s[valid], power[valid], last[valid]
    out = np.empty((last.size, 3))
    out[:, 0] = (np.argmax(power, axis=1) + 1) / (n * dt_s)
    out[:, 1] = power[:, frac <= BAND_LOW_MAX].sum(axis=1) / total
    out[:, 2] = power[:, frac > BAND_HIGH_MIN].sum(axis=1) / total
    return last, out


def device_day_features(
    telemetry: pl.DataFrame | pl.LazyFrame,
    sensor_families: Mapping[str, str],
    windows: WindowsArg = DEFAULT_WINDOWS,
    *,
    fft_block: int = FFT_BLOCK,
    chunk_rows: int = CHUNK_ROWS,
) -> pl.DataFrame:
    """Rolling, spectral and event features for every telemetry row (same rows, same order).

    Output columns: ``ts, day, device_id, state, warmup`` then every feature of
    :func:`feature_registry` in registry order, as Float32 (NULL where a window holds no sample).
    Input: validated telemetry, in any row order (the output is put back in input order).
    ``windows``: fixed labels, or ``"auto"`` / :class:`AutoWindows` (per-device windows, see
    :mod:`itap_assets.core.windows`; ``fft_block`` is then the upper bound of the derived FFT block).
    """
    df = telemetry.collect() if isinstance(telemetry, pl.LazyFrame) else telemetry
    restore = "ts" in df.columns and "device_id" in df.columns and not is_grouped_sorted(df)
    if restore:
        order = df.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_order"), "device_id", "ts")
        order = order.sort(["device_id", "ts"], maintain_order=True)["_order"]
        df = df[order]
    outs = list(device_day_feature_chunks(df, sensor_families, windows, fft_block=fft_block, chunk_rows=chunk_rows))
    out = outs[0] if len(outs) == 1 else pl.concat(outs, how="vertical", rechunk=False)
    if restore:
        out = out.with_columns(order.alias("_order")).sort("_order").drop("_order")
    return out


def device_day_feature_chunks(
    telemetry: pl.DataFrame,
    sensor_families: Mapping[str, str],
    windows: WindowsArg = DEFAULT_WINDOWS,
    *,
    fft_block: int = FFT_BLOCK,
    chunk_rows: int = CHUNK_ROWS,
    history_start: pl.DataFrame | None = None,
) -> Iterator[pl.DataFrame]:
    """The features of :func:`device_day_features` as consecutive chunks of whole devices (~``chunk_rows`` rows
    each), rows in (device_id, ts) order: a caller that writes each chunk as it comes holds a few chunks, never
    the whole frame (a day of a 100-device fleet at 1 Hz is 2.9 GB of features). Chunking never changes a value.
    At least one (possibly empty) chunk is yielded, so the output schema is always known. Auto windows: a chunk
    holds devices of one sample interval only (consecutive devices with another interval start a new chunk).
    ``history_start`` (device_id, first_ts): where each device's history begins when it is older than the frame;
    ``warmup`` is then measured from it (a frame starting after a gap is not warm-up again)."""
    specs = feature_registry(sensor_families, windows)
    w = Windows.of(windows)
    sensors = list(sensor_families)
    missing_cols = [c for c in (*KEY_COLUMNS, *sensors) if c not in telemetry.columns]
    if missing_cols:
        raise ValueError(f"telemetry lacks columns {missing_cols}")
    if fft_block < 4 or fft_block % 2:
        raise ValueError("fft_block must be an even number >= 4")
    if telemetry.height == 0:
        yield _empty_output(specs)
        return

    df = telemetry.select(
        pl.col("ts").cast(pl.Datetime("us")),
        pl.col("day"),
        pl.col("device_id").cast(pl.String),
        pl.col("state").cast(pl.String),
        *[pl.col(s).cast(pl.Float64).fill_nan(None) for s in sensors],
    )
    if not is_grouped_sorted(df):
        df = df.sort(["device_id", "ts"], maintain_order=True)

    # Each device's own interval (grid fast path, spectral blocks, auto windows), never the frame's: a device's
    # features do not depend on which other devices share the run. A chunk holds devices of one interval.
    dev_first, _, dev_dt, _ = device_intervals(df)
    new_chunk = np.r_[True, np.diff(dev_first // max(chunk_rows, 1)) > 0]
    new_chunk[1:] |= dev_dt[1:] != dev_dt[:-1]
    durations = [Durations.automatic(w, int(dt) or None, fft_block) if w.auto is not None
                 else Durations.fixed(w, int(dt) or None, fft_block) for dt in dev_dt[new_chunk]]
    cuts = dev_first[new_chunk]
    bounds = np.append(cuts, df.height)
    chunks = ((df.slice(int(a), int(b - a)), d) for a, b, d in zip(bounds[:-1], bounds[1:], durations))

    def work(item: tuple[pl.DataFrame, Durations]) -> pl.DataFrame:
        chunk, d = item
        return _features_sorted(chunk, sensor_families, w, specs, d, history_start)

    # Chunks are independent: threads overlap the numpy/Python parts with Polars work, and the caller's work on
    # one chunk (e.g. writing it) with computing the next ones.
    yield from ordered_map(work, chunks, workers=max(1, min(len(bounds) - 1, pl.thread_pool_size())))


def _features_sorted(
    df: pl.DataFrame,
    sensor_families: Mapping[str, str],
    w: Windows,
    specs: list[FeatureSpec],
    d: Durations,
    history_start: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Features of whole devices, rows sorted by (device_id, ts), with the durations ``d`` (one interval)."""
    sensors = list(sensor_families)
    horizon_us = d.us[w.long]
    robust_block_us = d.robust_block_us
    dt_us, fft_block = d.dt_us, d.fft_block
    dev, state = pl.col("device_id"), pl.col("state")
    f64 = pl.Float64

    # --- shared helpers ----------------------------------------------------------------------------
    base = df.with_columns(
        _ts=pl.col("ts").dt.epoch("us"),
        _start=(dev != dev.shift(1)).fill_null(True),
        _row=pl.int_range(pl.len(), dtype=pl.Int64),
    )
    history = pl.col("_first_ts")
    if history_start is not None:
        starts = history_start.select(pl.col("device_id").cast(pl.String),
                                      pl.col("first_ts").cast(pl.Datetime("us")).dt.epoch("us").alias("_hist"))
        base = base.join(starts, on="device_id", how="left", maintain_order="left")
        history = pl.min_horizontal("_first_ts", pl.col("_hist").fill_null(pl.col("_first_ts")))
    t_min, t_max = base.select(pl.col("_ts").min().alias("lo"), pl.col("_ts").max().alias("hi")).row(0)
    # One monotonic axis `_k` for all devices: device blocks separated by more than any look-back, so
    # one rolling_*_by over the whole frame never mixes devices.  All "time since" arithmetic runs
    # on this axis: a forward fill leaking from the previous device lands more than a horizon before
    # the device's first key, so the horizon caps below discard it.
    stride = (t_max - t_min) + 2 * horizon_us + 2 * 86_400_000_000
    base = (
        base.with_columns(
            _ord=pl.col("_start").cum_sum().cast(pl.Int64),
            _first_ts=pl.when("_start").then("_ts").forward_fill(),
            _first_row=pl.when("_start").then("_row").forward_fill(),
            _blk=pl.col("_ts") // robust_block_us,
        )
        .with_columns(
            _kus=(pl.col("_ts") - t_min + pl.col("_ord") * stride).set_sorted(),
            _tmin=(pl.col("_ts") - pl.col("_first_ts")) / _US_PER_MIN,
            warmup=(pl.col("_ts") - history) < horizon_us,
            _chg=((state != state.shift(1)) & ~pl.col("_start")).fill_null(False),
            _bstart=pl.col("_start") | (pl.col("_blk") != pl.col("_blk").shift(1)).fill_null(True),
        )
        .with_columns(
            _k=pl.col("_kus").cast(pl.Datetime("us")).set_sorted(),
            _first_k=pl.when("_start").then("_kus").forward_fill(),
            _run=pl.col("_bstart").cum_sum().cast(pl.Int64) - 1,
        )
    )
    layout = _Layout(base, d)
    ts_, first_ts = pl.col("_kus"), pl.col("_first_k")
    row, first_row = pl.col("_row"), pl.col("_first_row")

    # Device age (since its first row) capped at the horizon, in µs and in rows; a forward fill that
    # leaks from the previous device is always older than the device's first row, so taking the
    # minimum with these caps also discards it.
    age_cap = pl.min_horizontal(ts_ - first_ts, pl.lit(horizon_us))

    def since(event: pl.Expr, cap: pl.Expr = age_cap) -> pl.Expr:
        """Seconds since the last row where ``event`` holds (else since the device's first row),
        capped at the horizon so that it only depends on the last horizon of history."""
        return pl.min_horizontal(ts_ - pl.when(event).then(ts_).forward_fill(), cap) / 1e6

    counts = layout.frame(
        {"chg": base["_chg"].cast(f64), "one": pl.repeat(1.0, base.height, eager=True)},
        [(f"_trans|{win}", "chg", "sum", win) for win in w.stat] + [("_nrows_h", "one", "sum", w.long)],
    )
    nrows_h = counts["_nrows_h"].fill_null(0).cast(pl.Int64)
    base = base.with_columns(
        age_cap.alias("_age_cap"),
        pl.min_horizontal(row - first_row + 1, nrows_h).alias("_rows_cap"),
        (state == RUN_STATE).alias("_run_state"),
    )
    shared = counts.select(
        [pl.col(f"_trans|{win}").cast(pl.Float32).alias(feature_name(None, "transitions", win)) for win in w.stat]
    ).with_columns(
        base.select(since(pl.col("_chg")).cast(pl.Float32).alias(feature_name(None, "time_since_change", None)))
    )

    # --- robust z baseline: per-block mean/std, median over the last ROBUST_BLOCKS blocks ------------
    # Blocks are laid out densely by index (devices separated by more than ROBUST_BLOCKS empty slots);
    # rows of block b take the median over slots b-ROBUST_BLOCKS .. b-1 (empty slots = no samples).
    blk_base = t_min // robust_block_us
    blk_span = (t_max // robust_block_us) - blk_base + ROBUST_BLOCKS + 2
    stat_cols = [f"{p}|{s}" for p in "ms" for s in sensors]
    real = base.group_by("_run", maintain_order=True).agg(
        pl.col("_ord").first(),
        pl.col("_blk").first(),
        *[pl.col(s).mean().alias(f"m|{s}") for s in sensors],
        *[pl.when(pl.col(s).count() >= 3).then(pl.col(s).std()).alias(f"s|{s}") for s in sensors],
    )
    slot = (real["_blk"] - blk_base + real["_ord"] * blk_span + 1).to_numpy()  # in run order
    dense: dict[str, pl.Series] = {}
    for c in stat_cols:
        arr = np.full(int(slot[-1]) + 1, np.nan)
        arr[slot] = real[c].to_numpy()
        dense[c] = pl.Series(c, arr).fill_nan(None)
    previous = pl.Series("_q", slot - 1)
    baseline = (
        pl.DataFrame(dense)
        .select([pl.col(c).rolling_median(ROBUST_BLOCKS, min_samples=1).gather(previous) for c in stat_cols])
        .with_columns(  # scale floor: a flat baseline makes any change extreme, never infinite
            [
                pl.when(pl.col(f"s|{s}").is_not_null())
                .then(pl.max_horizontal(pl.col(f"s|{s}"), pl.max_horizontal(pl.col(f"m|{s}").abs(), 1.0) * 1e-6))
                .alias(f"s|{s}")
                for s in sensors
            ]
        )
    )
    del real, dense
    run_len = np.diff(np.append(np.flatnonzero(base["_bstart"].to_numpy()), base.height))

    def per_row(column: str, alias: str) -> pl.Series:
        """A per-block baseline value repeated over the block's rows."""
        return pl.Series(alias, np.repeat(baseline[column].to_numpy(), run_len)).fill_nan(None)

    # --- spectral blocks: epoch-aligned, fft_block samples ------------------------------------------
    spec_cols: dict[str, pl.Series] = {}
    spectral = [s for s in sensors if sensor_families[s] in SPECTRAL_FAMILIES]
    if spectral and dt_us is not None:
        ts_np = base["_ts"].to_numpy()
        key_np = base["_kus"].to_numpy()
        new_run = base["_start"].to_numpy().copy()
        sblk = ts_np // (fft_block * dt_us)
        new_run[1:] |= sblk[1:] != sblk[:-1]
        starts = np.flatnonzero(new_run)
        lengths = np.diff(np.append(starts, ts_np.size))
        slots = None
        if d.auto:  # absent rows are missing samples of their block
            idx, last_row = _block_slots(ts_np, starts, lengths, fft_block, sblk[starts] * (fft_block * dt_us), dt_us)
            slots = (idx, last_row, dt_us)
        del sblk, new_run
        dev_np = np.cumsum(base["_start"].to_numpy()) - 1
        for s in spectral:
            last, vals = _spectra(base[s].to_numpy(), ts_np, starts, lengths, fft_block, slots)
            if not last.size:
                continue
            # a row gets the last usable block that ended at or before it, within the horizon; an auto block
            # missing its last samples ends at its last slot all the same, not at its last row (else a block cut
            # by the end of the data would serve rows that, once the rest of the block arrives, use another)
            end_key = key_np[last]
            if d.auto:
                block_us = fft_block * dt_us
                end_key = end_key + (ts_np[last] // block_us * block_us + (fft_block - 1) * dt_us - ts_np[last])
            avail = np.searchsorted(key_np, end_key, side="left")
            mine = avail < ts_np.size
            mine[mine] &= dev_np[avail[mine]] == dev_np[last[mine]]
            pos = np.full(ts_np.size, -1, dtype=np.int64)
            pos[avail[mine]] = np.flatnonzero(mine)
            pos = np.maximum.accumulate(pos)
            got = pos >= 0
            pos = np.maximum(pos, 0)
            got &= key_np - end_key[pos] <= horizon_us
            pick = np.where(got, pos, last.size)  # the extra last entry is NaN -> NULL
            table = np.vstack([vals, np.full((1, 3), np.nan)]).T.astype(np.float32)
            for j, kind in enumerate(("dom_freq", "band_energy_low", "band_energy_high")):
                name = feature_name(s, kind, None)
                spec_cols[name] = pl.Series(name, table[j][pick]).fill_nan(None)

    # --- per sensor: rolling statistics and data-quality events (one pass for all sensors) -------------
    stats: list[tuple[str, str, str, str]] = []
    derived: list[pl.Expr] = []
    for s in sensors:
        xin, t_masked = f"x|{s}", pl.when(pl.col(f"x|{s}").is_not_null()).then(pl.col("tmin"))
        derived += [t_masked.alias(f"t|{s}"), (t_masked + pl.col(xin)).alias(f"tx|{s}")]
        stats += [(f"_mean|{s}|{win}", xin, "mean", win) for win in w.all]
        stats += [(f"_var|{s}|{win}", xin, "var", win) for win in w.stat]
        stats += [(f"_vt|{s}", f"t|{s}", "var", w.long), (f"_vtx|{s}", f"tx|{s}", "var", w.long)]
        stats += [(f"_min|{s}", xin, "min", w.mid), (f"_max|{s}", xin, "max", w.mid)]
    rolled = layout.frame(
        {f"x|{s}": base[s] for s in sensors}, stats, derived=derived, shared={"tmin": base["_tmin"]}
    )
    frame = base.select("_kus", "_row", "_age_cap", "_rows_cap", "_run_state", *sensors).hstack(
        [
            *rolled.get_columns(),
            *[per_row(f"m|{s}", f"_rmed|{s}") for s in sensors],
            *[per_row(f"s|{s}", f"_rscale|{s}") for s in sensors],
        ]
    )
    del rolled

    exprs: dict[str, pl.Expr] = {}
    for s in sensors:
        x = pl.col(s)
        valid = x.is_not_null()
        for win in w.all:
            exprs[feature_name(s, "mean", win)] = pl.col(f"_mean|{s}|{win}")
        for win in w.stat:
            exprs[feature_name(s, "std", win)] = pl.col(f"_var|{s}|{win}").clip(lower_bound=0.0).sqrt()
        exprs[feature_name(s, "min", w.mid)] = pl.col(f"_min|{s}")
        exprs[feature_name(s, "max", w.mid)] = pl.col(f"_max|{s}")
        # least-squares slope per minute: cov(t, x) / var(t), cov by polarisation
        var, vt, vtx = pl.col(f"_var|{s}|{w.long}"), pl.col(f"_vt|{s}"), pl.col(f"_vtx|{s}")
        exprs[feature_name(s, "slope", w.long)] = pl.when(vt > 1e-12).then((vtx - vt - var) / (2.0 * vt))
        for win in w.delta:
            # a sliding mean carries the rounding residue of the rows before it in the frame (~1e-13): a delta
            # below the reading's float32 resolution is that residue, not a change, and is 0 however the runs
            # were cut (else a window of one sample would store 1e-13 or 0 depending on the frame)
            delta = x - pl.col(f"_mean|{s}|{win}")
            exprs[feature_name(s, "delta", win)] = pl.when(delta.abs() <= x.abs() * F32_RESOLUTION).then(0.0) \
                .otherwise(delta)
        exprs[feature_name(s, "robust_z", w.mid)] = ((x - pl.col(f"_rmed|{s}")) / pl.col(f"_rscale|{s}")).clip(
            -ROBUST_Z_CLIP, ROBUST_Z_CLIP
        )
        # previous valid sample; one from another device is > horizon away (device stride) and dropped
        gap = ts_ - pl.when(valid).then(ts_).forward_fill().shift(1)
        exprs[feature_name(s, "roc", None)] = pl.when(gap.is_between(1, horizon_us)).then(
            (x - x.forward_fill().shift(1)) / gap * _US_PER_MIN  # NULL where x is NULL
        )
        # data quality
        streak = row - pl.when(valid).then(row).forward_fill()
        exprs[feature_name(s, "missing_streak", None)] = pl.min_horizontal(streak, pl.col("_rows_cap"))
        exprs[feature_name(s, "time_since_dropout", None)] = since(x.is_null(), pl.col("_age_cap"))
        flat = pl.col("_run_state") & (pl.col(f"_max|{s}") == pl.col(f"_min|{s}"))
        exprs[feature_name(s, "flatline", w.mid)] = pl.when(pl.col(f"_var|{s}|{w.mid}").is_not_null()).then(
            flat.cast(f64)
        )
    parts: list[pl.DataFrame] = [
        base.select(*OUTPUT_KEY_COLUMNS),
        frame.select([e.cast(pl.Float32).alias(n) for n, e in exprs.items()]),
    ]
    del frame
    if spec_cols:
        parts.append(pl.DataFrame(list(spec_cols.values())))
    parts.append(shared)
    out = parts[0].hstack([c for part in parts[1:] for c in part.get_columns()])
    absent = [spec.name for spec in specs if spec.name not in out.columns]
    if absent:  # spectral features without any usable block (or no sample interval)
        out = out.with_columns([pl.lit(None, pl.Float32).alias(c) for c in absent])
    return out.select(*OUTPUT_KEY_COLUMNS, *[spec.name for spec in specs])
