"""core.ingest: CSV/Parquet exports with a column mapping -> the canonical raw telemetry frame."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from itap_assets.core.ingest import (
    IngestError,
    available_partitions,
    discover_files,
    read_file,
    read_telemetry,
)
from itap_assets.core.validation import split_telemetry
from itap_assets.settings import PROJECT_ROOT, IngestionSettings, SensorSpec, load_settings

CANONICAL = ["ts", "day", "device_id", "state"]
HEADER = "Zeit;Temperatur;Schwingung;Strom;Zustand;Stoerung"


def settings(**overrides) -> IngestionSettings:
    """German rig export defaults (like configs/examples/files.yaml); families are filled in for any sensors."""
    base = dict(
        path="rigs/*.csv", delimiter=";", decimal=",", timestamp_column="Zeit", timestamp_format="%d.%m.%Y %H:%M:%S",
        timezone="Europe/Berlin", device_from_path=r"rig_(?P<device>[A-Za-z0-9]+)\.csv$",
        columns={"Temperatur": "temp_c", "Schwingung": "vibration_g", "Strom": "current_a"},
        state_column="Zustand", label_column="Stoerung", label_mapping={"0": None, "1": "fault"},
        settle_seconds=0,  # the files are written just before they are read
    )
    base.update(overrides)
    if "device_column" in overrides and "device_from_path" not in overrides:
        base["device_from_path"] = None
    base.setdefault("families", {s: "Temperature" for s in base["columns"].values()})
    return IngestionSettings(**base)


def write(root: Path, rel: str, text: str | bytes, encoding: str = "utf-8") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return path


def rig(rows: list[str], header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def minutes(start: str, n: int, *, temp: str = "20,5", state: str = "RUN", label: str = "0") -> list[str]:
    """n one-minute rows from local time `start` ('dd.mm.yyyy HH:MM'), as the rig writes them."""
    t0 = datetime.strptime(start, "%d.%m.%Y %H:%M")
    times = [t0 + timedelta(minutes=i) for i in range(n)]
    return [f"{t:%d.%m.%Y %H:%M:%S};{temp};0,25;12,0;{state};{label}" for t in times]


def raises(match_parts: list[str], fn, *args, **kwargs) -> IngestError:
    with pytest.raises(IngestError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    for part in match_parts:
        assert part in message, f"{part!r} not in {message!r}"
    return info.value


# ----------------------------------------------------------------------------------------------- mapping options


def test_rig_csv_becomes_the_canonical_frame(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", rig([
        "28.03.2026 10:00:00;12,5;0,25;3;RUN;0",
        "28.03.2026 10:01:00;abc;;  ;IDLE;0",
        "28.03.2026 10:02:00;1.234,5;NaN;-0,5e1;MAINT;1",
    ]))
    frame = read_telemetry(settings(), tmp_path)
    assert frame.columns == [*CANONICAL, "temp_c", "vibration_g", "current_a", "fault_tag", "fault_id"]
    assert frame.schema["ts"] == pl.Datetime("us") and frame.schema["day"] == pl.Date
    assert all(frame.schema[s] == pl.String for s in ("temp_c", "vibration_g", "current_a"))
    # CET (UTC+1) on 28 March: local 10:00 is 09:00 UTC.
    assert frame["ts"].to_list() == [datetime(2026, 3, 28, 9, m) for m in range(3)]
    assert frame["device_id"].to_list() == ["A1"] * 3
    assert frame["state"].to_list() == ["RUN", "IDLE", "MAINT"]
    # Decimal comma -> point; anything that is not such a number keeps its text; empty/blank cells are NULL.
    assert frame["temp_c"].to_list() == ["12.5", "abc", "1.234,5"]
    assert frame["vibration_g"].to_list() == ["0.25", None, "NaN"]
    assert frame["current_a"].to_list() == ["3", None, "-0.5e1"]
    assert frame["fault_tag"].to_list() == [None, None, "fault"]


def test_bad_values_in_a_good_file_reach_validation_and_are_judged_there(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", rig([
        "28.03.2026 10:00:00;12,5;0,25;3;RUN;0",
        "28.03.2026 10:01:00;abc;0,25;3;RUN;0",
        "28.03.2026 10:02:00;;0,25;3;RUN;0",
        "28.03.2026 10:03:00;NaN;0,25;3;RUN;0",
        "28.03.2026 10:04:00;1e400;0,25;3;RUN;0",
    ]))
    frame = read_telemetry(settings(), tmp_path)
    sensors = {s: SensorSpec(family="Temperature", min=-1e9, max=1e9) for s in ("temp_c", "vibration_g", "current_a")}
    result = split_telemetry(frame, sensors, ("RUN",))
    assert result.validated.height + result.quarantine.height == 5
    assert result.validated["temp_c"].to_list() == [12.5, None]  # the empty cell is a missing sample, not an error
    assert result.reason_counts == {"bad_type": 1, "non_finite": 2}
    assert "temp_c=abc" in result.quarantine.filter(pl.col("reason") == "bad_type")["detail"][0]


def test_comma_delimiter_point_decimal_iso_timestamps_in_utc(tmp_path):
    write(tmp_path, "x/rig_Z.csv", "time,t1\n2026-03-28T10:00:00,1.5\n2026-03-28 10:01:00.250,2\n2026-03-28T10:02,x\n")
    ing = settings(path="x/*.csv", delimiter=",", decimal=".", timestamp_column="time", timestamp_format=None,
                   timezone="UTC", columns={"t1": "s"}, state_column=None, label_column=None, label_mapping=None)
    frame = read_telemetry(ing, tmp_path)
    assert frame["ts"].to_list() == [datetime(2026, 3, 28, 10, 0), datetime(2026, 3, 28, 10, 1, 0, 250000),
                                     datetime(2026, 3, 28, 10, 2)]
    assert frame["s"].to_list() == ["1.5", "2", "x"]
    assert frame.columns == [*CANONICAL, "s", "fault_tag", "fault_id"]


def test_iso_timestamps_with_an_offset_are_exact_and_ignore_the_timezone_setting(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", "ts;v\n2026-03-28T10:00:00Z;1\n2026-07-01 12:00:00+02:00;2\n"
          "2026-07-01T12:00:00;3\n")
    ing = settings(timestamp_column="ts", timestamp_format=None, columns={"v": "v"}, state_column=None,
                   label_column=None, label_mapping=None)
    frame = read_telemetry(ing, tmp_path)
    # The last row has no offset: local Berlin summer time (UTC+2).
    assert frame["ts"].to_list() == [datetime(2026, 3, 28, 10), datetime(2026, 7, 1, 10), datetime(2026, 7, 1, 10)]


def test_timestamp_format_with_an_offset_directive(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", "ts;v\n28/03/2026 10:00 +0100;1\n")
    ing = settings(timestamp_column="ts", timestamp_format="%d/%m/%Y %H:%M %z", columns={"v": "v"},
                   state_column=None, label_column=None, label_mapping=None)
    assert read_telemetry(ing, tmp_path)["ts"].to_list() == [datetime(2026, 3, 28, 9)]


def test_spring_dst_switch_is_seamless_in_utc(tmp_path):
    rows = [*minutes("29.03.2026 01:58", 2), *minutes("29.03.2026 03:00", 2)]
    write(tmp_path, "rigs/rig_A1.csv", rig(rows))
    ts = read_telemetry(settings(), tmp_path)["ts"].to_list()
    # 01:59 CET = 00:59 UTC, 03:00 CEST = 01:00 UTC: consecutive minutes.
    assert ts == [datetime(2026, 3, 29, 0, 58), datetime(2026, 3, 29, 0, 59), datetime(2026, 3, 29, 1, 0),
                  datetime(2026, 3, 29, 1, 1)]


def test_a_local_time_in_the_spring_dst_gap_is_an_error_naming_line_column_and_value(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", rig([*minutes("29.03.2026 01:58", 2), "29.03.2026 02:30:00;1;1;1;RUN;0"]))
    err = raises(["rigs/rig_A1.csv", "line 4", "column 'Zeit'", "'29.03.2026 02:30:00'", "does not exist",
                  "Europe/Berlin"], read_telemetry, settings(), tmp_path)
    assert (err.file, err.line, err.column) == ("rigs/rig_A1.csv", 4, "Zeit")


def test_autumn_repeated_hour_in_order_is_read_as_two_passes(tmp_path):
    # 25.10.2026: 03:00 CEST -> 02:00 CET, so 02:00-02:59 happens twice. Rows in order, sampled every 20 minutes.
    rows = [f"25.10.2026 {h}:00;1;1;1;RUN;0" for h in
            ("01:40", "02:00", "02:20", "02:40", "02:00", "02:20", "02:40", "03:00")]
    write(tmp_path, "rigs/rig_A1.csv", rig(rows), "utf-8")
    ing = settings(timestamp_format="%d.%m.%Y %H:%M:%S")
    ts = read_telemetry(ing, tmp_path)["ts"].to_list()
    expected = [datetime(2026, 10, 24, 23, 40)] + [datetime(2026, 10, 25, h, m) for h, m in
                                                   ((0, 0), (0, 20), (0, 40), (1, 0), (1, 20), (1, 40), (2, 0))]
    assert ts == expected


def test_autumn_second_pass_is_detected_per_device_when_devices_share_a_file(tmp_path):
    local = ["02:30", "02:50", "02:10", "02:30"]
    lines = [f"{dev};2026-10-25 {t}:00;1" for t in local for dev in ("D1", "D2")]
    write(tmp_path, "plant/export.csv", "Anlage;Zeit;T\n" + "\n".join(lines) + "\n")
    ing = settings(path="plant/*.csv", device_column="Anlage", timestamp_format=None, columns={"T": "temp"},
                   state_column=None, label_column=None, label_mapping=None)
    frame = read_telemetry(ing, tmp_path)
    expected = [datetime(2026, 10, 25, 0, 30), datetime(2026, 10, 25, 0, 50), datetime(2026, 10, 25, 1, 10),
                datetime(2026, 10, 25, 1, 30)]
    assert frame.filter(pl.col("device_id") == "D1")["ts"].to_list() == expected
    assert frame.filter(pl.col("device_id") == "D2")["ts"].to_list() == expected


def test_autumn_ambiguous_time_without_a_second_pass_is_the_earlier_occurrence(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", rig(["25.10.2026 02:30:00;1;1;1;RUN;0"]))
    assert read_telemetry(settings(), tmp_path)["ts"].to_list() == [datetime(2026, 10, 25, 0, 30)]  # CEST


def test_device_column_with_several_devices_per_file(tmp_path):
    write(tmp_path, "plant/export.csv", "Anlage;Zeit;T\nM-2;2026-03-28 10:00:00;1\n M-1 ;2026-03-28 10:00:00;2\n"
          "M-2;2026-03-28 09:00:00;3\n")
    ing = settings(path="plant/*.csv", device_column="Anlage", timestamp_format=None, timezone="UTC",
                   columns={"T": "temp"}, state_column=None, label_column=None, label_mapping=None)
    frame = read_telemetry(ing, tmp_path)
    assert frame.select("device_id", "temp").rows() == [("M-1", "2"), ("M-2", "3"), ("M-2", "1")]


def test_a_device_column_value_that_is_not_an_allowed_id_names_file_line_column_and_value(tmp_path):
    write(tmp_path, "plant/export.csv", "Anlage;Zeit;T\nM-1;2026-03-28 10:00:00;1\n../etc;2026-03-28 10:01:00;2\n")
    ing = settings(path="plant/*.csv", device_column="Anlage", timestamp_format=None, columns={"T": "temp"},
                   state_column=None, label_column=None, label_mapping=None)
    raises(["plant/export.csv", "line 3", "column 'Anlage'", "'../etc'", "not allowed"], read_telemetry, ing, tmp_path)
    write(tmp_path, "plant/export.csv", "Anlage;Zeit;T\nM-1;2026-03-28 10:00:00;1\n;2026-03-28 10:01:00;2\n")
    raises(["plant/export.csv", "line 3", "column 'Anlage'", "empty device id"], read_telemetry, ing, tmp_path)


def test_device_from_path_is_searched_in_the_posix_path_relative_to_root(tmp_path):
    write(tmp_path, "site/HALL-3/pump_7/2026-03-28.csv", rig(minutes("28.03.2026 10:00", 1)))
    ing = settings(path="site/**/*.csv", device_from_path=r"(?P<device>HALL-\d+)/pump_(\d+)/")
    assert read_telemetry(ing, tmp_path)["device_id"].to_list() == ["HALL-3"]


def test_device_from_path_that_does_not_match_or_gives_a_bad_id_names_the_file(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", rig(minutes("28.03.2026 10:00", 1)))
    write(tmp_path, "rigs/other.csv", rig(minutes("28.03.2026 10:00", 1)))
    raises(["rigs/other.csv", "device_from_path", "does not match"], read_telemetry, settings(), tmp_path)
    (tmp_path / "rigs/other.csv").unlink()
    write(tmp_path, "rigs/rig_.hidden!.csv", rig(minutes("28.03.2026 10:00", 1)))
    ing = settings(device_from_path=r"rig_(?P<device>[^/]+)\.csv$")
    raises(["rigs/rig_.hidden!.csv", "'.hidden!'", "not allowed"], read_telemetry, ing, tmp_path)


def test_any_number_of_sensors_with_arbitrary_names_in_mapping_order(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", " Zeit ;Extra;Druck (bar);Öl-Temp.;Drehzahl;Lüfter %;Frei\n"
          "28.03.2026 10:00:00;x;1,5;60,25;1500;80;y\n")
    columns = {"Drehzahl": "rpm", "Druck (bar)": "pressure_bar", "Lüfter %": "fan_pct", "Öl-Temp.": "oil_temp_c"}
    ing = settings(columns=columns, families={"rpm": "RPM", "pressure_bar": "Pressure", "fan_pct": "Fan",
                                              "oil_temp_c": "Temperature"}, state_column=None, label_column=None,
                   label_mapping=None)
    frame = read_telemetry(ing, tmp_path)
    assert frame.columns == [*CANONICAL, "rpm", "pressure_bar", "fan_pct", "oil_temp_c", "fault_tag", "fault_id"]
    assert frame.select("rpm", "pressure_bar", "fan_pct", "oil_temp_c").row(0) == ("1500", "1.5", "80", "60.25")


def test_state_column_values_and_default_state(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", rig(["28.03.2026 10:00:00;1;1;1; IDLE ;0", "28.03.2026 10:01:00;1;1;1;;0"]))
    assert read_telemetry(settings(), tmp_path)["state"].to_list() == ["IDLE", None]  # empty -> unknown_state later
    assert read_telemetry(settings(state_column=None), tmp_path)["state"].to_list() == ["RUN", "RUN"]
    assert read_telemetry(settings(state_column=None, default_state="IDLE"), tmp_path)["state"].to_list() == [
        "IDLE", "IDLE"]


def test_label_mapping_with_tag_names_and_without_mapping(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", rig(["28.03.2026 10:00:00;1;1;1;RUN;OK", "28.03.2026 10:01:00;1;1;1;RUN;BRG",
                                            "28.03.2026 10:02:00;1;1;1;RUN;", "28.03.2026 10:03:00;1;1;1;RUN;HOT"]))
    mapped = settings(label_mapping={"OK": None, "BRG": "bearing_wear", "HOT": "overheat_drift"})
    assert read_telemetry(mapped, tmp_path)["fault_tag"].to_list() == [None, "bearing_wear", None, "overheat_drift"]
    as_text = settings(label_mapping=None)
    assert read_telemetry(as_text, tmp_path)["fault_tag"].to_list() == ["OK", "BRG", None, "HOT"]
    with_empty_key = settings(label_mapping={"": "unknown", "OK": None, "BRG": "b", "HOT": "h"})
    assert read_telemetry(with_empty_key, tmp_path)["fault_tag"].to_list() == [None, "b", "unknown", "h"]


def test_a_label_not_in_the_mapping_names_file_line_column_and_value(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", rig([*minutes("28.03.2026 10:00", 3), "28.03.2026 10:03:00;1;1;1;RUN;2",
                                            "28.03.2026 10:04:00;1;1;1;RUN;2"]))
    err = raises(["rigs/rig_A1.csv", "line 5", "column 'Stoerung'", "label '2'", "'0', '1'", "1 more row"],
                 read_telemetry, settings(), tmp_path)
    assert err.line == 5


def test_fault_id_per_contiguous_run_per_device_even_across_files_and_filters(tmp_path):
    # A1: a run crossing midnight UTC (split over two daily files), a gap, a second run; B2: its own run.
    write(tmp_path, "rigs/d1/rig_A1.csv", rig([*minutes("29.03.2026 01:57", 1),
                                               *minutes("29.03.2026 01:58", 2, label="1")]))
    write(tmp_path, "rigs/d2/rig_A1.csv", rig([*minutes("29.03.2026 03:00", 2, label="1"),
                                               *minutes("29.03.2026 03:02", 1),
                                               *minutes("29.03.2026 03:03", 2, label="1")]))
    write(tmp_path, "rigs/d1/rig_B2.csv", rig(minutes("29.03.2026 01:58", 2, label="1")))
    ing = settings(path="rigs/**/*.csv")
    frame = read_telemetry(ing, tmp_path)
    ids = frame.select("device_id", "fault_id").rows()
    run1, run2 = "A1-fault-20260329T005800", "A1-fault-20260329T010300"
    assert ids == [("A1", None), ("A1", run1), ("A1", run1), ("A1", run1), ("A1", run1), ("A1", None),
                   ("A1", run2), ("A1", run2), ("B2", "B2-fault-20260329T005800"), ("B2", "B2-fault-20260329T005800")]
    # A different tag right after another one starts a new run.
    write(tmp_path, "rigs/d1/rig_B2.csv", rig(["29.03.2026 01:58:00;1;1;1;RUN;1", "29.03.2026 01:59:00;1;1;1;RUN;2"]))
    two_tags = settings(path="rigs/**/*.csv", label_mapping={"0": None, "1": "a", "2": "b"})
    b2 = read_telemetry(two_tags, tmp_path, devices=["B2"])
    assert b2["fault_id"].to_list() == ["B2-a-20260329T005800", "B2-b-20260329T005900"]


def test_days_and_devices_filter_and_partitions(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", rig([*minutes("28.03.2026 00:30", 1), *minutes("28.03.2026 01:30", 1)]))
    write(tmp_path, "rigs/rig_B2.csv", rig(minutes("29.03.2026 12:00", 2)))
    ing = settings()
    # Local 00:30 CET on 28.03 is 27.03 23:30 UTC: the day partition is the UTC day.
    assert read_telemetry(ing, tmp_path).select("day", "device_id").rows() == [
        (date(2026, 3, 27), "A1"), (date(2026, 3, 28), "A1"), (date(2026, 3, 29), "B2"), (date(2026, 3, 29), "B2")]
    assert read_telemetry(ing, tmp_path, days=[date(2026, 3, 28)])["device_id"].to_list() == ["A1"]
    assert read_telemetry(ing, tmp_path, devices=["B2"]).height == 2
    assert read_telemetry(ing, tmp_path, days=[date(2026, 3, 29)], devices=["A1"]).height == 0
    empty = read_telemetry(ing, tmp_path, devices=["nope"])
    assert empty.height == 0 and empty.columns == read_telemetry(ing, tmp_path).columns
    assert available_partitions(ing, tmp_path).rows() == [
        (date(2026, 3, 27), "A1"), (date(2026, 3, 28), "A1"), (date(2026, 3, 29), "B2")]
    assert available_partitions(ing, tmp_path).schema == pl.Schema({"day": pl.Date, "device_id": pl.String})


def test_a_file_spanning_several_days_is_split_by_utc_day(tmp_path):
    rows = [f"{d:02d}.03.2026 {h}:00;1;1;1;RUN;0" for d in (27, 28, 29, 30) for h in ("00:00", "12:00", "23:30")]
    write(tmp_path, "rigs/rig_A1.csv", rig(rows))
    counts = read_telemetry(settings(), tmp_path).group_by("day").len().sort("day").rows()
    # 00:00 local is the previous UTC day; 29.03 00:00 local is still CET (UTC+1).
    assert counts == [(date(2026, 3, 26), 1), (date(2026, 3, 27), 3), (date(2026, 3, 28), 3), (date(2026, 3, 29), 3),
                      (date(2026, 3, 30), 2)]


def test_multiple_globs_are_sorted_deduplicated_and_ignore_other_files(tmp_path):
    for rel in ("a/rig_A1.csv", "a/rig_A2.TXT", "b/rig_B1.tsv", "a/notes.md", "a/rig_X.xlsx", "a/.rig_H.csv"):
        write(tmp_path, rel, rig(minutes("28.03.2026 10:00", 1)))
    (tmp_path / "a" / "dir.csv").mkdir()
    ing = settings(path=["b/*", "a/*", "a/rig_A1.csv"], device_from_path=r"rig_(?P<device>[A-Za-z0-9]+)\.")
    files = discover_files(ing, tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a/rig_A1.csv", "a/rig_A2.TXT", "b/rig_B1.tsv"]
    assert read_telemetry(ing, tmp_path)["device_id"].to_list() == ["A1", "A2", "B1"]


def test_glob_matching_no_file_names_the_globs(tmp_path):
    write(tmp_path, "a/rig_A1.csv", rig(minutes("28.03.2026 10:00", 1)))
    write(tmp_path, "x/report.xlsx", "x")
    raises(["'nothing/*.csv'", "'x/*'", "only .xlsx", "match no"], discover_files,
           settings(path=["a/*.csv", "nothing/*.csv", "x/*"]), tmp_path)


def test_relative_glob_may_not_escape_root_but_absolute_globs_are_allowed(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    outside = write(tmp_path, "outside/rig_O1.csv", rig(minutes("28.03.2026 10:00", 1)))
    raises(["'../outside/*.csv'", "leaves the project root", "'..'"], discover_files,
           settings(path="../outside/*.csv"), root)
    raises(["'data/../../outside/*.csv'"], read_telemetry, settings(path="data/../../outside/*.csv"), root)
    ing = settings(path=str(tmp_path / "outside" / "*.csv"))
    assert discover_files(ing, root) == [outside]
    assert read_telemetry(ing, root)["device_id"].to_list() == ["O1"]


def test_reading_is_deterministic_and_read_file_matches_read_telemetry(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", rig([*minutes("28.03.2026 10:05", 3, label="1"),
                                            *minutes("28.03.2026 10:00", 3), "28.03.2026 10:00:00;9;9;9;RUN;0"]))
    ing = settings()
    first = read_telemetry(ing, tmp_path)
    assert first.equals(read_telemetry(ing, tmp_path))
    assert first.equals(read_file(tmp_path / "rigs/rig_A1.csv", ing, tmp_path))
    assert first.equals(read_file(Path("rigs/rig_A1.csv"), ing, tmp_path))
    # Out-of-order rows are sorted (stable: the duplicate timestamp keeps file order for validation to judge).
    assert first["ts"].is_sorted()
    assert first.filter(pl.col("ts") == datetime(2026, 3, 28, 9, 0))["temp_c"].to_list() == ["20.5", "9"]


def test_line_numbers_count_blank_lines_and_quoted_multiline_cells(tmp_path):
    text = (f'{HEADER};Notiz\n28.03.2026 10:00:00;1;1;1;RUN;0;"two\nlines"\n\n'
            "28.03.2026 10:01:00;1;1;1;RUN;0;x\n31.02.2026 10:02:00;1;1;1;RUN;0;x\n")
    write(tmp_path, "rigs/rig_A1.csv", text)
    raises(["rigs/rig_A1.csv", "line 6", "column 'Zeit'", "'31.02.2026 10:02:00'", "'%d.%m.%Y %H:%M:%S'"],
           read_telemetry, settings(), tmp_path)


# ----------------------------------------------------------------------------------------------- Parquet


def test_historian_parquet_sample_with_device_column_keeps_numeric_types():
    ing = IngestionSettings(
        path="configs/examples/historian/*.parquet", timestamp_column="timestamp", device_column="device",
        columns={"temperature_degC": "temp_c", "vibration_rms_g": "vibration_g", "speed_rpm": "rpm"},
        families={"temp_c": "Temperature", "vibration_g": "Vibration", "rpm": "RPM"}, state_column="mode",
        label_column="alarm",
    )
    frame = read_telemetry(ing, PROJECT_ROOT)
    assert frame.schema["temp_c"] == pl.Float64 and frame.schema["ts"] == pl.Datetime("us")
    assert frame["device_id"].unique().sort().to_list() == ["PUMP-07", "PUMP-08"]
    assert frame["ts"].min() == datetime(2026, 3, 28, 12) and frame["ts"].max() == datetime(2026, 3, 29, 11, 59)
    assert set(frame["day"].unique()) == {date(2026, 3, 28), date(2026, 3, 29)}
    assert frame["fault_tag"].drop_nulls().n_unique() >= 2
    assert (frame["fault_id"].is_null() == frame["fault_tag"].is_null()).all()


def test_parquet_naive_timestamps_are_local_time_and_text_sensors_mix_with_csv(tmp_path):
    pl.DataFrame({
        "t": [datetime(2026, 7, 1, 12), datetime(2026, 7, 1, 12, 1)], "dev": ["P1", "P1"],
        "temp": [1.5, None], "lbl": [0, 1],
    }).write_parquet(tmp_path / "h.parquet")
    write(tmp_path, "c.csv", "t;dev;temp;lbl\n2026-07-01 12:02:00;P1;x;1\n")
    ing = settings(path=["*.parquet", "*.csv"], device_column="dev", timestamp_column="t", timestamp_format=None,
                   columns={"temp": "temp_c"}, state_column=None, label_column="lbl")
    parquet_only = read_file(tmp_path / "h.parquet", ing, tmp_path)
    assert parquet_only.schema["temp_c"] == pl.Float64
    assert parquet_only["ts"].to_list() == [datetime(2026, 7, 1, 10), datetime(2026, 7, 1, 10, 1)]
    both = read_telemetry(ing, tmp_path)
    assert both["temp_c"].to_list() == ["1.5", None, "x"]
    assert both["fault_id"].to_list() == [None, "P1-fault-20260701T100100", "P1-fault-20260701T100100"]


def test_parquet_errors(tmp_path):
    good = pl.DataFrame({"ts": [datetime(2026, 1, 1)], "dev": ["P1"], "v": [1.0]})
    good.write_parquet(tmp_path / "good.parquet")
    data = (tmp_path / "good.parquet").read_bytes()
    ing = settings(path="*.parquet", device_column="dev", timestamp_column="ts", timestamp_format=None,
                   columns={"v": "v"}, state_column=None, label_column=None, label_mapping=None)
    write(tmp_path, "bad.parquet", data[: len(data) // 2])
    raises(["bad.parquet", "not a readable Parquet file", "truncated"], read_telemetry, ing, tmp_path)
    write(tmp_path, "bad.parquet", data[:8] + b"\x00" * (len(data) - 16) + data[-8:])
    raises(["bad.parquet", "not a readable Parquet file"], read_telemetry, ing, tmp_path)
    write(tmp_path, "bad.parquet", b"")
    raises(["bad.parquet", "empty file"], read_telemetry, ing, tmp_path)
    good.head(0).write_parquet(tmp_path / "bad.parquet")
    raises(["bad.parquet", "no data rows"], read_telemetry, ing, tmp_path)
    good.rename({"v": "w"}).write_parquet(tmp_path / "bad.parquet")
    raises(["bad.parquet", "'v' (columns) not found", "'ts', 'dev', 'w'"], read_telemetry, ing, tmp_path)
    pl.DataFrame({"ts": [datetime(2026, 1, 1), None], "dev": ["P1", "P1"], "v": [1.0, 2.0]}).write_parquet(
        tmp_path / "bad.parquet")
    raises(["bad.parquet", "row 2", "column 'ts'", "empty timestamp"], read_telemetry, ing, tmp_path)
    pl.DataFrame({"ts": [1, 2], "dev": ["P1", "P1"], "v": [1.0, 2.0]}).write_parquet(tmp_path / "bad.parquet")
    raises(["bad.parquet", "column 'ts'", "type Int64"], read_telemetry, ing, tmp_path)


# ----------------------------------------------------------------------------------------------- bad files


def test_binary_garbage_and_misnamed_files(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", bytes(range(256)) * 4)
    raises(["rigs/rig_A1.csv", "binary content"], read_telemetry, settings(), tmp_path)
    write(tmp_path, "rigs/rig_A1.csv", b"PAR1\x00\x00")
    raises(["rigs/rig_A1.csv", "Parquet file"], read_telemetry, settings(), tmp_path)
    write(tmp_path, "rigs/rig_A1.csv", "\ufeff" + rig(minutes("28.03.2026 10:00", 1)), "utf-16")
    raises(["rigs/rig_A1.csv", "UTF-16"], read_telemetry, settings(), tmp_path)


def test_wrong_encoding_names_line_and_encoding_and_suggests_the_setting(tmp_path):
    text = rig([*minutes("28.03.2026 10:00", 2), "28.03.2026 10:02:00;1;1;1;Störung;0"])
    write(tmp_path, "rigs/rig_A1.csv", text, "cp1252")
    err = raises(["rigs/rig_A1.csv", "line 4", "0xf6", "not valid utf8", "encoding: cp1252"], read_telemetry,
                 settings(), tmp_path)
    assert err.line == 4
    assert read_telemetry(settings(encoding="cp1252"), tmp_path)["state"][-1] == "Störung"
    assert read_telemetry(settings(encoding="latin1"), tmp_path)["state"][-1] == "Störung"
    assert read_telemetry(settings(encoding="utf8-lossy"), tmp_path)["state"][-1] == "St\ufffdrung"


def test_utf8_bom_and_crlf_line_endings_are_fine(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", ("\ufeff" + rig(minutes("28.03.2026 10:00", 2))).replace("\n", "\r\n"))
    frame = read_telemetry(settings(), tmp_path)
    assert frame.height == 2 and frame["fault_tag"].to_list() == [None, None]


def test_empty_file_and_header_only_file(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", "")
    raises(["rigs/rig_A1.csv", "empty file"], read_telemetry, settings(), tmp_path)
    write(tmp_path, "rigs/rig_A1.csv", HEADER + "\n\n")
    raises(["rigs/rig_A1.csv", "no data rows"], read_telemetry, settings(), tmp_path)


def test_duplicated_mapped_column_name_is_an_error_unmapped_duplicates_are_ignored(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", rig(["28.03.2026 10:00:00;1;1;1;RUN;0;5"], HEADER + ";Strom"))
    raises(["rigs/rig_A1.csv", "line 1", "column 'Strom'", "2 times", "positions 4, 7"], read_telemetry,
           settings(), tmp_path)
    write(tmp_path, "rigs/rig_A1.csv", rig(["28.03.2026 10:00:00;1;1;1;RUN;0;a;b"], HEADER + ";Frei;Frei"))
    assert read_telemetry(settings(), tmp_path).height == 1


def test_missing_mapped_column_lists_the_columns_the_file_has(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", rig(["28.03.2026 10:00:00;1;1;RUN;0"], "Zeit;Temp;Schwingung;Zustand;Stoerung"))
    err = raises(["rigs/rig_A1.csv", "line 1", "'Temperatur' (columns)", "'Strom' (columns)",
                  "'Zeit', 'Temp', 'Schwingung', 'Zustand', 'Stoerung'"], read_telemetry, settings(), tmp_path)
    assert err.column == "Temperatur"


def test_wrong_delimiter_gets_a_hint(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", rig(minutes("28.03.2026 10:00", 1)))
    raises(["line 1", "not found", "delimiter: ';'"], read_telemetry, settings(delimiter=","), tmp_path)


def test_unparseable_and_empty_timestamps_name_line_column_and_value(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", rig([*minutes("28.03.2026 10:00", 2), "2026-03-28 10:02:00;1;1;1;RUN;0",
                                            "gestern;1;1;1;RUN;0"]))
    err = raises(["rigs/rig_A1.csv", "line 4", "column 'Zeit'", "'2026-03-28 10:02:00'", "%d.%m.%Y %H:%M:%S",
                  "1 more row"], read_telemetry, settings(), tmp_path)
    assert (err.line, err.column) == (4, "Zeit")
    write(tmp_path, "rigs/rig_A1.csv", rig([*minutes("28.03.2026 10:00", 1), ";1;1;1;RUN;0"]))
    raises(["line 3", "column 'Zeit'", "empty timestamp"], read_telemetry, settings(), tmp_path)
    write(tmp_path, "rigs/rig_A1.csv", "Zeit;Temperatur;Schwingung;Strom;Zustand;Stoerung\n28/03/2026;1;1;1;RUN;0\n")
    raises(["line 2", "'28/03/2026'", "ISO 8601", "timestamp_format"], read_telemetry,
           settings(timestamp_format=None), tmp_path)


def test_a_line_with_too_many_fields_names_the_line(tmp_path):
    write(tmp_path, "rigs/rig_A1.csv", rig([*minutes("28.03.2026 10:00", 2), "28.03.2026 10:02:00;1;1;1;RUN;0;7"]))
    raises(["rigs/rig_A1.csv", "line 4", "7 fields but the header has 6"], read_telemetry, settings(), tmp_path)


def test_unreadable_file_names_the_file(tmp_path, monkeypatch):
    write(tmp_path, "rigs/rig_A1.csv", rig(minutes("28.03.2026 10:00", 1)))

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # chmod 000 does not stop root, which CI may run as
    raises(["rigs/rig_A1.csv", "cannot read file", "Permission denied"], read_telemetry, settings(), tmp_path)


def test_read_file_on_a_directory_or_unsupported_file(tmp_path):
    (tmp_path / "rigs" / "rig_A1.csv").mkdir(parents=True)
    raises(["rigs/rig_A1.csv", "cannot read file"], read_file, tmp_path / "rigs" / "rig_A1.csv", settings(), tmp_path)
    write(tmp_path, "rigs/rig_A1.xlsx", "x")
    raises(["rigs/rig_A1.xlsx", "unsupported file type"], read_file, Path("rigs/rig_A1.xlsx"), settings(), tmp_path)


def test_a_sensor_named_like_a_canonical_column_is_refused():
    with pytest.raises(ValueError, match=r"sensor name\(s\) \['state'\] are reserved"):
        settings(columns={"Temperatur": "state"})


# ----------------------------------------------------------------------------------------------- the sample config


def test_sample_config_reads_two_rigs_over_the_dst_switch_and_validates_cleanly():
    path = PROJECT_ROOT / "configs" / "examples" / "files.yaml"
    cfg = load_settings(path)
    assert cfg.source == "files" and list(cfg.sensors) == ["temp_c", "vibration_g", "current_a"]
    frame = read_telemetry(cfg.ingestion, PROJECT_ROOT)
    assert frame["device_id"].unique().sort().to_list() == ["A1", "B2"]
    days = [date(2026, 3, 27), date(2026, 3, 28), date(2026, 3, 29), date(2026, 3, 30)]
    assert frame["day"].unique().sort().to_list() == days
    assert cfg.start_date == days[0]
    # Local 28.03 00:00 … 30.03 23:59 in 1-minute steps, minus the hour the clocks skip on 29.03.
    per_device = frame.group_by("device_id").agg(pl.len(), pl.col("ts").diff().max().alias("step"))
    assert per_device["len"].to_list() == [3 * 1440 - 60] * 2
    assert per_device["step"].to_list() == [timedelta(minutes=1)] * 2  # seamless in UTC across the switch
    assert frame.filter(pl.col("fault_tag").is_not_null())["device_id"].n_unique() == 2
    assert available_partitions(cfg.ingestion, PROJECT_ROOT).height == 8

    result = split_telemetry(frame, cfg.sensors, cfg.validation.states)
    assert result.validated.height + result.quarantine.height == frame.height
    # The only quarantined row is the cell a technician typed by hand into rig_B2.csv.
    assert result.reason_counts == {"bad_type": 1}
    assert result.quarantine.select("device_id", "detail").rows() == [("B2", "temp_c=Sensorfehler")]
    first = result.validated.group_by("device_id").head(cfg.model.training.first_samples)
    assert first["fault_tag"].null_count() == first.height  # the training window is fault-free
