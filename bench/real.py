"""Real-data benchmark: TEP and NAB through the whole Dagster graph, exactly as `make demo` runs it.

    python bench/real.py [tep|nab|all] [--files N] [--exclude STEM ...] [--keep]     (default: all)
    python bench/real.py tep|nab --reuse DIR      (the figures again, from a directory kept with --keep)

Each data set runs in its own child process on a fresh DuckDB file and a fresh DAGSTER_HOME (configs/dagster.yaml
copied in), with ITAP_CONFIG = the shipped configs/examples/<name>.yaml whose ingestion.path alone is replaced by
the absolute path of ../shared/datasets/<name> — through `itap_assets.demo` (data_partitions, register_devices,
run_pipeline). Every figure is then computed here from the output tables (raw_telemetry for row positions,
validated, quarantine, scores, v_alerts) and never fed back into the pipeline. Incidents = rows of v_alerts with
suppressed_by NULL (active: neither inhibited, silenced nor below min_events).

TEP (22 files; rows are 1-based positions in the file, ordered by ts; baseline rows 1-350, normal hold-out
351-500, faulty rows 501-980): per fault, ITAP's point detection rate (share of scores.is_anomaly among rows
501-980; a row without a score counts as not flagged), ITAP's false-alarm rate (rows 351-500), whether an incident
of the device is firing at some time in [fault start, fault start + 1 h] (fault start = ts of row 501; firing =
start_ts <= fault start + 1 h and end_ts >= fault start), the delay of the first incident starting at or after the
fault start, and the incidents starting inside rows 351-500 (false alerts); side by side, textbook PCA on the same
rows (bench/real_scoring.py). Also: the detection rate after the first hour (rows 521-980) and whether an incident
*starts* within the hour (rows 1-500 and 501-980 come from two simulation runs: the splice itself can be flagged).
Summary: `real tep: far=… mean_detection=… alerted_1h=…/18 false_alerts=… …`.

NAB (57 files; labels.json used only here): per file, windows detected (an incident starts inside a window),
incident starts outside every window after the probationary period, and the NAB standard-profile score
(bench/real_scoring.py; detections = the row nearest to each incident start; also, labelled as such, the score
when detections are the first flagged point of each run of scores.is_anomaly); a detection on a row of the
model's training window (scores.in_training) counts for nothing. --files N / --exclude STEM run a
subset (the summary says how many files were scored). Summary: `real nab: score=… windows=…/… fp_alerts=…`.
Wall time per data set; a failed run is printed with its error and the partitions it covered.
Right after the data sets were copied, the bench first waits until their CSVs without a final line break are
older than ingestion.unterminated_settle_seconds (300 s): until then ingestion holds them back as possibly still
being written (7 NAB series end that way).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from real_scoring import STANDARD_PROFILE, fit_pca_monitor, nab_score, nearest_rows, normalised, \
    probationary_length, rising_edges, window_rows  # noqa: E402

DATASETS = (ROOT.parent / "shared" / "datasets").resolve()
GLOBS = {"tep": DATASETS / "tep" / "tep_*.csv", "nab": DATASETS / "nab" / "**" / "*.csv"}
TEP_BASELINE, TEP_HOLDOUT, TEP_FAULT = (1, 350), (351, 500), (501, 980)
TEP_AFTER_1H = (521, 980)  # the faulty rows after the first hour (20 rows of 3 minutes)
TEP_UNDETECTABLE = {3, 9, 15}
NAB_PUBLISHED = "published (58 files): ARTime 74.9, Numenta HTM 70.5, KNN CAD 58.0, Windowed Gaussian 39.6"


# --------------------------------------------------------------------------------------------------- running


def nab_files(limit: int | None = None, exclude: tuple[str, ...] = ()) -> list[Path]:
    files = [f for f in sorted((DATASETS / "nab").glob("*/*.csv")) if f.stem not in exclude]
    return files[:limit] if limit else files


def write_config(name: str, work: Path, nab_limit: int | None, exclude: tuple[str, ...]) -> Path:
    """The shipped config with only ingestion.path replaced by the data set's absolute path (or files)."""
    import yaml

    config = yaml.safe_load((ROOT / "configs" / "examples" / f"{name}.yaml").read_text())
    if name == "nab" and (nab_limit or exclude):
        config["ingestion"]["path"] = [str(f) for f in nab_files(nab_limit, exclude)]
    else:
        config["ingestion"]["path"] = str(GLOBS[name])
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def wait_for_settled_files(name: str) -> None:
    """A CSV without a final line break is read once it is older than ingestion.unterminated_settle_seconds (it may
    still be being written); 7 of the NAB series end that way, so right after the data set was copied the bench
    would measure without them. Wait until they are settled, as a user running a few minutes later would."""
    from itap_assets.settings import IngestionSettings

    settle = IngestionSettings.model_fields["unterminated_settle_seconds"].default
    files = [Path(p) for p in glob.glob(str(GLOBS[name]), recursive=True)]
    open_ended = []
    for path in files:
        with path.open("rb") as fh:
            fh.seek(max(path.stat().st_size - 1, 0))
            if fh.read(1) not in (b"\n", b"\r"):
                open_ended.append(path)
    wait = max((settle - (time.time() - p.stat().st_mtime) for p in open_ended), default=0.0)
    if wait > 0:
        print(f"  note: {len(open_ended)} {name} files end without a line break and were written less than "
              f"{settle:.0f} s ago (ingestion.unterminated_settle_seconds): waiting {wait:.0f} s for them", flush=True)
        time.sleep(wait + 1.0)


