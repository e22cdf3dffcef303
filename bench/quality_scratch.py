"""Scratch quality check of the model chain on the simulated demo fleet (not a test; the lead may fold it into bench).

simulate (10 devices x 2 days at 10 s) -> features (both days, so day 2 has full history)
-> per device: fit on day 1 (warm-up rows excluded), label-free POT threshold on the baseline scores, score day 2,
   k-of-n smoothing -> explain flagged points (root-cause family map) -> metrics.

    .venv/bin/python bench/quality_scratch.py [--seeds 7 11] [--kind pca] [--k 2 --n 3] [--threshold-on point]

``--threshold-on point`` (default) fits the POT threshold on single-point baseline scores, as core/scoring.py does;
``smoothed`` fits it on the k-of-n statistic (``thresholds.smoothed_threshold``). Besides the standard metrics it
prints them without fault-free rows <= 30 min (the longest feature window) after an episode end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from itap_assets.core import features as F  # noqa: E402
from itap_assets.core.detector import fit_detector  # noqa: E402
from itap_assets.core.explain import explain_points, root_cause_family_map  # noqa: E402
from itap_assets.core.metrics import (  # noqa: E402
    detection_metrics,
    fault_episodes,
    root_cause_accuracy,
)
from itap_assets.core.simulator import simulate_fleet  # noqa: E402
from itap_assets.core.thresholds import k_of_n, smoothed_threshold  # noqa: E402
from itap_assets.settings import DEFAULT_SENSORS, SimulationSettings  # noqa: E402

SENSOR_FAMILIES = {k: v.family for k, v in DEFAULT_SENSORS.items()}


def run(seed: int, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    sim = SimulationSettings(devices=args.devices, days=2, seed=seed)
    tele = simulate_fleet(sim)
    specs = F.feature_registry(SENSOR_FAMILIES)
    feats = F.device_day_features(tele, SENSOR_FAMILIES)
    names = [s.name for s in specs]
    if args.exclude:
        names = [n for n in names if not any(x in n for x in args.exclude.split(","))]
    fam = root_cause_family_map([s for s in specs if s.name in names], SENSOR_FAMILIES)
    t_feat = time.perf_counter() - t0
    day1 = sim.start
    frames, expl = [], []
    fit_s = score_s = 0.0
    for dev in tele["device_id"].unique().sort().to_list():
        f = feats.filter(pl.col("device_id") == dev)
        lab = tele.filter(pl.col("device_id") == dev).select("fault_tag", "fault_id")
        f = pl.concat([f, lab], how="horizontal_extend")
        train_mask = (f["day"] == day1) & ~f["warmup"]
        X = f.select(names).to_numpy().astype(np.float32)
        t = time.perf_counter()
        det = fit_detector(X[train_mask.to_numpy()], names, kind=args.kind, seed=0, **json.loads(args.config))
        fit_s += time.perf_counter() - t
        # "point": POT on the single-point baseline scores (what core/scoring.py does); "smoothed": POT on the
        # k-of-n statistic of the baseline (controls the smoothed flag rate; lower threshold, more sensitive).
        kk, nn = (args.k, args.n) if args.threshold_on == "smoothed" else (1, 1)
        thr = smoothed_threshold(det.baseline_scores, kk, nn, method=args.threshold, risk=args.risk,
                                 quantile=1 - args.risk)
        test = (f["day"] != day1).to_numpy()
        t = time.perf_counter()
        s = det.score(X[test])
        score_s += time.perf_counter() - t
        raw = s > thr
        if args.maint_mask:
            raw &= f.filter(pl.Series(test))["state"].to_numpy() != "MAINT"
        flag = k_of_n(raw, args.k, args.n)
        ft = f.filter(pl.Series(test)).with_columns(
            score=pl.Series(s), is_anomaly=pl.Series(flag), in_training=pl.lit(False), threshold=pl.lit(thr)
        )
        frames.append(ft.select("device_id", "ts", "state", "score", "is_anomaly", "in_training", "fault_tag",
                                "fault_id", "threshold"))
        idx = np.flatnonzero(flag)
        if idx.size:
            a = det.attribution(X[test][idx])
            e = explain_points(a, names, fam)
            expl.append(pl.concat([ft[idx].select("device_id", "ts", "fault_tag", "fault_id", "is_anomaly"), e],
                                  how="horizontal_extend"))
    scores = pl.concat(frames)
    explained = pl.concat(expl)
    eps = fault_episodes(tele)
    det_m = detection_metrics(scores, post_fault_grace_s=1800.0)
    rc = root_cause_accuracy(explained, SENSOR_FAMILIES, episodes=eps)
    out = {"seed": seed, "det": det_m, "rc": rc, "feat_s": t_feat, "fit_s": fit_s, "score_s": score_s,
           "thresholds": scores.group_by("device_id").agg(pl.col("threshold").first()).sort("device_id")["threshold"].to_list()}
    if args.verbose:
        fa = scores.filter(pl.col("fault_id").is_null() & pl.col("is_anomaly"))
        print("false alarms by state:", fa.group_by("state").len().sort("state").rows())
        print("false alarms by device:", fa.group_by("device_id").len().sort("device_id").rows())
        wrong = explained.join(eps.select("device_id", "fault_id", "fault_sensor"), on=["device_id", "fault_id"],
                               how="left").filter(pl.col("fault_id").is_not_null())
        print(wrong.group_by("fault_tag", "fault_sensor", "top_family").len().sort("fault_tag", "fault_sensor", "len").rows())
        ed = __import__("itap_assets.core.metrics", fromlist=["x"]).episode_detection(scores)
        print(ed.filter(~pl.col("detected")).select("device_id", "fault_id", "fault_tag", "n_points").rows())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 11])
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--kind", default="pca")
    ap.add_argument("--config", default="{}")
    ap.add_argument("--threshold", default="pot")
    ap.add_argument("--risk", type=float, default=1e-4)
    ap.add_argument("--threshold-on", choices=["point", "smoothed"], default="point")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--exclude", default="")
    ap.add_argument("--maint-mask", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    for seed in args.seeds:
        r = run(seed, args)
        o, per = r["det"]["overall"], r["det"]["by_fault_type"]
        rc = r["rc"]
        print(f"seed={seed} kind={args.kind} feat={r['feat_s']:.1f}s fit={r['fit_s']:.1f}s score={r['score_s']:.1f}s "
              f"thr={np.round(r['thresholds'], 2).tolist()}")
        print(f"  points: roc_auc={o['roc_auc']:.4f} pr_auc={o['pr_auc']:.4f} far={o['false_alarm_rate']:.4f} "
              f"precision={o['precision']:.3f} recall={o['recall']:.3f} f1={o['f1']:.3f}")
        print(f"  excluding fault-free rows <= 30 min after an episode end ({o['post_fault_rows']} rows, "
              f"{o['post_fault_flagged']} flagged): far={o['false_alarm_rate_excl_post_fault']:.4f} "
              f"roc_auc={o['roc_auc_excl_post_fault']:.4f}")
        for tag, b in per.items():
            rcb = rc["by_fault_type"].get(tag, {})
            print(f"  {tag:15s} eps={b['episodes_detected']}/{b['episodes']} ep_recall={b['episode_recall']:.3f} "
                  f"pt_recall={b['point_recall']:.3f} auc={b['roc_auc']:.4f} delay={b['median_delay_s']} "
                  f"rc={rcb.get('accuracy')} rc_ep={rcb.get('episode_accuracy')}")
        print(f"  root cause: points={rc['overall']['points']} accuracy={rc['overall']['accuracy']:.3f} "
              f"episode_accuracy={rc['overall']['episode_accuracy']:.3f}")


if __name__ == "__main__":
    main()
