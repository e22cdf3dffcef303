"""Benchmark of ``itap_assets.core.features.device_day_features`` against the pandas reference.

    python bench/features.py                        # 100 devices x 1 day at 1 Hz = 8.64 M rows
    python bench/features.py --data simulator       # same size, from itap_assets.core.simulator
    python bench/features.py --devices 10 --reference-devices 2   # quick run

Each measurement runs in a fresh subprocess (so the peak RSS of one does not leak into the other):
it builds the fleet (default: synthetic numpy random walks + noise + a per-device vibration/current
tone + 1% NULL samples and 10-minute dropout bursts + RUN/IDLE/MAINT segments), then times the
feature computation alone (data generation excluded).  The pandas reference runs on a subset of
devices and its time is extrapolated linearly to the full fleet (the work is per device, so it
scales linearly).  Wall times depend on what else runs on the machine: the CPU seconds (user +
sys, all threads) are printed too.  The last line is parseable:

    bench features: rows=... wall_s=... rows_per_s=... peak_rss_mb=... n_features=... vs_reference=...x ...

``peak_rss_mb`` is the process peak (ru_maxrss), input frame included (also printed on its own).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from itap_assets.core.features import device_day_features, feature_registry  # noqa: E402

SENSOR_FAMILIES = {
    "temp_c": "Temperature",
    "vibration_g": "Vibration",
    "voltage_v": "Voltage",
    "current_a": "Current",
    "rpm": "RPM",
}
STATES = np.array(["RUN", "IDLE", "MAINT"])


def synthetic_fleet(
    n_devices: int, seconds: int = 86_400, interval_s: int = 1, seed: int = 0, start: str = "2026-01-01"
) -> pl.DataFrame:
    """Validated-telemetry-shaped frame sorted by (device_id, ts), built with vectorised numpy."""
    rng = np.random.default_rng(seed)
    n = seconds // interval_s
    t = np.arange(n) * float(interval_s)
    t0 = np.datetime64(start, "us")
    ts = np.tile(t0 + np.arange(n) * np.timedelta64(interval_s * 1_000_000, "us"), n_devices)
    # state segments: change points ~ every 30 min, cycling RUN -> IDLE -> MAINT (mostly RUN)
    seg = np.cumsum(rng.random((n_devices, n)) < interval_s / 1800.0, axis=1)
    state_idx = np.where(seg % 5 < 3, 0, np.where(seg % 5 == 3, 1, 2))
    run = state_idx == 0

    def walk(base: float, step: float, noise: float) -> np.ndarray:
        w = np.cumsum(rng.normal(0.0, step, (n_devices, n)), axis=1)
        return base + w + rng.normal(0.0, noise, (n_devices, n))

    freq = rng.uniform(0.05, 0.3, (n_devices, 1))
    tone = np.sin(2 * np.pi * freq * t)
    cols = {
        "temp_c": walk(60.0, 0.01, 0.2),
        "vibration_g": np.abs(walk(1.0, 0.001, 0.05) + 0.5 * tone * run),
        "voltage_v": walk(400.0, 0.02, 1.0),
        "current_a": walk(50.0, 0.01, 0.5) * np.where(run, 1.0, 0.2) + 2.0 * tone,
        "rpm": walk(1500.0, 0.5, 5.0) * run,
    }
    out: dict[str, np.ndarray] = {
        "ts": ts,
        "device_id": np.repeat(np.array([f"dev{d:04d}" for d in range(n_devices)]), n),
        "state": STATES[state_idx.ravel()],
    }
    for name, v in cols.items():
        v = v.ravel()
        mask = rng.random(v.size) < 0.01  # isolated missing samples
        burst = np.repeat(rng.random(v.size // 600) < 0.01, 600)  # ~1% of 10-minute dropouts
        mask[: burst.size] |= burst
        v[mask] = np.nan
        out[name] = v
    df = pl.DataFrame(out).with_columns(
        pl.col("ts").cast(pl.Datetime("us")), pl.col(list(cols)).fill_nan(None)
    )
    return df.select("ts", pl.col("ts").dt.date().alias("day"), "device_id", "state", *cols)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _fleet(devices: int, data: str) -> pl.DataFrame:
    if data == "simulator":  # the project's simulator (faults, realistic shapes), 1 Hz
        from itap_assets.core.simulator import simulate_fleet
        from itap_assets.settings import SimulationSettings

        sim = simulate_fleet(SimulationSettings(devices=devices, days=1, sample_interval_s=1.0, seed=7))
        return sim.select("ts", "day", "device_id", "state", *SENSOR_FAMILIES)
    return synthetic_fleet(devices)


def _measure(engine: str, devices: int, data: str) -> dict:
    df = _fleet(devices, data)
    rows = df.height
    base_rss = _rss_mb()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    if engine == "polars":
        t0 = time.perf_counter()
        out = device_day_features(df, SENSOR_FAMILIES)
        wall = time.perf_counter() - t0
        n_features = out.width - 5
    else:
        sys.path.insert(0, str(ROOT / "bench"))
        from pandas_reference import reference_features

        pdf = df.to_pandas()
        del df
        t0 = time.perf_counter()
        out = reference_features(pdf, SENSOR_FAMILIES)
        wall = time.perf_counter() - t0
        n_features = out.shape[1] - 5
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
        "engine": engine,
        "devices": devices,
        "rows": rows,
        "wall_s": wall,
        "peak_rss_mb": _rss_mb(),
        "input_rss_mb": base_rss,
        "n_features": n_features,
    }


def _run_child(engine: str, devices: int, data: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", engine, "--devices", str(devices), "--data", data]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--reference-devices", type=int, default=10)
    ap.add_argument(
        "--data",
        choices=["synthetic", "simulator"],
        default="synthetic",
        help="synthetic: numpy walks with 1%% NULLs + dropout bursts (default); simulator: itap_assets.core.simulator",
    )
    ap.add_argument("--child", choices=["polars", "pandas"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args.devices, args.data)))
        return

    n_reg = len(feature_registry(SENSOR_FAMILIES))
    print(f"threads: polars={pl.thread_pool_size()} | features registered: {n_reg}", flush=True)
    print(f"data: {args.data} | load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus", flush=True)
    pol = _run_child("polars", args.devices, args.data)
    print(
        f"polars : {pol['rows']:>9,} rows ({pol['devices']} devices x 1 day @ 1 Hz)  wall {pol['wall_s']:7.2f} s"
        f"  {pol['rows'] / pol['wall_s']:>12,.0f} rows/s  cpu {pol['cpu_s']:6.1f} s"
        f"  peak RSS {pol['peak_rss_mb']:6.0f} MB"
        f" (input alone {pol['input_rss_mb']:.0f} MB)  features {pol['n_features']}",
        flush=True,
    )
    ref_devices = min(args.reference_devices, args.devices)
    ref = _run_child("pandas", ref_devices, args.data)
    scale = pol["rows"] / ref["rows"]
    ref_full = ref["wall_s"] * scale
    print(
        f"pandas : {ref['rows']:>9,} rows ({ref['devices']} devices, measured)      wall {ref['wall_s']:7.2f} s"
        f"  {ref['rows'] / ref['wall_s']:>12,.0f} rows/s  cpu {ref['cpu_s']:6.1f} s"
        f"  peak RSS {ref['peak_rss_mb']:6.0f} MB  features"
        f" {ref['n_features']}",
        flush=True,
    )
    print(
        f"pandas : extrapolated linearly x{scale:g} to {pol['rows']:,} rows: {ref_full:.1f} s"
        f" (reference run on {ref['devices']} of {pol['devices']} devices)"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f} (other processes share the cpus: compare cpu seconds too)")
    ratio = ref_full / pol["wall_s"]
    print(
        f"bench features: rows={pol['rows']} wall_s={pol['wall_s']:.2f} rows_per_s={pol['rows'] / pol['wall_s']:.0f}"
        f" peak_rss_mb={pol['peak_rss_mb']:.0f} n_features={pol['n_features']} vs_reference={ratio:.1f}x"
        f" cpu_s={pol['cpu_s']:.1f} vs_reference_cpu={ref['cpu_s'] * scale / pol['cpu_s']:.1f}x"
        f" reference_wall_s_extrapolated={ref_full:.1f} reference_devices={ref['devices']}"
    )


if __name__ == "__main__":
    main()