def run_dataset(name: str, nab_limit: int | None, exclude: tuple[str, ...]) -> dict:
    """Run the whole graph for one data set in a child process; the figures' inputs stay in `work`."""
    wait_for_settled_files(name)
    work = Path(tempfile.mkdtemp(prefix=f"itap-real-{name}-"))
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "configs" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DAGSTER_HOME": str(home),
           "ITAP_CONFIG": str(write_config(name, work, nab_limit, exclude)), "ITAP_DB_PATH": str(work / "itap.duckdb")}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", str(work)], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - started
    report = work / "child.json"
    result = json.loads(report.read_text()) if report.exists() else {}
    if out.returncode != 0 and not result.get("error"):
        result["error"] = f"child exited with {out.returncode}: {out.stderr[-3000:]}"
    result["wall_s"] = wall
    report.write_text(json.dumps(result))  # with the wall time, for --reuse
    return {**result, "work": work}


def reuse(work: Path) -> dict:
    """The figures of an earlier run kept with --keep (no pipeline run)."""
    return {**json.loads((work / "child.json").read_text()), "work": work}


def child(work: Path) -> None:
    """In the child: the `make demo` code path against the environment's config, database and instance."""
    import dagster as dg

    from itap_assets.demo import data_partitions, register_devices, run_pipeline
    from itap_assets.settings import load_settings

    report: dict = {"error": None}
    try:
        pairs = data_partitions(load_settings())
        report["partitions"] = len(pairs)
        report["devices"] = len({dev for _, dev in pairs})
        with dg.DagsterInstance.get() as instance:
            register_devices(instance, sorted({dev for _, dev in pairs}))
            try:
                report["runs"] = run_pipeline(instance, pairs)
            except SystemExit as exc:
                report["error"] = f"{exc}\n{failed_steps(instance)}"
    except Exception as exc:  # an ingestion error before any run, say
        report["error"] = f"{type(exc).__name__}: {exc}"
    (work / "child.json").write_text(json.dumps(report))


def failed_steps(instance) -> str:
    """The errors of failed runs: step failures and failed blocking checks, from the event log."""
    import dagster as dg

    lines = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])):
        first, last = (run.tags.get(f"dagster/asset_partition_range_{end}") for end in ("start", "end"))
        lines.append(f"  failed run {run.job_name} over partitions {first} … {last}:")
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type_value == "STEP_FAILURE":
                error = event.event_specific_data.error
                lines.append(f"    step {event.step_key}: {error.message.strip()}"
                             + (f" (cause: {error.cause.message.strip()})" if error.cause else ""))
            elif event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
                check = event.event_specific_data
                lines.append(f"    check {check.check_name} failed: {check.description or ''}")
    return "\n".join(lines) or "  (no step failure in the event log)"


# --------------------------------------------------------------------------------------------------- reading


def query(work: Path, sql: str):
    import duckdb

    with duckdb.connect(str(work / "itap.duckdb"), read_only=True) as con:
        return con.sql(sql).pl()


def tables(work: Path) -> set[str]:
    return set(query(work, "SELECT table_name FROM information_schema.tables")["table_name"])


def incidents(work: Path):
    import polars as pl

    if "v_alerts" not in tables(work):
        return pl.DataFrame(schema={"device_id": pl.String, "start_ts": pl.Datetime("us"), "end_ts": pl.Datetime("us")})
    return query(work, "SELECT device_id, start_ts, end_ts FROM v_alerts WHERE suppressed_by IS NULL")


