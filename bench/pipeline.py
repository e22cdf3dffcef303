"""End-to-end benchmark: the whole graph per preset, as few runs as the design allows, on a fresh DuckDB file.

    python bench/pipeline.py small|large|month|all [--reference-devices N]   (N = 0: no reference)
    python bench/pipeline.py large|month --parallel 2      (the Parquet mode, 2 processes; `all` adds both)
    python bench/pipeline.py quality [--seeds 7 8]

Prints, per asset step, the time spent loading inputs, in the asset body and writing outputs, the step's peak
RSS and how many cores it kept busy on average (CPU seconds / wall seconds); end to end: wall time, rows/s, peak
RSS and Dagster overhead (run wall time minus the time inside steps).
Runs execute as a launched run does (`execute_job` with the project's in-process executor), not through
`materialize`, which keeps every output in memory for tests. Then the predecessor-style reference on the same
data in the same process (pandas row-window and rolling-FFT features + StandardScaler + IsolationForest, see
reference_pipeline.py), the ratio end to end and on the same work, and a final parseable line per preset:

    bench large: rows=8640000 wall_s=… rows_per_s=… peak_rss_mb=… overhead_pct=… vs_reference=…x

Each preset runs in its own child process, so peak RSS is that preset's. `--parallel N` (docs/deployment.md, one
machine): storage.mode parquet, the multiprocess executor with N processes and N blocks of devices side by side
(itap_assets.parallel_runs), on a temporary persistent instance; a step's `total` is then its wall time across
the blocks (first start to last end), peak RSS and cores count every process of the preset, and `all` prints
each step against the DuckDB mode of the same `make bench`:

    bench large parquet x2: rows=8640000 wall_s=… rows_per_s=… peak_rss_mb=… vs_duckdb=…x
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
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
PARALLEL_PRESETS = ("large", "month")  # `all` runs these in the Parquet mode too
PARALLEL = 2
# The steps that write day x device partitions: one at a time in the DuckDB mode (pool itap_duckdb), side by side
# in the Parquet mode.
WRITER_STEPS = ("raw_telemetry", "validation", "features", "scoring", "alerts", "device_summaries")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _process_tree() -> list[int]:
    """This process and its live descendants (run and step processes, Dask workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def _rss_and_cpu(pid: int, page_mb: float, tick_s: float) -> tuple[float, float]:
    """Resident MB and CPU seconds of a process, with those of its children it has waited for."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * page_mb
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return rss, sum(int(v) for v in fields[11:15]) * tick_s  # utime stime cutime cstime
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0


class ResourceSampler(threading.Thread):
    """Resident memory and CPU time used so far by this process and every process under it, every 0.2 s
    (wall-clock stamped): which step a memory peak belongs to, and how many cores a step keeps busy."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float, float]] = []

    def run(self) -> None:
        page_mb, tick_s = os.sysconf("SC_PAGE_SIZE") / 2**20, 1 / os.sysconf("SC_CLK_TCK")
        while True:
            figures = [_rss_and_cpu(pid, page_mb, tick_s) for pid in _process_tree()]
            self.samples.append((time.time(), sum(r for r, _ in figures), sum(c for _, c in figures)))
            time.sleep(0.2)

    def peak(self) -> float:
        return max((mb for _, mb, _ in self.samples), default=0.0)

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
                                                   "peak_rss_mb": 0.0, "cpu": 0.0, "first": m["start"],
                                                   "last": end})
            step["first"], step["last"] = min(step["first"], m["start"]), max(step["last"], end)
            step["peak_rss_mb"] = max(step["peak_rss_mb"], resources.peak_between(m["start"], end))
            step["cpu"] += resources.cpu_between(m["start"], end)
            step["total"] += end - m["start"]
            step["load"] += m["loaded"] - m["start"]
            step["body"] += output - m["loaded"]
            step["write"] += m.get("handled", output) - output
    return out


