"""Regenerate the sample exports used by configs/examples/files.yaml (deterministic: same bytes every run).

    .venv/bin/python configs/examples/make_samples.py

rigs/rig_A1.csv, rigs/rig_B2.csv — a test-rig controller export as a German plant would get it: semicolon
separated, decimal comma, local wall-clock time in Europe/Berlin (`28.03.2026 00:00:00`), German column names
`Zeit;Temperatur;Schwingung;Strom;Zustand;Stoerung`, 1-minute samples from 28.03.2026 00:00 to 30.03.2026 23:59
local time. The night of 29.03.2026 the clocks jump from 02:00 to 03:00, so the files have no 02:xx rows that day
(23 hours, 1380 rows). `Stoerung` is 1 while a labelled fault is active. Empty cells are missing samples.
rig_B2.csv is written the way Excel saves "CSV UTF-8": a byte-order mark and CRLF line endings; it also has one
cell a technician typed by hand (`Temperatur` = "Sensorfehler"), which validation quarantines as `bad_type`.

historian/export.parquet — a plant-historian export: one file, several devices in a `device` column, UTC
timestamps (tz-aware Parquet timestamps), English column names, an `alarm` column holding the fault name or NULL.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import polars as pl

from itap_assets.core.simulator import simulate_fleet
from itap_assets.settings import SimulationSettings

HERE = Path(__file__).resolve().parent
RIGS = {"DEV-0001": "A1", "DEV-0002": "B2"}
LOCAL_TZ = "Europe/Berlin"
# Local 28.03.2026 00:00 (CET, UTC+1) … 30.03.2026 23:59 (CEST, UTC+2), in UTC:
RIG_START, RIG_END = datetime(2026, 3, 27, 23, 0), datetime(2026, 3, 30, 22, 0)
TYPO = ("B2", "29.03.2026 14:17:00", "Sensorfehler")  # rig, local time, what was typed into Temperatur


def _decimal_comma(col: str, digits: int) -> pl.Expr:
    return pl.col(col).round(digits).cast(pl.String).str.replace(".", ",", literal=True).fill_null("")


def rig_frames() -> dict[str, pl.DataFrame]:
    sim = SimulationSettings(devices=2, start=date(2026, 3, 27), days=4, sample_interval_s=60, seed=3,
                             healthy_days=2, fault_rate=2.0)
    fleet = simulate_fleet(sim).filter(pl.col("ts").is_between(RIG_START, RIG_END, closed="left"))
    frames = {}
    for device, rig in RIGS.items():
        frames[rig] = fleet.filter(pl.col("device_id") == device).select(
            pl.col("ts").dt.replace_time_zone("UTC").dt.convert_time_zone(LOCAL_TZ)
            .dt.strftime("%d.%m.%Y %H:%M:%S").alias("Zeit"),
            _decimal_comma("temp_c", 2).alias("Temperatur"),
            _decimal_comma("vibration_g", 3).alias("Schwingung"),
            _decimal_comma("current_a", 2).alias("Strom"),
            pl.col("state").alias("Zustand"),
            pl.col("fault_tag").is_not_null().cast(pl.Int8).cast(pl.String).alias("Stoerung"),
        )
    rig, when, typed = TYPO
    frames[rig] = frames[rig].with_columns(
        pl.when(pl.col("Zeit") == when).then(pl.lit(typed)).otherwise(pl.col("Temperatur")).alias("Temperatur")
    )
    return frames


def write_rig(frame: pl.DataFrame, path: Path, *, excel: bool) -> None:
    newline = "\r\n" if excel else "\n"
    lines = [";".join(frame.columns)] + [";".join(row) for row in frame.iter_rows()]
    data = newline.join(lines) + newline
    path.write_bytes((b"\xef\xbb\xbf" if excel else b"") + data.encode("utf-8"))


def historian_frame() -> pl.DataFrame:
    sim = SimulationSettings(devices=2, start=date(2026, 3, 28), days=2, sample_interval_s=60, seed=11,
                             healthy_days=0, fault_rate=4.0)
    fleet = simulate_fleet(sim).filter(pl.col("ts").is_between(datetime(2026, 3, 28, 12), datetime(2026, 3, 29, 12),
                                                                closed="left"))
    return fleet.select(
        pl.col("ts").dt.replace_time_zone("UTC").alias("timestamp"),
        pl.col("device_id").replace_strict({"DEV-0001": "PUMP-07", "DEV-0002": "PUMP-08"}).alias("device"),
        pl.col("state").alias("mode"),
        pl.col("temp_c").round(2).alias("temperature_degC"),
        pl.col("vibration_g").round(3).alias("vibration_rms_g"),
        pl.col("voltage_v").round(1).alias("voltage_V"),
        pl.col("current_a").round(2).alias("current_A"),
        pl.col("rpm").round(0).alias("speed_rpm"),
        pl.col("fault_tag").alias("alarm"),
    )


def main() -> None:
    (HERE / "rigs").mkdir(exist_ok=True)
    for rig, frame in rig_frames().items():
        write_rig(frame, HERE / "rigs" / f"rig_{rig}.csv", excel=rig == "B2")
    (HERE / "historian").mkdir(exist_ok=True)
    historian_frame().write_parquet(HERE / "historian" / "export.parquet", compression="zstd", statistics=False)
    for path in sorted([*HERE.glob("rigs/*"), *HERE.glob("historian/*")]):
        print(f"{path.relative_to(HERE)}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
