"""Reference implementation of ``itap_assets.core.features`` in plain pandas (groupby + time rolling).

Kept deliberately straightforward: one ``groupby("device_id").rolling(window, on="ts")`` per statistic,
the textbook slope from rolling sums of t, x, t*x, t^2, a ``groupby().apply`` per FFT block.  It is the
baseline for ``bench/features.py`` and a test oracle (``itap_assets_tests/core/test_features.py``):
same feature names, same definitions, same order; only float rounding may differ.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from itap_assets.core.features import (  # noqa: E402
    BAND_HIGH_MIN,
    BAND_LOW_MAX,
    MAX_SPECTRAL_MISSING,
    ROBUST_Z_CLIP,
    RUN_STATE,
    feature_name,
    feature_registry,
)
from itap_assets.core.windows import (  # noqa: E402
    DEFAULT_WINDOWS,
    FFT_BLOCK,
    ROBUST_BLOCKS,
    SPECTRAL_FAMILIES,
    Windows,
    window_us,
)


def _td(window: str) -> pd.Timedelta:
    return pd.Timedelta(microseconds=window_us(window))


def _rolling(df: pd.DataFrame, cols: list[str], window: str, how: str) -> pd.DataFrame:
    """``how`` of every column over the time window, per device, aligned to ``df``'s rows."""
    r = df.groupby("device_id", sort=False).rolling(_td(window), on="ts")[cols]
    res = getattr(r, how)()
    # groups come out in order of appearance, rows in order within a group: aligned for sorted input
    return pd.DataFrame(res[cols].to_numpy(), index=df.index, columns=cols)


def _dominant(block: np.ndarray, ts: np.ndarray, n: int) -> tuple[float, float, float]:
    x = block.astype(float)
    miss = np.isnan(x)
    if miss.sum() > MAX_SPECTRAL_MISSING * n:
        return (np.nan, np.nan, np.nan)
    x = np.where(miss, np.nanmean(x), x)
    x = x - x.mean()
    p = np.abs(np.fft.rfft(x * np.hanning(n))) ** 2
    p = p[1:]
    total = p.sum()
    dt_s = (ts[-1] - ts[0]) / (n - 1) / 1e6
    if total <= 0 or dt_s <= 0:
        return (np.nan, np.nan, np.nan)
    frac = np.arange(1, len(p) + 1) / (n / 2)
    return (
        (np.argmax(p) + 1) / (n * dt_s),
        p[frac <= BAND_LOW_MAX].sum() / total,
        p[frac > BAND_HIGH_MIN].sum() / total,
    )


