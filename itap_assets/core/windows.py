"""Feature windows and sampling intervals: which windows the features use, and each device's interval.

Windows are either fixed durations (``("1m", "5m", "30m")``: the same for every device, whatever its
rate) or ``"auto"`` (:class:`AutoWindows`): per device, counted in samples of that device's own sampling
interval ``dt`` (the most common positive interval between its consecutive samples in the rows given;
the median interval when the most common one is not common enough, see :func:`window_plan`)
and named by role, so every device of a table has the same columns whatever its rate
(``temp_c__mean_short``, ``temp_c__std_long``).  The auto rules (:func:`auto_window_samples`):

* ``short`` = 1 sample (``mean_short`` is the reading itself; ``std_short`` and ``delta_short`` would be
  NULL / 0 by construction and are not produced);
* ``long`` = 60 samples, capped at a tenth of the baseline (``model.training``: ``first_samples: N`` ->
  N/10 samples, ``first_days: D`` -> D days / 10, ``start``/``end`` -> (end - start) / 10) so the warm-up
  never swallows the baseline, but never below 18 samples (``AUTO_LONG_MIN``: the robust-z look-back of
  6 blocks of 3 samples and two 8-sample FFT blocks fit in it, so every feature can be computed);
* ``mid`` = 10 samples, at most long / 3 (long = 18 gives 6);
* robust-z blocks hold max(3, ceil(mid / ROBUST_BLOCKS)) samples (3 for mid = 10: a spread needs 3);
* FFT blocks: the largest even number of samples <= min(``fft_block``, long / 2), so a fresh spectrum
  always exists within the horizon (30 samples for long = 60; at least 8 thanks to the long floor).

The produced columns therefore depend only on the sensor families, never on the data.  Devices of one
chunk share one ``dt`` (chunks are cut where the interval changes), so one rolling call never mixes window
durations, and a device's features do not depend on the other devices of the run.  Fixed windows keep one
interval for the whole frame (the most common one), exactly as before auto windows existed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from itap_assets.settings import Settings

DEFAULT_WINDOWS: tuple[str, ...] = ("1m", "5m", "30m")
SPECTRAL_FAMILIES: frozenset[str] = frozenset({"Vibration", "Current"})

FFT_BLOCK = 64  # samples per spectral block
ROBUST_BLOCKS = 5  # robust z-score: the mid window is split into this many time-aligned blocks

_WINDOW_RE = re.compile(r"^([1-9][0-9]*)(s|m|h)$")
_UNIT_US = {"s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000}

# `windows: auto` (see the module docstring): windows named by role, durations counted in each device's samples.
AUTO = "auto"
AUTO_LABELS: tuple[str, str, str] = ("short", "mid", "long")
AUTO_SHORT = 1  # samples
AUTO_MID = 10
AUTO_LONG = 60
AUTO_LONG_MIN = 18  # holds the robust-z look-back (6 blocks of 3) and two 8-sample FFT blocks
AUTO_MID_SHARE = 3  # mid <= long / 3
BASELINE_SHARE = 10  # long <= baseline / 10
ROBUST_MIN_BLOCK = 3  # samples per robust-z block: a standard deviation needs 3
FFT_MIN_BLOCK = 8
MODE_MIN_SHARE = 0.25  # the most common interval is the device's dt when it is at least this share of them


def window_us(window: str) -> int:
    """Duration of a window label like ``30s``, ``5m`` or ``1h`` in microseconds."""
    m = _WINDOW_RE.match(window)
    if m is None:
        raise ValueError(f"window {window!r} must look like 30s, 5m or 1h")
    return int(m.group(1)) * _UNIT_US[m.group(2)]


@dataclass(frozen=True)
class AutoWindows:
    """``windows: auto``: short/mid/long windows counted in samples of each device's own interval, the long
    one capped by the baseline length (a tenth of it, given in samples and/or as a duration; None: no cap).
    :func:`feature_windows` builds it from the settings."""

    max_long_samples: int | None = None
    max_long_us: int | None = None


@dataclass(frozen=True)
class AutoSamples:
    """The auto windows of one sampling interval, in samples (see :func:`auto_window_samples`)."""

    short: int
    mid: int
    long: int
    robust_block: int
    fft_block: int
    capped: bool  # long is below AUTO_LONG because of the baseline cap
    floored: bool  # the baseline cap asked for less than AUTO_LONG_MIN


def auto_window_samples(dt_us: int | None, auto: AutoWindows = AutoWindows(), fft_block: int = FFT_BLOCK
                        ) -> AutoSamples:
    """The auto rules: short = 1 sample; long = 60 samples, at most a tenth of the baseline, at least
    AUTO_LONG_MIN (18); mid = 10 samples, at most long / 3; robust-z blocks of max(3, ceil(mid / 5)) samples;
    FFT blocks of the largest even number of samples <= min(fft_block, long / 2) (at least 8)."""
    cap = AUTO_LONG
    if auto.max_long_samples is not None:
        cap = min(cap, auto.max_long_samples)
    if auto.max_long_us is not None and dt_us:
        cap = min(cap, auto.max_long_us // dt_us)
    long = max(cap, AUTO_LONG_MIN)
    mid = max(1, min(AUTO_MID, long // AUTO_MID_SHARE))
    robust = max(ROBUST_MIN_BLOCK, -(-mid // ROBUST_BLOCKS))
    fft = max(FFT_MIN_BLOCK, min(fft_block, long // 2) // 2 * 2)
    return AutoSamples(AUTO_SHORT, mid, long, robust, fft, capped=cap < AUTO_LONG, floored=cap < AUTO_LONG_MIN)


WindowsArg = Sequence[str] | str | AutoWindows


@dataclass(frozen=True)
class Windows:
    all: tuple[str, ...]  # sorted by duration, duplicates (same duration) removed
    stat: tuple[str, ...]  # windows for std / transitions: all but the shortest (if more than one)
    short: str
    mid: str
    long: str
    auto: AutoWindows | None = None  # auto windows: labels short/mid/long, durations per device interval

    @property
    def delta(self) -> tuple[str, ...]:
        """Windows of the delta feature: shortest and longest (auto: longest only, short is 1 sample)."""
        return (self.long,) if self.auto is not None else tuple(dict.fromkeys((self.short, self.long)))

    @classmethod
    def of(cls, windows: WindowsArg) -> Windows:
        if isinstance(windows, AutoWindows) or (isinstance(windows, str) and windows == AUTO):
            auto = windows if isinstance(windows, AutoWindows) else AutoWindows()
            short, mid, long = AUTO_LABELS
            return cls(all=AUTO_LABELS, stat=(mid, long), short=short, mid=mid, long=long, auto=auto)
        if isinstance(windows, str):
            windows = (windows,)
        by_us: dict[int, str] = {}
        for w in windows:
            by_us.setdefault(window_us(w), w)
        if not by_us:
            raise ValueError("at least one window is required")
        ws = tuple(by_us[k] for k in sorted(by_us))
        return cls(all=ws, stat=ws[1:] or ws, short=ws[0], mid=ws[len(ws) // 2], long=ws[-1])


def feature_windows(settings: Settings) -> tuple[str, ...] | AutoWindows:
    """The ``windows`` argument of the feature functions for a configuration: its fixed windows, or for
    ``features.windows: auto`` the auto windows capped at a tenth of ``model.training``'s baseline
    (``first_samples: N`` -> N/10 samples, ``first_days``/``last_days: D`` -> D days / 10, ``start``/``end`` ->
    a tenth of that span)."""
    windows = settings.features.windows
    if isinstance(windows, str):
        if windows != AUTO:
            raise ValueError(f"features.windows must be 'auto' or a list of windows, got {windows!r}")
        tr = settings.model.training
        if tr.first_samples is not None:
            return AutoWindows(max_long_samples=tr.first_samples // BASELINE_SHARE)
        days = tr.first_days if tr.first_days is not None else tr.last_days
        if days is not None:
            return AutoWindows(max_long_us=days * 86_400_000_000 // BASELINE_SHARE)
        if tr.start is not None and tr.end is not None:
            return AutoWindows(max_long_us=(tr.end - tr.start) // timedelta(microseconds=1) // BASELINE_SHARE)
        return AutoWindows()
    return tuple(windows)


def is_grouped_sorted(df: pl.DataFrame) -> bool:
    """True when each device's rows are contiguous and ordered by ts (what the fast path needs)."""
    dev, ts = pl.col("device_id"), pl.col("ts")
    starts = (dev != dev.shift(1)).fill_null(True)
    out = df.select(
        runs=starts.sum(),
        devices=dev.n_unique(),
        backwards=((ts < ts.shift(1)) & ~starts).fill_null(False).any(),
    ).row(0)
    return out[0] == out[1] and not out[2]