def positioned(work: Path, columns: str = ""):
    """raw_telemetry's rows with their 1-based position per device (ordered by ts), joined to validated and
    scores (NULL where a row was quarantined or has no score)."""
    return query(work, f"""
        WITH r AS (SELECT device_id, ts, row_number() OVER (PARTITION BY device_id ORDER BY ts) AS pos
                   FROM raw_telemetry)
        SELECT r.device_id, r.ts, r.pos, s.is_anomaly, s.in_training {columns}
        FROM r LEFT JOIN scores s USING (device_id, ts) LEFT JOIN validated v USING (device_id, ts)
        ORDER BY r.device_id, r.pos""")


def quality_line(work: Path) -> str:
    """Rows in / validated / quarantined (by reason): what the pipeline did with the files."""
    rows = query(work, "SELECT (SELECT count(*) FROM raw_telemetry) AS raw, (SELECT count(*) FROM validated) AS ok,"
                       " (SELECT count(*) FROM quarantine) AS q").row(0)
    reasons = query(work, "SELECT reason, count(*) AS n FROM quarantine GROUP BY reason ORDER BY n DESC")
    detail = ", ".join(f"{r} {n}" for r, n in reasons.iter_rows())
    return f"  rows: {rows[0]:,} ingested, {rows[1]:,} validated, {rows[2]:,} quarantined" + (
        f" ({detail})" if detail else "")


def header(name: str, result: dict) -> bool:
    per_job: dict[str, list[float]] = {}
    for job, seconds in result.get("runs", []):
        per_job.setdefault(job, []).append(seconds)
    runs = ", ".join(f"{job} {len(s)} run{'s' if len(s) > 1 else ''} {sum(s):.1f} s" for job, s in per_job.items())
    print(f"\n== real {name}: {result.get('devices', '?')} devices, {result.get('partitions', '?')} partitions, "
          f"pipeline wall {result.get('wall_s', float('nan')):.1f} s ==")
    if runs:
        print(f"  runs: {runs}")
    if result.get("error"):
        print(f"  FAILED: {result['error']}")
        return False
    print(quality_line(result["work"]))
    return True


# --------------------------------------------------------------------------------------------------- TEP


def share(flags: np.ndarray, pos: np.ndarray, span: tuple[int, int]) -> float:
    inside = (pos >= span[0]) & (pos <= span[1])
    return float(flags[inside].mean()) if inside.any() else float("nan")


def tep_device(device: str, frame, sensors: list[str], incidents) -> dict:
    """One file's figures: ITAP and PCA flags by row position, and its incidents around the hold-out and fault."""
    import polars as pl

    pos = frame["pos"].to_numpy()
    at = dict(zip(pos.tolist(), frame["ts"].to_list()))  # position -> ts
    itap = frame["is_anomaly"].fill_null(False).to_numpy()
    x = frame.select(sensors).to_numpy().astype(float)
    complete = ~np.isnan(x).any(axis=1)
    baseline = (pos >= TEP_BASELINE[0]) & (pos <= TEP_BASELINE[1]) & complete
    pca = np.zeros(len(pos), dtype=bool)
    pca[complete] = fit_pca_monitor(x[baseline]).flags(x[complete])
    hold = (pos >= TEP_HOLDOUT[0]) & (pos <= TEP_HOLDOUT[1])
    mine = incidents.filter(pl.col("device_id") == device)
    # row-to-row step (mean |Δz|, z on the baseline) from the last normal row to the first faulty one, against
    # the steps between normal rows: rows 501-980 come from another simulation run than rows 1-500
    step = np.nanmean(np.abs(np.diff((x - x[baseline].mean(axis=0)) / x[baseline].std(axis=0, ddof=1), axis=0)),
                      axis=1)
    out = {"device": device, "itap_hold": itap[hold], "pca_hold": pca[hold],
           "itap_far": share(itap, pos, TEP_HOLDOUT), "pca_far": share(pca, pos, TEP_HOLDOUT),
           "false_alerts": mine.filter(pl.col("start_ts").is_between(at[TEP_HOLDOUT[0]], at[TEP_HOLDOUT[1]])).height,
           "missing_scores": int(frame["is_anomaly"].is_null().sum()),
           "hold_in_training": int(frame["in_training"].fill_null(False).to_numpy()[hold].sum())}
    if device == "tep_normal":
        return out
    t0 = at[TEP_FAULT[0]]
    t1 = t0 + timedelta(hours=1)
    first_new = mine.filter(pl.col("start_ts") >= t0)["start_ts"].min()
    splice = int(np.flatnonzero(pos == TEP_FAULT[0])[0]) - 1  # step index from row 500 to row 501
    return {**out, "fault": int(device.removeprefix("tep_f")),
            "splice_rank": float(np.mean(step[:splice] < step[splice])),
            "itap_det": share(itap, pos, TEP_FAULT), "pca_det": share(pca, pos, TEP_FAULT),
            "itap_after_1h": share(itap, pos, TEP_AFTER_1H),
            "alerted": mine.filter((pl.col("start_ts") <= t1) & (pl.col("end_ts") >= t0)).height > 0,
            "new_1h": first_new is not None and first_new <= t1,
            "delay_min": None if first_new is None else (first_new - t0).total_seconds() / 60}