def reference_features(
    telemetry: pd.DataFrame,
    sensor_families: Mapping[str, str],
    windows: Sequence[str] = DEFAULT_WINDOWS,
    fft_block: int = FFT_BLOCK,
) -> pd.DataFrame:
    """Same output as ``device_day_features`` (as float64), for a frame sorted by (device_id, ts)."""
    w = Windows.of(windows)
    sensors = list(sensor_families)
    df = telemetry.reset_index(drop=True).copy()
    df["ts"] = pd.to_datetime(df["ts"]).astype("datetime64[us]")
    ts_us = df["ts"].astype("int64")
    g = df.groupby("device_id", sort=False)
    first_ts = g["ts"].transform("first").astype("int64")
    is_first = df["device_id"] != df["device_id"].shift()
    horizon = window_us(w.long)
    out = pd.DataFrame(index=df.index)
    out["warmup"] = (ts_us - first_ts) < horizon
    feats: dict[str, pd.Series] = {}

    # rolling statistics
    means = {win: _rolling(df, sensors, win, "mean") for win in w.all}
    varis = {win: _rolling(df, sensors, win, "var") for win in w.stat}
    mins = _rolling(df, sensors, w.mid, "min")
    maxs = _rolling(df, sensors, w.mid, "max")
    t_min = (ts_us - first_ts) / 6e7
    sums = {}
    for win in (w.long,):
        aux = pd.DataFrame({"device_id": df["device_id"], "ts": df["ts"]})
        for s in sensors:
            valid = df[s].notna()
            t = t_min.where(valid)
            aux[f"n|{s}"] = valid.astype(float)
            aux[f"t|{s}"] = t
            aux[f"x|{s}"] = df[s]
            aux[f"tt|{s}"] = t * t
            aux[f"tx|{s}"] = t * df[s]
        cols = [c for c in aux.columns if "|" in c]
        sums[win] = _rolling(aux, cols, win, "sum")

    # robust z: mean / std of epoch-aligned blocks, median over the last ROBUST_BLOCKS blocks
    bus = max(window_us(w.mid) // ROBUST_BLOCKS, 1)
    df["_blk"] = ts_us // bus
    bg = df.groupby(["device_id", "_blk"], sort=False)[sensors]
    bmean = bg.mean()
    bstd = bg.std().where(bg.count() >= 3)
    robust = {}
    for s in sensors:
        parts = []
        for dev, sub in pd.DataFrame({"med": bmean[s], "iqr": bstd[s]}).groupby(level=0, sort=False):
            sub = sub.droplevel(0)
            full = sub.reindex(np.arange(sub.index.min(), sub.index.max() + 1))
            rmed = full["med"].rolling(ROBUST_BLOCKS, min_periods=1).median()
            rscale = full["iqr"].rolling(ROBUST_BLOCKS, min_periods=1).median()
            parts.append(
                pd.DataFrame({"device_id": dev, "_blk": full.index + 1, "rmed": rmed.values, "rscale": rscale.values})
            )
        table = pd.concat(parts, ignore_index=True)
        merged = df[["device_id", "_blk"]].merge(table, on=["device_id", "_blk"], how="left")
        robust[s] = merged

    # spectral blocks
    diffs = ts_us.diff()[~is_first]
    diffs = diffs[diffs > 0]
    dt_us = int(diffs.value_counts().sort_index().idxmax()) if len(diffs) else None
    spectral: dict[str, pd.DataFrame] = {}
    if dt_us is not None:
        sblk = ts_us // (fft_block * dt_us)
        for s, fam in sensor_families.items():
            if fam not in SPECTRAL_FAMILIES:
                continue
            rows = []
            for (dev, _), blk in df.assign(_s=sblk).groupby(["device_id", "_s"], sort=False):
                if len(blk) != fft_block:
                    continue
                dom, low, high = _dominant(blk[s].to_numpy(float), blk["ts"].astype("int64").to_numpy(), fft_block)
                rows.append((dev, blk["ts"].iloc[-1], dom, low, high))
            table = pd.DataFrame(rows, columns=["device_id", "ts", "dom", "low", "high"]).dropna()
            left = df[["device_id", "ts"]].reset_index()
            if len(table):
                table["ts"] = table["ts"].astype("datetime64[us]")
                joined = pd.merge_asof(
                    left.sort_values("ts"),
                    table.sort_values("ts"),
                    on="ts",
                    by="device_id",
                    direction="backward",
                    tolerance=pd.Timedelta(microseconds=horizon),
                ).set_index("index").reindex(df.index)
            else:
                joined = pd.DataFrame(index=df.index, columns=["dom", "low", "high"], dtype=float)
            spectral[s] = joined

    for s, fam in sensor_families.items():
        x = df[s]
        for win in w.all:
            feats[feature_name(s, "mean", win)] = means[win][s]
        for win in w.stat:
            feats[feature_name(s, "std", win)] = np.sqrt(varis[win][s])
        feats[feature_name(s, "min", w.mid)] = mins[s]
        feats[feature_name(s, "max", w.mid)] = maxs[s]
        for win in (w.long,):
            sm = sums[win]
            n, st, sx, stt, stx = (sm[f"{p}|{s}"] for p in ("n", "t", "x", "tt", "tx"))
            den = n * stt - st * st
            slope = (n * stx - st * sx) / den
            feats[feature_name(s, "slope", win)] = slope.where((n >= 2) & (den > 1e-12 * n * n))
        for win in dict.fromkeys((w.short, w.long)):
            feats[feature_name(s, "delta", win)] = x - means[win][s]
        rm, rs = robust[s]["rmed"], robust[s]["rscale"]
        scale = np.maximum(rs, np.maximum(rm.abs(), 1.0) * 1e-6)
        feats[feature_name(s, "robust_z", w.mid)] = ((x - rm) / scale).clip(-ROBUST_Z_CLIP, ROBUST_Z_CLIP)
        valid_ts = ts_us.where(x.notna())
        prev_t = valid_ts.groupby(df["device_id"]).transform(lambda v: v.shift().ffill())
        prev_x = x.groupby(df["device_id"]).transform(lambda v: v.ffill().shift())
        prev_x = prev_x.where(prev_t.notna())
        dt_min = (ts_us - prev_t) / 6e7
        ok = x.notna() & prev_t.notna() & (ts_us > prev_t) & (ts_us - prev_t <= horizon)
        feats[feature_name(s, "roc", None)] = ((x - prev_x) / dt_min).where(ok)
        if s in spectral:
            for kind, col in (("dom_freq", "dom"), ("band_energy_low", "low"), ("band_energy_high", "high")):
                feats[feature_name(s, kind, None)] = spectral[s][col].astype(float)
        elif fam in SPECTRAL_FAMILIES:
            for kind in ("dom_freq", "band_energy_low", "band_energy_high"):
                feats[feature_name(s, kind, None)] = pd.Series(np.nan, index=df.index)

    rows_h = _rolling(df.assign(_one=1.0), ["_one"], w.long, "sum")["_one"]
    row = pd.Series(np.arange(len(df)), index=df.index)
    first_row = row.groupby(df["device_id"]).transform("first")
    for s in sensors:
        x = df[s]
        last_valid = row.where(x.notna()).groupby(df["device_id"]).ffill()
        streak = (row - last_valid).where(last_valid.notna(), row - first_row + 1)
        feats[feature_name(s, "missing_streak", None)] = np.minimum(streak, rows_h)
        last_null = ts_us.where(x.isna()).groupby(df["device_id"]).ffill()
        since = (ts_us - last_null).where(last_null.notna(), ts_us - first_ts)
        feats[feature_name(s, "time_since_dropout", None)] = np.minimum(since, horizon) / 1e6
        flat = ((df["state"] == RUN_STATE) & (maxs[s] == mins[s])).astype(float)
        feats[feature_name(s, "flatline", w.mid)] = flat.where(varis[w.mid][s].notna())
    change = (df["state"] != df.groupby("device_id")["state"].shift()) & ~is_first
    for win in w.stat:
        feats[feature_name(None, "transitions", win)] = _rolling(
            df.assign(_c=change.astype(float)), ["_c"], win, "sum"
        )["_c"]
    last_chg = ts_us.where(change).groupby(df["device_id"]).ffill()
    since = (ts_us - last_chg).where(last_chg.notna(), ts_us - first_ts)
    feats[feature_name(None, "time_since_change", None)] = np.minimum(since, horizon) / 1e6

    names = [spec.name for spec in feature_registry(sensor_families, windows)]
    res = pd.concat([df[["ts", "day", "device_id", "state"]], out, pd.DataFrame(feats)[names]], axis=1)
    return res


if __name__ == "__main__":  # pragma: no cover - manual smoke run
    print(__doc__)