def device_intervals(df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Per device of a frame grouped by device and sorted by ts, in order of appearance: its first row, its
    rows, its sample interval in µs (0: unknown) and how it was found ("mode", "median" or "unknown").

    The interval is the most common positive interval between the device's consecutive samples (ties: the
    shortest) when it occurs at least twice and is at least MODE_MIN_SHARE of them; otherwise (jittered or
    very irregular timestamps, or only two distinct timestamps) the median positive interval.  A device
    with fewer than two distinct timestamps has none."""
    dev = pl.col("device_id")
    start = (dev != dev.shift(1)).fill_null(True)
    d = df.select(_start=start, _dev=start.cum_sum().cast(pl.Int64) - 1, _d=pl.col("ts").dt.epoch("us").diff())
    first = np.flatnonzero(d["_start"].to_numpy())
    rows = np.diff(np.append(first, df.height))
    n_dev = first.size
    pos = d.filter(~pl.col("_start"), pl.col("_d") > 0).select("_dev", "_d")
    dt = np.zeros(n_dev, dtype=np.int64)
    how = np.full(n_dev, "unknown", dtype=object)
    if pos.height:
        counts = pos.group_by("_dev", "_d").len()
        mode = (
            counts.sort(["_dev", "len", "_d"], descending=[False, True, False])
            .group_by("_dev", maintain_order=True)
            .agg(pl.col("_d").first(), pl.col("len").first(), n=pl.col("len").sum())
        )
        i = mode["_dev"].to_numpy()
        top, n = mode["len"].to_numpy(), mode["n"].to_numpy()
        use_mode = (top >= 2) & (top >= MODE_MIN_SHARE * n)
        dt[i[use_mode]] = mode["_d"].to_numpy()[use_mode]
        how[i[use_mode]] = "mode"
        if not use_mode.all():  # the median only where the most common interval is not common enough
            irregular = pl.Series("_dev", i[~use_mode])
            med = pos.filter(pl.col("_dev").is_in(irregular.implode())).group_by("_dev").agg(pl.col("_d").median())
            j = med["_dev"].to_numpy()
            dt[j] = np.rint(med["_d"].to_numpy()).astype(np.int64)
            how[j] = "median"
    return first, rows, dt, list(how)


@dataclass(frozen=True)
class Durations:
    """What the rolling computations of one chunk use: its sample interval (grid fast path, spectral blocks)
    and the duration of every window label, the robust-z block and the FFT block length."""

    dt_us: int | None
    us: Mapping[str, int]  # window label -> µs
    robust_block_us: int
    fft_block: int  # samples
    auto: bool = False
    samples: AutoSamples | None = field(default=None, compare=False)

    @classmethod
    def fixed(cls, w: Windows, dt_us: int | None, fft_block: int) -> Durations:
        us = {win: window_us(win) for win in w.all}
        return cls(dt_us, us, max(us[w.mid] // ROBUST_BLOCKS, 1), fft_block)

    @classmethod
    def automatic(cls, w: Windows, dt_us: int | None, fft_block: int) -> Durations:
        """Auto windows of a device interval (an unknown one: nominally 1 s, without grid or spectra; such a
        device has fewer than two distinct timestamps, so no window ever holds two samples)."""
        assert w.auto is not None
        n = auto_window_samples(dt_us, w.auto, fft_block)
        unit = dt_us or 1_000_000
        us = {w.short: n.short * unit, w.mid: n.mid * unit, w.long: n.long * unit}
        return cls(dt_us or None, us, n.robust_block * unit, n.fft_block, auto=True, samples=n)

    @property
    def horizon_us(self) -> int:
        return max(self.us.values())

    def rolling(self, win: str) -> str:
        """The window as a Polars duration (fixed windows: the label itself)."""
        return f"{self.us[win]}us" if self.auto else win


PLAN_SCHEMA = {
    "device_id": pl.String, "rows": pl.Int64, "interval_s": pl.Float64, "interval_from": pl.String,
    "short_s": pl.Float64, "mid_s": pl.Float64, "long_s": pl.Float64, "robust_block_s": pl.Float64,
    "fft_block": pl.Int64, "notes": pl.String,
}


def _plan_notes(w: Windows, d: Durations, dt_us: int, how: str, spectral: bool) -> str:
    """Why some features of a device carry little or no information at its rate (empty: none)."""
    notes: list[str] = []
    if how == "unknown":
        return "fewer than 2 distinct timestamps: interval unknown, no window holds 2 samples"
    if how == "median":
        notes.append("irregular timestamps: interval = median interval")
    if d.samples is not None:  # auto windows
        if d.samples.floored:
            notes.append(f"long raised to its floor of {AUTO_LONG_MIN} samples (baseline < "
                         f"{AUTO_LONG_MIN * BASELINE_SHARE} samples)")
        elif d.samples.capped:
            notes.append(f"long capped at a tenth of the baseline ({d.samples.long} samples)")
        return "; ".join(notes)
    # fixed windows: what the rate does to them (auto windows avoid all of this by construction)
    for win in w.all:
        if d.us[win] <= dt_us:
            said = [f"mean_{win} = the value"]
            said += [f"delta_{win} = 0"] if win in w.delta else []
            said += [f"std_{win} NULL"] if win in w.stat else []
            said += [f"min/max_{win} = the value, flatline_{win} NULL"] if win == w.mid else []
            notes.append(f"{win} holds 1 sample: {', '.join(said)}")
    if d.robust_block_us < ROBUST_MIN_BLOCK * dt_us:
        notes.append(f"robust_z NULL: blocks of {d.robust_block_us / dt_us:.2g} samples (a spread needs 3)")
    block_us = d.fft_block * dt_us
    if spectral and block_us > d.horizon_us:
        notes.append(f"spectra NULL on ~{1 - d.horizon_us / block_us:.0%} of rows: a {d.fft_block}-sample FFT block "
                     f"spans more than {w.long}")
    return "; ".join(notes)


def window_plan(
    telemetry: pl.DataFrame | pl.LazyFrame,
    windows: WindowsArg = DEFAULT_WINDOWS,
    sensor_families: Mapping[str, str] | None = None,
    *,
    fft_block: int = FFT_BLOCK,
) -> pl.DataFrame:
    """One row per device (``PLAN_SCHEMA``, first-appearance order): its rows, sample interval and how it was
    found (see :func:`device_intervals`), the durations of its short/mid/long windows (auto windows: derived
    from its own interval; fixed windows: the labels), its robust-z block and FFT block, and notes on features
    that carry little or nothing at that rate (``sensor_families``: are there spectral sensors).  Only the
    ``device_id`` and ``ts`` columns are read."""
    df = telemetry.select("device_id", "ts")
    df = df.collect() if isinstance(df, pl.LazyFrame) else df
    df = df.select(pl.col("device_id").cast(pl.String), pl.col("ts").cast(pl.Datetime("us")))
    if df.height == 0:
        return pl.DataFrame(schema=PLAN_SCHEMA)
    if not is_grouped_sorted(df):
        df = df.sort(["device_id", "ts"], maintain_order=True)
    first, rows, dts, hows = device_intervals(df)
    w = Windows.of(windows)
    spectral = sensor_families is None or any(f in SPECTRAL_FAMILIES for f in sensor_families.values())
    cache: dict[tuple[int, str], tuple] = {}
    out = []
    for dt, how in zip(dts.tolist(), hows):
        key = (dt, how)
        if key not in cache:
            d = (Durations.automatic(w, dt or None, fft_block) if w.auto is not None
                 else Durations.fixed(w, None, fft_block))
            cache[key] = (dt / 1e6 if dt else None, how, *(d.us[x] / 1e6 for x in (w.short, w.mid, w.long)),
                          d.robust_block_us / 1e6, d.fft_block, _plan_notes(w, d, dt, how, spectral))
        out.append(cache[key])
    cols = list(PLAN_SCHEMA)[3:]
    frame = pl.DataFrame(out, schema={c: PLAN_SCHEMA[c] for c in ["interval_s", "interval_from", *cols]}, orient="row")
    return pl.DataFrame({"device_id": df["device_id"].gather(first), "rows": rows}).cast(
        {"rows": pl.Int64}).hstack(frame).select(list(PLAN_SCHEMA))


def longest_window_us(windows: WindowsArg, rows: pl.DataFrame | None = None) -> int:
    """The longest look-back of the features in µs: the longest fixed window, or with auto windows the longest
    ``long`` window among the devices of ``rows`` (their ``device_id`` and ``ts``; no rows: 0)."""
    w = Windows.of(windows)
    if w.auto is None:
        return max(window_us(win) for win in w.all)
    plan = window_plan(rows, windows) if rows is not None else pl.DataFrame(schema=PLAN_SCHEMA)
    return int(round(plan["long_s"].max() * 1e6)) if plan.height else 0