def tep_table(files: list[dict]) -> None:
    print(f"  {'fault':<7}| {'ITAP detection':>14} | {'PCA detection':>13} | {'ITAP alerted ≤1h':>16} | "
          f"{'1st new incident':>16} | {'ITAP det. >1 h':>14} | {'ITAP FAR':>8} | {'PCA FAR':>7} | "
          f"{'hold-out incidents':>18}")
    for f in sorted(files, key=lambda f: f.get("fault", 99)):
        if "fault" in f:
            label = f"{f['fault']:02d}" + (" (*)" if f["fault"] in TEP_UNDETECTABLE else "")
            delay = "none" if f["delay_min"] is None else f"+{f['delay_min']:.0f} min"
            cells = (f"{f['itap_det']:14.3f} | {f['pca_det']:13.3f} | {'yes' if f['alerted'] else 'no':>16} | "
                     f"{delay:>16} | {f['itap_after_1h']:14.3f}")
        else:
            label, cells = "normal", f"{'–':>14} | {'–':>13} | {'–':>16} | {'–':>16} | {'–':>14}"
        print(f"  {label:<7}| {cells} | {f['itap_far']:8.3f} | {f['pca_far']:7.3f} | {f['false_alerts']:18d}")
    print("  (*) faults 3, 9, 15: nearly invisible in these measurements, left out of the means")
    faults = [f for f in files if "fault" in f]
    rank = min(f["splice_rank"] for f in faults)
    print("  ITAP det. >1 h = share flagged among rows 521-980. Rows 1-500 and 501-980 come from two separate "
          f"simulation runs (d00, dNN): the step from row 500 to 501 is larger than {rank:.1%} of the steps between "
          "normal rows in every file (mean |Δz|), also for the invisible faults, so flags and incidents in the "
          "first hour may answer the splice rather than the fault (compare faults 3, 9, 15)")
    missing = sum(f["missing_scores"] for f in files)
    if missing:
        print(f"  note: {missing} rows have no score (quarantined or not scored) and count as not flagged")
    in_training = sorted({f["hold_in_training"] for f in files})
    if in_training != [0]:
        print(f"  note: {'/'.join(map(str, in_training))} of the 150 hold-out rows 351-500 lie in the model's "
              "training window (scores.in_training: warm-up rows are skipped, so the window ends later); they are "
              "counted by position all the same")


