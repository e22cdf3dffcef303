"""End-to-end benchmark: the whole graph per preset, as few runs as the design allows, on a fresh DuckDB file.

    python bench/pipeline.py small|large|month|all [--reference-devices N]   (N = 0: no reference)
    python bench/pipeline.py quality [--seeds 7 8]

Prints, per asset step, the time spent loading inputs, in the asset body and writing outputs, the step's peak
RSS and how many cores it kept busy on average (CPU seconds / wall seconds); end to end: wall time, rows/s, peak
RSS and Dagster overhead (run wall time minus the time inside steps).
Runs execute as a launched run does (`execute_job` with the project's in-process executor), not through
`materialize`, which keeps every output in memory for tests. Then the predecessor-style reference on the same
data in the same process (pandas row-window and rolling-FFT features + StandardScaler + IsolationForest, see
reference_pipeline.py), the ratio end to end and on the same work, and a final parseable line per preset:

    bench large: rows=8640000 wall_s=… rows_per_s=… peak_rss_mb=… overhead_pct=… vs_reference=…x

Each preset runs in its own child process, so peak RSS is that preset's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRESETS = {
    "small": {"devices": 10, "days": 2, "sample_interval_s": 10},
    "large": {"devices": 100, "days": 1, "sample_interval_s": 1, "healthy_days": 0},
    "month": {"devices": 20, "days": 30, "sample_interval_s": 10},
}
# `large` has a single day, so its baseline is the first 6 hours of each device (fault-free: healthy_days would
# otherwise leave no faulty day) — see the preset definition: 100 devices × 1 day at 1 Hz.
TRAINING = {"large": {"first_samples": 6 * 3600}}
SAME_STEPS_AS_REFERENCE = ("features", "model", "scores")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ResourceSampler(threading.Thread):
    """Resident memory and CPU time used so far, every 0.2 s (wall-clock stamped): which step a memory peak
    belongs to, and how many cores a step keeps busy."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float, float]] = []

    def run(self) -> None:
        page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        while True:
            with open("/proc/self/statm") as f:
                rss_mb = int(f.read().split()[1]) * page_mb
            cpu = os.times()
            self.samples.append((time.time(), rss_mb, cpu.user + cpu.system))
            time.sleep(0.2)

    def peak_between(self, start: float, end: float) -> float:
        return max((mb for t, mb, _ in self.samples if start <= t <= end), default=0.0)

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds of all threads between two wall-clock times (nearest samples)."""
        inside = [cpu for t, _, cpu in self.samples if start <= t <= end]
        return inside[-1] - inside[0] if len(inside) > 1 else 0.0


def step_seconds(instance, run_id: str, resources: ResourceSampler) -> dict[str, dict[str, float]]:
    """Per step of a run, from the event log: seconds from STEP_START to STEP_SUCCESS (`total`), split into
    loading inputs (`load`, to the last LOADED_INPUT), the asset body (`body`, to STEP_OUTPUT) and writing
    outputs (`write`, to the last HANDLED_OUTPUT); checks and metadata fall in `body`; the step's peak RSS and the
    CPU seconds spent meanwhile (`cpu`)."""
    marks: dict[str, dict[str, float]] = {}
    out: dict[str, dict[str, float]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        kind, m = event.event_type_value, marks.setdefault(event.step_key, {})
        if kind == "STEP_START":
            m.clear()
            m["start"] = m["loaded"] = entry.timestamp
        elif kind == "LOADED_INPUT":
            m["loaded"] = entry.timestamp
        elif kind == "STEP_OUTPUT":
            m.setdefault("output", entry.timestamp)
        elif kind == "HANDLED_OUTPUT":
            m["handled"] = entry.timestamp
        elif kind == "STEP_SUCCESS":
            end = entry.timestamp
            output = m.get("output", end)
            step = out.setdefault(event.step_key, {"total": 0.0, "load": 0.0, "body": 0.0, "write": 0.0,
                                                   "peak_rss_mb": 0.0, "cpu": 0.0})
            step["peak_rss_mb"] = max(step["peak_rss_mb"], resources.peak_between(m["start"], end))
            step["cpu"] += resources.cpu_between(m["start"], end)
            step["total"] += end - m["start"]
            step["load"] += m["loaded"] - m["start"]
            step["body"] += output - m["loaded"]
            step["write"] += m.get("handled", output) - output
    return out


def run_preset(name: str, reference_devices: int | None, seed: int | None = None) -> dict:
    """Child process: the whole graph for one preset; returns the figures as a dict."""
    tmp = Path(tempfile.mkdtemp(prefix=f"itap-bench-{name}-"))
    sim = dict(PRESETS[name])
    if seed is not None:
        sim["seed"] = seed
    config = {"simulation": sim, "features": {"windows": ["1m", "5m", "30m"]}}  # the simulated fleet's, as in
    if name in TRAINING:  # configs/itap.yaml
        config["model"] = {"training": TRAINING[name]}
    import yaml

    (tmp / "itap.yaml").write_text(yaml.safe_dump(config))
    os.environ["ITAP_CONFIG"] = str(tmp / "itap.yaml")
    os.environ["ITAP_DB_PATH"] = str(tmp / "itap.duckdb")

    import dagster as dg

    from itap_assets.demo import data_partitions, execute, register_devices, run_plan
    from itap_assets.settings import load_settings

    settings = load_settings()
    pairs = data_partitions(settings)
    steps: dict[str, dict[str, float]] = {}
    runs = []
    resources = ResourceSampler()
    resources.start()
    started = time.perf_counter()
    with dg.DagsterInstance.ephemeral() as instance:
        register_devices(instance, sorted({dev for _, dev in pairs}))
        for job, tags in run_plan(pairs, list(instance.get_dynamic_partitions("device"))):
            t0 = time.perf_counter()
            result = execute(instance, job.name, tags)  # as a launched run, like `make demo`
            wall = time.perf_counter() - t0
            if not result.success:
                raise SystemExit(f"{name}: run of {job.name} failed")
            inside = step_seconds(instance, result.run_id, resources)
            for step, parts in inside.items():
                mine = steps.setdefault(step, dict.fromkeys(parts, 0.0))
                for part, value in parts.items():
                    mine[part] = max(mine[part], value) if part == "peak_rss_mb" else mine[part] + value
            runs.append({"job": job.name, "wall_s": wall, "steps_s": sum(p["total"] for p in inside.values())})
    wall = time.perf_counter() - started
    rows = _rows(tmp / "itap.duckdb")
    figures = {
        "preset": name,
        "rows": rows,
        "partitions": len(pairs),
        "runs": len(runs),
        "wall_s": wall,
        "rows_per_s": rows / wall,
        "steps": steps,
        "run_walls": runs,
        "overhead_s": sum(r["wall_s"] - r["steps_s"] for r in runs),
        "peak_rss_mb": peak_rss_mb(),  # the pipeline's: measured before the reference runs in this process
        "metrics": _headline(tmp / "itap.duckdb"),
    }
    figures["overhead_pct"] = 100 * figures["overhead_s"] / wall
    if reference_devices != 0:
        from bench.reference_pipeline import reference_run

        figures["reference"] = reference_run(settings, reference_devices)
        figures["vs_reference"] = figures["reference"]["extrapolated_s"] / wall
        # Like for like: the steps that do what the reference does (features, model fit, scoring).
        same = sum(steps[s]["total"] for s in SAME_STEPS_AS_REFERENCE if s in steps)
        figures["same_steps_s"] = same
        figures["vs_reference_same_steps"] = figures["reference"]["extrapolated_s"] / same
    figures["peak_rss_mb_with_reference"] = peak_rss_mb()
    return figures


def _rows(db: Path) -> int:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT count(*) FROM raw_telemetry").fetchall()[0][0]


def _headline(db: Path) -> dict[str, float | None]:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT metric, value FROM detection_metrics WHERE scope = 'all'").fetchall()
    return dict(rows)


def child(name: str, reference_devices: int | None, seed: int | None = None) -> dict:
    args = [sys.executable, __file__, "--child", name]
    if reference_devices is not None:
        args += ["--reference-devices", str(reference_devices)]
    if seed is not None:
        args += ["--seed", str(seed)]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise SystemExit(f"preset {name} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(f: dict) -> None:
    print(f"\n== preset {f['preset']}: {f['rows']:,} rows, {f['partitions']} partitions, {f['runs']} runs ==")
    print(f"  {'step':<28} {'total':>8}   {'load':>6} {'body':>6} {'write':>6}  {'peak RSS':>9}  {'cores':>5}")
    for step, s in sorted(f["steps"].items(), key=lambda kv: -kv[1]["total"]):
        print(f"  {step:<28} {s['total']:8.1f} s ({s['load']:6.1f} {s['body']:6.1f} {s['write']:6.1f}) "
              f"{s['peak_rss_mb']:6.0f} MB  {s['cpu'] / s['total'] if s['total'] else 0:5.2f}")
    print(f"  {'end to end':<28} {f['wall_s']:8.1f} s   ({f['rows_per_s']:,.0f} rows/s)")
    print(f"  {'Dagster overhead':<28} {f['overhead_s']:8.1f} s   ({f['overhead_pct']:.1f}% of wall time)")
    print(f"  {'peak RSS':<28} {f['peak_rss_mb']:8.0f} MB  (with the reference run after it: "
          f"{f['peak_rss_mb_with_reference']:.0f} MB)")
    ref = f.get("reference")
    if ref:
        print(f"  reference (predecessor approach, {ref['devices']} of {ref['fleet_devices']} devices, "
              f"extrapolated linearly): {ref['extrapolated_s']:.1f} s "
              f"(features {ref['features_s']:.1f} s, fit {ref['fit_s']:.1f} s, score {ref['score_s']:.1f} s on the "
              f"subset; rolling FFT {ref['spectral_s']:.1f} s on {ref['spectral_devices']} devices) "
              f"→ ITAP is {f['vs_reference']:.1f}× faster end to end, {f['vs_reference_same_steps']:.1f}× on the "
              f"same work ({' + '.join(SAME_STEPS_AS_REFERENCE)}: {f['same_steps_s']:.1f} s)")
    vs = f"{f['vs_reference']:.1f}" if "vs_reference" in f else "n/a"
    print(f"bench {f['preset']}: rows={f['rows']} wall_s={f['wall_s']:.1f} rows_per_s={f['rows_per_s']:.0f} "
          f"peak_rss_mb={f['peak_rss_mb']:.0f} overhead_pct={f['overhead_pct']:.1f} vs_reference={vs}x")


QUALITY = [
    "detection.critical_episode_recall", "detection.false_alarm_rate", "detection.false_alarm_rate_excl_post_fault",
    "detection.roc_auc", "detection.roc_auc_excl_post_fault", "detection.pr_auc", "root_cause.accuracy",
    "alerts.critical_episode_alert_recall", "alerts.alert_precision", "alerts.alert_precision_with_evidence_window",
    "alerts.alerts_per_fault_free_device_day", "alerts.alerts_per_flagged_point",
    "alerts.episode_single_incident", "alerts.episode_route_accuracy", "alerts.episode_cause_accuracy",
]


def quality(seeds: list[int]) -> None:
    results = {seed: child("small", 0, seed)["metrics"] for seed in seeds}
    print("\n== quality: preset small, detection_metrics (training day left out) ==")
    print(f"  {'metric':<44}" + "".join(f"{'seed ' + str(s):>12}" for s in seeds))
    for metric in QUALITY:
        cells = "".join(f"{(results[s].get(metric) if results[s].get(metric) is not None else float('nan')):>12.3f}"
                        for s in seeds)
        print(f"  {metric:<44}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", nargs="?", choices=[*PRESETS, "all", "quality"], default="small")
    parser.add_argument("--child", choices=list(PRESETS))
    parser.add_argument("--reference-devices", type=int, default=None,
                        help="devices the reference runs on (extrapolated to the fleet); 0 = no reference")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_preset(args.child, args.reference_devices, args.seed)))
        return
    if args.preset == "quality":
        quality(args.seeds)
        return
    for name in PRESETS if args.preset == "all" else [args.preset]:
        report(child(name, args.reference_devices))
    if args.preset == "all":
        quality(args.seeds)


if __name__ == "__main__":
    main()
