"""The predecessor ITAP's approach, as its README describes it, timed on the same simulated data.

pandas row-count rolling windows per device (mean, std, min, max, "trend" — which in the predecessor equals the
mean —, delta and z-score per sensor), frequency-domain features (FFT energy and dominant frequency bin over the
shortest window, by row-wise `rolling().apply`) + StandardScaler + IsolationForest fitted on the baseline rows and
scoring every row. The spectral part is slow (DESIGN.md: ~18 min for 8.64 M rows), so it is timed on fewer devices
and extrapolated to the fleet separately; see `reference_run`.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from itap_assets.core.simulator import device_ids, simulate_fleet
from itap_assets.settings import Settings

WINDOWS_S = (60, 300, 1800)


def predecessor_features(frame: pd.DataFrame, sensors: list[str], interval_s: float) -> pd.DataFrame:
    out = {}
    grouped = frame.groupby("device_id", sort=False)
    for sensor in sensors:
        for window_s in WINDOWS_S:
            rows = max(2, int(window_s / interval_s))
            rolling = grouped[sensor].rolling(rows, min_periods=1)
            mean = rolling.mean().reset_index(level=0, drop=True)
            std = rolling.std().reset_index(level=0, drop=True)
            out[f"{sensor}_mean_{rows}"] = mean
            out[f"{sensor}_std_{rows}"] = std
            out[f"{sensor}_min_{rows}"] = rolling.min().reset_index(level=0, drop=True)
            out[f"{sensor}_max_{rows}"] = rolling.max().reset_index(level=0, drop=True)
            out[f"{sensor}_trend_{rows}"] = mean.copy()
            out[f"{sensor}_delta_{rows}"] = frame[sensor] - mean
            out[f"{sensor}_z_{rows}"] = (frame[sensor] - mean) / std.replace(0, np.nan)
    return pd.DataFrame(out).fillna(0.0)


def fft_energy(x: np.ndarray) -> float:
    """Spectral energy of the window without its DC component."""
    return float((np.abs(np.fft.rfft(x - x.mean()))[1:] ** 2).sum() / len(x))


def dominant_bin(x: np.ndarray) -> float:
    """Index of the strongest non-DC frequency bin of the window."""
    return float(np.argmax(np.abs(np.fft.rfft(x))[1:]) + 1)


def spectral_features(frame: pd.DataFrame, sensors: list[str], interval_s: float) -> pd.DataFrame:
    """The predecessor's FFT features over the shortest window: one row-wise `rolling().apply` per feature."""
    rows = max(2, int(min(WINDOWS_S) / interval_s))
    grouped = frame.groupby("device_id", sort=False)
    out = {}
    for sensor in sensors:
        rolling = grouped[sensor].rolling(rows, min_periods=2)
        for name, fn in (("fft_energy", fft_energy), ("fft_peak", dominant_bin)):
            out[f"{sensor}_{name}_{rows}"] = rolling.apply(fn, raw=True).reset_index(level=0, drop=True)
    return pd.DataFrame(out).fillna(0.0)


def reference_run(settings: Settings, devices: int | None = None, spectral_devices: int = 2) -> dict:
    """Time the reference on `devices` devices of the fleet and extrapolate linearly to the whole fleet.

    The spectral features (about 7 s per device-day at 1 Hz here; DESIGN.md measured ~18 min for 100) are timed on the first
    `spectral_devices` of those devices only and extrapolated to the fleet on their own. The model still sees the
    spectral columns for every row: devices outside the spectral subset get 0.0 there, which leaves the fit and
    score cost unchanged (it depends on the number of rows and columns, not on the values).
    """
    sim = settings.simulation
    fleet = device_ids(sim)
    subset = fleet[: devices or min(len(fleet), 10)]
    spectral_subset = subset[: max(1, min(spectral_devices, len(subset)))]
    data = simulate_fleet(sim, devices=subset).to_pandas()
    spectral_frame = data[data["device_id"].isin(spectral_subset)]
    sensors = list(settings.sensor_families)
    started = time.perf_counter()
    features = predecessor_features(data, sensors, sim.sample_interval_s)
    featured = time.perf_counter()
    spectral = spectral_features(spectral_frame, sensors, sim.sample_interval_s)
    spectral_s = time.perf_counter() - featured
    features = pd.concat([features, spectral.reindex(features.index, fill_value=0.0)], axis=1)
    featured = time.perf_counter()
    tr = settings.model.training
    if tr.first_samples is not None:
        baseline = data.groupby("device_id").cumcount() < tr.first_samples
    else:
        baseline = pd.to_datetime(data["day"]) < pd.Timestamp(sim.start) + pd.Timedelta(days=tr.first_days or 1)
    model = make_pipeline(StandardScaler(), IsolationForest(n_estimators=100, random_state=0))
    model.fit(features[baseline.to_numpy()].to_numpy(np.float64))
    fitted = time.perf_counter()
    model.score_samples(features.to_numpy(np.float64))
    scored = time.perf_counter()
    return {
        "devices": len(subset),
        "fleet_devices": len(fleet),
        "rows": len(data),
        "features": features.shape[1],
        "spectral_devices": len(spectral_subset),
        "features_s": featured - started - spectral_s,
        "spectral_s": spectral_s,
        "fit_s": fitted - featured,
        "score_s": scored - fitted,
        "extrapolated_s": (scored - started - spectral_s) * len(fleet) / len(subset)
        + spectral_s * len(fleet) / len(spectral_subset),
    }