def tep_report(result: dict) -> dict:
    work = result["work"]
    sensors = [c for c in query(work, "SELECT * FROM validated LIMIT 0").columns if c.startswith(("xmeas_", "xmv_"))]
    rows = positioned(work, ", " + ", ".join(f'v."{c}"' for c in sensors))
    alerts = incidents(work)
    files = [tep_device(device, frame, sensors, alerts)
             for (device,), frame in rows.group_by("device_id", maintain_order=True)]
    tep_table(files)
    faults = [f for f in files if "fault" in f]
    detectable = [f for f in faults if f["fault"] not in TEP_UNDETECTABLE]
    s = {
        "far": float(np.concatenate([f["itap_hold"] for f in files]).mean()),
        "pca_far": float(np.concatenate([f["pca_hold"] for f in files]).mean()),
        "mean_detection": float(np.mean([f["itap_det"] for f in detectable])),
        "mean_after_1h": float(np.mean([f["itap_after_1h"] for f in detectable])),
        "invisible_alerted": sum(f["alerted"] for f in faults if f["fault"] in TEP_UNDETECTABLE),
        "pca_mean_detection": float(np.mean([f["pca_det"] for f in detectable])),
        "alerted": sum(f["alerted"] for f in detectable), "new": sum(f["new_1h"] for f in detectable),
        "detectable": len(detectable), "false_alerts": sum(f["false_alerts"] for f in files),
        "false_alerts_normal": sum(f["false_alerts"] for f in files if f["device"] == "tep_normal"),
    }
    print(f"  ITAP: false-alarm rate {s['far']:.3f} (rows 351-500 of all {len(files)} files), mean detection "
          f"{s['mean_detection']:.3f} over the {len(detectable)} detectable faults; alerted within 1 h (an incident "
          f"firing in [fault start, +1 h]): {s['alerted']}/{len(detectable)} "
          f"({sum(f['alerted'] for f in faults)}/{len(faults)} of all faults), with an incident starting in that hour:"
          f" {s['new']}/{len(detectable)} (faults 3, 9, 15: {s['invisible_alerted']}/3 alerted); mean detection "
          f"after the first hour {s['mean_after_1h']:.3f}; incidents starting in the hold-out: {s['false_alerts']} "
          f"over all files, {s['false_alerts_normal']} for tep_normal")
    print(f"  textbook PCA (9 PCs, T² and Q at 99 %): false-alarm rate {s['pca_far']:.3f}, mean detection "
          f"{s['pca_mean_detection']:.3f} (datasets README: 0.013, 0.80)")
    return s


# --------------------------------------------------------------------------------------------------- NAB


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def shown(s) -> str:
    """A file's normalised NAB score, or its raw score when it has no window (normalising needs one)."""
    return fmt(s.normalised) if s.normalised is not None else f"raw {s.raw:.2f}"


def nab_inputs(work: Path) -> list[Path]:
    """The NAB files the run's config asked for (all 57, or the first N of --files)."""
    import yaml

    path = yaml.safe_load((work / "nab.yaml").read_text())["ingestion"]["path"]
    return [Path(p) for p in path] if isinstance(path, list) else nab_files()


def nab_file(frame, windows: list, starts: np.ndarray) -> dict:
    """One file's NAB scores: detections = the rows nearest to the incident starts, and (labelled as such) the
    first flagged row of each run of scores.is_anomaly."""
    import polars as pl

    ts = frame["ts"].to_numpy()
    wins = window_rows(ts, [(np.datetime64(a), np.datetime64(b)) for a, b in windows])
    scored = frame.filter(pl.col("is_anomaly").is_not_null()).unique("ts", keep="first", maintain_order=True)
    edges = scored["ts"].to_numpy()[rising_edges(scored["is_anomaly"].to_numpy())]
    # training rows are left out of every metric: a detection on a row the model was fitted on counts for
    # nothing (a window there can only be missed)
    training = frame["in_training"].fill_null(False).to_numpy()

    def fresh(rows: np.ndarray) -> np.ndarray:
        rows = rows[(rows >= 0) & (rows < len(ts))]
        return rows[~training[rows]]

    return {"rows": len(ts), "windows": len(wins), "edges": len(edges),
            "by_alerts": nab_score(len(ts), wins, fresh(nearest_rows(ts, starts))),
            "by_edges": nab_score(len(ts), wins, fresh(np.searchsorted(ts, edges, side="left")))}