def add_steps(steps: dict[str, dict[str, float]], runs: list[dict[str, dict[str, float]]]) -> None:
    """Add the steps of one stage's runs (blocks of one job run side by side) to `steps`: seconds and CPU summed
    over the blocks, except `total`, the stage's wall time in the step (its first start to its last end)."""
    for step in {s for inside in runs for s in inside}:
        parts = [inside[step] for inside in runs if step in inside]
        mine = steps.setdefault(step, {"total": 0.0, "load": 0.0, "body": 0.0, "write": 0.0, "peak_rss_mb": 0.0,
                                       "cpu": 0.0})
        mine["total"] += max(p["last"] for p in parts) - min(p["first"] for p in parts)
        for key in ("load", "body", "write", "cpu"):
            mine[key] += sum(p[key] for p in parts)
        mine["peak_rss_mb"] = max(mine["peak_rss_mb"], *(p["peak_rss_mb"] for p in parts))


def run_preset(name: str, reference_devices: int | None, seed: int | None = None, parallel: int = 0) -> dict:
    """Child process: the whole graph for one preset; returns the figures as a dict."""
    tmp = Path(tempfile.mkdtemp(prefix=f"itap-bench-{name}-"))
    sim = dict(PRESETS[name])
    if seed is not None:
        sim["seed"] = seed
    config = {"simulation": sim, "features": {"windows": ["1m", "5m", "30m"]}}  # the simulated fleet's, as in
    if name in TRAINING:  # configs/itap.yaml
        config["model"] = {"training": TRAINING[name]}
    if parallel:
        config["storage"] = {"mode": "parquet", "root": str(tmp / "parquet")}
        config["execution"] = {"executor": "multiprocess", "processes": parallel}
        (tmp / "dagster_home").mkdir()
        shutil.copy(ROOT / "configs" / "dagster.yaml", tmp / "dagster_home" / "dagster.yaml")
        os.environ["DAGSTER_HOME"] = str(tmp / "dagster_home")  # the run processes open this instance
        reference_devices = 0
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
    if parallel:
        from itap_assets.parallel_runs import run_parallel

        with dg.DagsterInstance.get() as instance:
            register_devices(instance, sorted({dev for _, dev in pairs}))
            for job, wall, run_ids in run_parallel(instance, pairs, parallel):
                inside = [step_seconds(instance, run_id, resources) for run_id in run_ids]
                add_steps(steps, inside)
                add_steps(stage := {}, inside)
                runs.append({"job": job, "wall_s": wall, "steps_s": sum(p["total"] for p in stage.values())})
    with dg.DagsterInstance.ephemeral() as instance:
        register_devices(instance, sorted({dev for _, dev in pairs}))
        for job, tags in ([] if parallel else run_plan(pairs, list(instance.get_dynamic_partitions("device")))):
            t0 = time.perf_counter()
            result = execute(instance, job.name, tags)  # as a launched run, like `make demo`
            wall = time.perf_counter() - t0
            if not result.success:
                raise SystemExit(f"{name}: run of {job.name} failed")
            inside = step_seconds(instance, result.run_id, resources)
            add_steps(steps, [inside])
            runs.append({"job": job.name, "wall_s": wall, "steps_s": sum(p["total"] for p in inside.values())})
    wall = time.perf_counter() - started
    rows = _rows(tmp / "itap.duckdb")
    figures = {
        "preset": name,
        "mode": f"parquet x{parallel}" if parallel else "duckdb",
        "rows": rows,
        "partitions": len(pairs),
        "runs": len(runs),
        "wall_s": wall,
        "rows_per_s": rows / wall,
        "steps": steps,
        "run_walls": runs,
        "overhead_s": sum(r["wall_s"] - r["steps_s"] for r in runs),
        # the pipeline's, every process of it: measured before the reference runs in this process
        "peak_rss_mb": max(peak_rss_mb(), resources.peak()),
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
    from itap_assets import storage  # either mode: the DuckDB file or the Parquet mode's catalog

    with storage.connect(db, read_only=True) as con:
        return con.execute("SELECT count(*) FROM raw_telemetry").fetchall()[0][0]


def _headline(db: Path) -> dict[str, float | None]:
    from itap_assets import storage

    with storage.connect(db, read_only=True) as con:
        rows = con.execute("SELECT metric, value FROM detection_metrics WHERE scope = 'all'").fetchall()
    return dict(rows)


def child(name: str, reference_devices: int | None, seed: int | None = None, parallel: int = 0) -> dict:
    args = [sys.executable, __file__, "--child", name]
    if reference_devices is not None:
        args += ["--reference-devices", str(reference_devices)]
    if seed is not None:
        args += ["--seed", str(seed)]
    if parallel:
        args += ["--parallel", str(parallel)]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise SystemExit(f"preset {name} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(f: dict) -> None:
    print(f"\n== preset {f['preset']} ({f['mode']}): {f['rows']:,} rows, {f['partitions']} partitions, "
          f"{f['runs']} runs ==")
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
    if f["mode"] == "duckdb":
        print(f"bench {f['preset']}: rows={f['rows']} wall_s={f['wall_s']:.1f} rows_per_s={f['rows_per_s']:.0f} "
              f"peak_rss_mb={f['peak_rss_mb']:.0f} overhead_pct={f['overhead_pct']:.1f} vs_reference={vs}x")


def compare(duck: dict, par: dict) -> None:
    """The Parquet mode's line beside the DuckDB mode's of the same preset: each step's wall time and speed-up,
    the writer steps together, end to end."""
    print(f"\n== preset {par['preset']}: {par['mode']} against duckdb ==")
    print(f"  {'step':<28} {'duckdb':>8} {par['mode']:>11} {'speed-up':>9}")
    for step, s in sorted(duck["steps"].items(), key=lambda kv: -kv[1]["total"]):
        other = par["steps"].get(step, {}).get("total")
        if other:
            print(f"  {step:<28} {s['total']:8.1f} s {other:9.1f} s {s['total'] / other:8.2f}x")
    writers = [(duck["steps"][s]["total"], par["steps"][s]["total"]) for s in WRITER_STEPS
               if s in duck["steps"] and s in par["steps"]]
    d, p = sum(a for a, _ in writers), sum(b for _, b in writers)
    print(f"  {'writer steps':<28} {d:8.1f} s {p:9.1f} s {d / p:8.2f}x")
    print(f"  {'end to end':<28} {duck['wall_s']:8.1f} s {par['wall_s']:9.1f} s {duck['wall_s'] / par['wall_s']:8.2f}x")
    print(f"bench {par['preset']} {par['mode']}: rows={par['rows']} wall_s={par['wall_s']:.1f} "
          f"rows_per_s={par['rows_per_s']:.0f} peak_rss_mb={par['peak_rss_mb']:.0f} "
          f"writer_steps_vs_duckdb={d / p:.2f}x vs_duckdb={duck['wall_s'] / par['wall_s']:.2f}x")


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
    parser.add_argument("--parallel", type=int, default=0,
                        help="the Parquet mode with N processes (docs/deployment.md); `all` adds large and month with 2")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_preset(args.child, args.reference_devices, args.seed, args.parallel)))
        return
    if args.preset == "quality":
        quality(args.seeds)
        return
    if args.preset != "all":
        report(child(args.preset, args.reference_devices, parallel=args.parallel))
        return
    duck = {}
    for name in PRESETS:
        duck[name] = child(name, args.reference_devices)
        report(duck[name])
    for name in PARALLEL_PRESETS:
        par = child(name, 0, parallel=args.parallel or PARALLEL)
        report(par)
        compare(duck[name], par)
    quality(args.seeds)


if __name__ == "__main__":
    main()
