"""Scoring throughput: 100 devices x 86,400 rows (one day at 1 s) x ~60 float32 features on 2 cores (target < 30 s).

    .venv/bin/python bench/scoring.py [--kind pca|ensemble|iforest] [--devices 100] [--rows 86400] [--features 60]

Per device: a Polars feature frame (Float32 columns, ~0.1 % NULLs, 6 correlated latent drivers + noise, a few
count-like "event" columns) is generated up front and a detector is fitted on a separate baseline day (both
untimed, fit time is reported). The timed loop is end to end for scoring: ``frame.select(features).to_numpy()`` ->
``Detector.score`` (row chunks on ``--threads`` threads) -> label-free k-of-n threshold -> attribution of the flagged
rows. Final line: ``bench scoring: rows=... wall_s=... rows_per_s=...``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from scipy.signal import lfilter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from itap_assets.core.detector import fit_detector  # noqa: E402
from itap_assets.core.scoring import smoothed_threshold  # noqa: E402
from itap_assets.core.thresholds import k_of_n  # noqa: E402
from itap_assets.settings import ModelSettings  # noqa: E402

LATENT = 6
EVENT_COLS = 4


def device_frame(rng: np.random.Generator, rows: int, features: int, loadings: np.ndarray) -> pl.DataFrame:
    """Correlated float32 features: slow AR(1) latent drivers, per-feature noise, NULLs, count-like columns."""
    shocks = rng.standard_normal((rows, LATENT), dtype=np.float32)
    a = 0.995  # AR(1) latent drivers, unit variance, correlation time ~200 samples
    latent = lfilter([np.sqrt(1 - a * a)], [1.0, -a], shocks, axis=0).astype(np.float32)
    cont = features - EVENT_COLS
    x = latent @ loadings[:, :cont] + 0.3 * rng.standard_normal((rows, cont), dtype=np.float32)
    x[rng.random(x.shape) < 0.001] = np.nan
    events = (rng.random((rows, EVENT_COLS)) < 0.002).astype(np.float32)  # sporadic counters, mostly 0
    cols = {f"f{j:02d}": x[:, j] for j in range(cont)}
    cols.update({f"e{j}": events[:, j] for j in range(EVENT_COLS)})
    return pl.DataFrame(cols, nan_to_null=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="pca", choices=["pca", "ensemble", "iforest"])
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--rows", type=int, default=86_400)
    ap.add_argument("--features", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-rows", type=int, default=86_400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    names: list[str] | None = None
    t0 = time.perf_counter()
    frames, detectors, thresholds = [], [], []
    fit_s = 0.0
    for d in range(args.devices):
        loadings = rng.normal(size=(LATENT, args.features)).astype(np.float32)
        train = device_frame(rng, args.train_rows, args.features, loadings)
        names = train.columns
        t = time.perf_counter()
        det = fit_detector(train.to_numpy(), names, kind=args.kind, seed=d, n_threads=args.threads)
        thresholds.append(smoothed_threshold(det.baseline_scores, ModelSettings())["threshold"])
        fit_s += time.perf_counter() - t
        detectors.append(det)
        frames.append(device_frame(rng, args.rows, args.features, loadings))
    prep_s = time.perf_counter() - t0
    print(
        f"prepared {args.devices} devices x {args.rows} rows x {args.features} features "
        f"(kind={args.kind}, cpus={os.cpu_count()}, threads={args.threads}) in {prep_s:.1f}s; fit total {fit_s:.1f}s",
        flush=True,
    )

    flagged = 0
    attr_s = 0.0
    t0 = time.perf_counter()
    for frame, det, thr in zip(frames, detectors, thresholds):
        x = frame.select(names).to_numpy()
        scores = det.score(x, n_threads=args.threads)
        flags = k_of_n(scores > thr, 2, 3)
        idx = np.flatnonzero(flags)
        flagged += idx.size
        if idx.size:
            t = time.perf_counter()
            det.attribution(x[idx[:5000]])
            attr_s += time.perf_counter() - t
    wall = time.perf_counter() - t0
    rows = args.devices * args.rows
    print(f"flagged rows: {flagged} ({flagged / rows:.5%}); attribution of flagged rows {attr_s:.2f}s (inside wall)")
    print(f"bench scoring: rows={rows} wall_s={wall:.2f} rows_per_s={rows / wall:,.0f}")


if __name__ == "__main__":
    main()