def nab_report(result: dict) -> dict:
    import polars as pl

    work = result["work"]
    labels = json.loads((DATASETS / "nab" / "labels.json").read_text())
    rows, alerts = positioned(work), incidents(work)
    print(f"  {'file':<58} {'rows':>6} {'prob':>4} {'win':>3} {'det':>3} {'FP':>4} {'NAB (alerts)':>12} "
          f"{'NAB (edges)':>11} {'edges':>6}")
    files, missing = [], []
    for path in nab_inputs(work):
        rel = path.relative_to(DATASETS / "nab").as_posix()
        frame = rows.filter(pl.col("device_id") == path.stem)
        if frame.height == 0:
            missing.append(rel)
            print(f"  {rel:<58} NOT INGESTED (no rows of device {path.stem})")
            continue
        f = nab_file(frame, labels[rel], alerts.filter(pl.col("device_id") == path.stem)["start_ts"].to_numpy())
        files.append(f)
        a, e = f["by_alerts"], f["by_edges"]
        print(f"  {rel:<58} {f['rows']:6d} {probationary_length(f['rows']):4d} {f['windows']:3d} {a.detected:3d} "
              f"{a.false_positives:4d} {shown(a):>12} {shown(e):>11} {f['edges']:6d}")
    totals = {key: [sum(getattr(f[key], part) for f in files) for part in ("raw", "null", "perfect")]
              for key in ("by_alerts", "by_edges")}
    score, edges = normalised(*totals["by_alerts"]), normalised(*totals["by_edges"])
    windows = sum(f["by_alerts"].windows for f in files)
    detected = sum(f["by_alerts"].detected for f in files)
    fp = sum(f["by_alerts"].false_positives for f in files)
    print("  columns: win = labelled windows, det = windows in which an incident starts, FP = incident starts outside"
          " every window after the probationary period (prob rows), edges = runs of flagged points; NAB = standard"
          " profile normalised per file (a file without windows shows its raw score)")
    print(f"  NAB standard profile, {len(files)} files: {fmt(score)} with detections = incident starts (raw "
          f"{totals['by_alerts'][0]:.2f}, null {totals['by_alerts'][1]:.1f}, perfect {totals['by_alerts'][2]:.1f}); "
          f"{fmt(edges)} with detections = first flagged point of each run of is_anomaly (raw "
          f"{totals['by_edges'][0]:.2f}); windows detected {detected}/{windows}, incident starts outside every "
          f"window {fp}")
    print(f"  {NAB_PUBLISHED}; the data set has 57 of NAB's 58 files "
          "(realKnownCause/machine_temperature_system_failure.csv is missing)")
    print(f"  profile: A_TP {STANDARD_PROFILE['tp']}, A_FP {STANDARD_PROFILE['fp']}, A_FN {STANDARD_PROFILE['fn']}")
    if missing:
        print(f"  FAILED files (no rows ingested): {', '.join(missing)}")
    return {"score": score, "edges_score": edges, "windows": windows, "detected": detected, "fp": fp,
            "files": len(files), "missing": missing}


# --------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", choices=["tep", "nab", "all"], default="all")
    parser.add_argument("--files", type=int, default=None, help="NAB: only the first N files (sorted by path)")
    parser.add_argument("--exclude", nargs="+", default=[], metavar="STEM",
                        help="NAB: leave these files out (by file stem = device id), e.g. to measure the others "
                             "while one fails")
    parser.add_argument("--keep", action="store_true", help="keep each data set's database and instance")
    parser.add_argument("--reuse", type=Path, metavar="DIR",
                        help="recompute the figures of one data set from a directory kept with --keep")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reuse and args.dataset == "all":
        parser.error("--reuse needs the data set the directory holds: tep or nab")
    if args.child:
        child(args.child)
        return
    summaries, failed = [], []
    for name in ("tep", "nab") if args.dataset == "all" else (args.dataset,):
        result = reuse(args.reuse) if args.reuse else run_dataset(name, args.files, tuple(args.exclude))
        keep = args.keep or args.reuse is not None
        if not header(name, result):
            failed.append(name)
            summaries.append(f"real {name}: FAILED wall_s={result.get('wall_s', float('nan')):.1f}")
            print(f"  database and instance kept in {result['work']}")
            continue
        started = time.perf_counter()
        if name == "tep":
            f = tep_report(result)
            line = (f"real tep: far={f['far']:.3f} mean_detection={f['mean_detection']:.3f} "
                    f"alerted_1h={f['alerted']}/{f['detectable']} false_alerts={f['false_alerts']} "
                    f"new_incident_1h={f['new']}/{f['detectable']} "
                    f"false_alerts_normal={f['false_alerts_normal']} mean_detection_after_1h={f['mean_after_1h']:.3f} "
                    f"pca_far={f['pca_far']:.3f} "
                    f"pca_mean_detection={f['pca_mean_detection']:.3f}")
        else:
            f = nab_report(result)
            line = (f"real nab: score={fmt(f['score'])} windows={f['detected']}/{f['windows']} fp_alerts={f['fp']} "
                    f"edges_score={fmt(f['edges_score'])} files={f['files']}")
            if f["missing"]:
                failed.append(name)
        print(f"  wall time: pipeline {result.get('wall_s', float('nan')):.1f} s, figures "
              f"{time.perf_counter() - started:.1f} s"
              + (f"; kept in {result['work']}" if keep else ""))
        summaries.append(f"{line} wall_s={result.get('wall_s', float('nan')):.1f}")
        if not keep:
            shutil.rmtree(result["work"], ignore_errors=True)
    print()
    for line in summaries:
        print(line)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
