"""The bad-input catalogue: every kind of malformed telemetry or config ITAP is expected to meet.

Each kind ends in exactly one of two documented outcomes:

* a clear error — `IngestError` naming the file and, where it applies, the line and column; `SettingsError` naming
  the file and the key; `AlertRulesError` naming the file, the rule and the field — and nothing of the file loads;
* the file reads and validation quarantines the bad rows with a reason code, keeping the invariant
  rows in = rows validated + rows quarantined.

Telemetry files follow the vendor sample in configs/examples (`;` separated, decimal comma, Europe/Berlin local
time, device from the file name `rig_<device>.csv`). Two kinds also run end-to-end through Dagster.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml

from itap_assets.core.ingest import IngestError, available_partitions, read_file, read_telemetry
from itap_assets.core.alerting import AlertRulesError, load_alert_rules
from itap_assets.core.validation import ValidationResult, split_telemetry
from itap_assets.settings import PROJECT_ROOT, IngestionSettings, Settings, SettingsError, load_settings

HEADER = "Zeit;Temperatur;Schwingung;Strom;Zustand;Stoerung\n"
GOOD = "28.03.2026 00:00:00;36,57;0,194;16,13;RUN;0\n28.03.2026 00:01:00;36,38;0,203;14,97;RUN;0\n"
EXAMPLE = PROJECT_ROOT / "configs" / "examples" / "files.yaml"


def example_config(glob: str, **ingestion) -> dict:
    """configs/examples/files.yaml as a dict, reading `glob` (and any ingestion overrides)."""
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    config["ingestion"]["path"] = glob
    config["ingestion"]["settle_seconds"] = 0  # the files are written just before they are read
    config["ingestion"].update(ingestion)
    return config


def example_settings(root: Path, **ingestion) -> Settings:
    return Settings.model_validate(example_config(str(root / "*.csv"), **ingestion))


def write(root: Path, name: str, content: str | bytes) -> Path:
    path = root / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def split(path: Path, settings: Settings, root: Path) -> tuple[pl.DataFrame, ValidationResult]:
    """Read one file and validate it; the invariant rows in = validated + quarantined always holds."""
    raw = read_file(path, settings.ingestion, root)
    result = split_telemetry(raw, settings.sensors, settings.validation.states)
    assert raw.height == result.validated.height + result.quarantine.height
    return raw, result


def local(minute: int, day: str = "28.03.2026") -> str:
    return (datetime.strptime(day, "%d.%m.%Y") + timedelta(minutes=minute)).strftime("%d.%m.%Y %H:%M:%S")


# --------------------------------------------------------------------------------------------- clear errors (CSV)

# (kind, file content, message pattern, line, column): line/column None where the problem has none.
CSV_ERRORS = [
    pytest.param(
        HEADER + GOOD + "28.03.2026 00:0", r"line 4: the file ends in the middle of a line .*truncated", 4,
        None, id="truncated_csv_cut_inside_the_timestamp",
    ),
    pytest.param(
        bytes(range(256)) * 8, r"binary content \(NUL byte at offset 0\), not a text CSV", None, None,
        id="binary_garbage_with_nul_bytes",
    ),
    pytest.param(
        bytes(range(0x80, 0x100)) * 4, r"line 1: byte 0x80 at character 1 is not valid utf8 .*encoding: cp1252", 1,
        None, id="binary_garbage_without_nul_bytes",
    ),
    pytest.param(
        (HEADER + GOOD + "28.03.2026 00:02:00;36,3°;0,2;14;RUN;0\n").encode("cp1252"),
        r"line 4: byte 0xb0 at character 25 is not valid utf8 \(tried encoding 'utf8'\); set `encoding: cp1252`", 4,
        None, id="wrong_encoding_cp1252_read_as_utf8",
    ),
    pytest.param(("\ufeff" + HEADER).encode("utf-16"), r"UTF-16 encoded", None, None, id="utf16_export"),
    pytest.param(b"\x1f\x8b\x08\x00\x00\x00\x00\x00", r"compressed archive", None, None, id="gzip_named_csv"),
    pytest.param(HEADER, r"no data rows \(the file has a header only\)", None, None, id="header_only"),
    pytest.param(HEADER + "\n\n;;;;;\n", r"no data rows", None, None, id="header_and_blank_lines_only"),
    pytest.param(b"", r"empty file \(no header, no data\)", None, None, id="empty_file"),
    pytest.param(b"\xef\xbb\xbf \r\n\t\n", r"empty file", None, None, id="whitespace_and_bom_only"),
    pytest.param(
        HEADER.replace("\n", ";Temperatur\n") + GOOD.replace("\n", ";1\n"),
        r"line 1, column 'Temperatur': the header names this column 2 times \(positions 2, 7\)", 1, "Temperatur",
        id="duplicated_mapped_column",
    ),
    pytest.param(
        "Zeit;Temperatur;Strom;Zustand;Stoerung\n28.03.2026 00:00:00;36,5;16,1;RUN;0\n",
        r"line 1: column\(s\) 'Schwingung' \(columns\) not found; the file has 'Zeit', 'Temperatur'", 1, "Schwingung",
        id="missing_mapped_column",
    ),
    pytest.param(
        HEADER + GOOD + "2026-03-28T00:02:00;36,3;0,2;14;RUN;0\n",
        r"line 4, column 'Zeit': cannot parse timestamp '2026-03-28T00:02:00' with timestamp_format", 4, "Zeit",
        id="unparseable_timestamp",
    ),
    pytest.param(
        HEADER + GOOD + "31.02.2026 00:02:00;36,3;0,2;14;RUN;0\n",
        r"line 4, column 'Zeit': cannot parse timestamp '31.02.2026 00:02:00'", 4, "Zeit",
        id="impossible_calendar_date",
    ),
    pytest.param(
        HEADER + GOOD + ";36,3;0,2;14;RUN;0\n", r"line 4, column 'Zeit': empty timestamp", 4, "Zeit",
        id="empty_timestamp",
    ),
    pytest.param(
        HEADER + "29.03.2026 01:59:00;36,3;0,2;14;RUN;0\n29.03.2026 02:30:00;36,3;0,2;14;RUN;0\n",
        r"line 3, column 'Zeit': local time '29.03.2026 02:30:00' does not exist in Europe/Berlin", 3, "Zeit",
        id="dst_gap_timestamp",
    ),
    pytest.param(
        HEADER + GOOD + "28.03.2026 00:02:00;36,3;0,2;14;RUN;2\n",
        r"line 4, column 'Stoerung': label '2' is not in label_mapping \(keys: '0', '1'\)", 4, "Stoerung",
        id="label_value_not_in_mapping",
    ),
    pytest.param(
        (HEADER + GOOD).replace(";", ","),
        r"line 1: column\(s\) 'Zeit' \(timestamp_column\).* the header is one column containing ',': is "
        r"`delimiter: ','` meant\?", 1, "Zeit", id="wrong_delimiter_single_column_header",
    ),
    pytest.param(
        HEADER + GOOD.replace(";0\n", ";0;extra;fields\n", 1),
        r"line 2: 8 fields but the header has 6 \(check delimiter ';' and quoting\)", 2, None,
        id="row_with_more_fields_than_the_header",
    ),
    pytest.param(
        # A quoted export cut inside a field: the open quote runs to the end of the file.
        '"Zeit";"Temperatur";"Schwingung";"Strom";"Zustand";"Stoerung"\n'
        '"28.03.2026 00:00:00";"36,57";"0,194";"16,13";"RUN";"0"\n'
        '"28.03.2026 00:01:00";"36,3',
        r"line 3\b", 3, None, id="truncated_quoted_csv_cut_inside_a_field",
    ),
]


@pytest.mark.parametrize(("content", "message", "line", "column"), CSV_ERRORS)
def test_unreadable_csv_is_a_clear_error_naming_file_line_and_column(tmp_path, content, message, line, column):
    settings = example_settings(tmp_path)
    path = write(tmp_path, "rig_X1.csv", content)
    with pytest.raises(IngestError) as info:
        read_file(path, settings.ingestion, tmp_path)
    error = info.value
    assert str(error).startswith("rig_X1.csv: "), str(error)
    assert error.file == "rig_X1.csv"
    assert re.search(message, str(error)), str(error)
    assert error.line == line, str(error)
    if column is not None:
        assert error.column == column, str(error)


def test_an_unreadable_file_fails_the_whole_read_nothing_half_lands(tmp_path):
    """One bad file among good ones: read_telemetry raises (naming the bad file), it does not return the rest."""
    settings = example_settings(tmp_path)
    write(tmp_path, "rig_A1.csv", HEADER + GOOD)
    write(tmp_path, "rig_B2.csv", HEADER + GOOD + "garbage;1;2;3;RUN;0\n")
    with pytest.raises(IngestError, match=r"^rig_B2\.csv: line 4, column 'Zeit': cannot parse timestamp 'garbage'"):
        read_telemetry(settings.ingestion, tmp_path)


# ------------------------------------------------------------------------------------ clear errors (device column)


def device_column_settings(root: Path) -> IngestionSettings:
    config = example_config(str(root / "*.csv"), device_column="Anlage", device_from_path=None)
    return Settings.model_validate(config).ingestion


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("rig 7", r"device id 'rig 7' is not allowed"),
        ("", r"empty device id"),
        ("rig\u00e9", r"device id 'rig\u00e9' is not allowed"),
    ],
    ids=["space_in_device_id", "empty_device_id", "non_ascii_device_id"],
)
def test_bad_device_id_in_a_device_column_is_a_clear_error(tmp_path, cell, message):
    ingestion = device_column_settings(tmp_path)
    path = write(
        tmp_path, "plant.csv",
        "Anlage;" + HEADER + "R1;" + GOOD.splitlines()[0] + f"\n{cell};" + GOOD.splitlines()[1] + "\n",
    )
    with pytest.raises(IngestError, match=rf"^plant\.csv: line 3, column 'Anlage': {message}") as info:
        read_file(path, ingestion, tmp_path)
    assert (info.value.line, info.value.column) == (3, "Anlage")


# --------------------------------------------------------------------------------------- clear errors (Parquet)


def parquet_settings(root: Path) -> IngestionSettings:
    return IngestionSettings(
        path=str(root / "*.parquet"), timestamp_column="timestamp", device_column="device",
        columns={"temperature": "temp_c"}, families={"temp_c": "Temperature"},
    )


def parquet_frame(rows: int = 200) -> pl.DataFrame:
    start = datetime(2026, 3, 28)
    return pl.DataFrame({
        "timestamp": [start + timedelta(minutes=i) for i in range(rows)],
        "device": ["PUMP-07"] * rows,
        "temperature": [40.0 + i / 10 for i in range(rows)],
    })


def test_parquet_cut_in_half_is_a_clear_error(tmp_path):
    whole = tmp_path / "whole.parquet"
    parquet_frame().write_parquet(whole)
    data = whole.read_bytes()
    write(tmp_path, "first_half.parquet", data[: len(data) // 2])
    write(tmp_path, "second_half.parquet", data[len(data) // 2:])
    ingestion = parquet_settings(tmp_path)
    assert read_file(whole, ingestion, tmp_path).height == 200
    for name in ("first_half.parquet", "second_half.parquet"):
        with pytest.raises(IngestError, match=rf"^{name}: not a readable Parquet file .*truncated") as info:
            read_file(tmp_path / name, ingestion, tmp_path)
        assert info.value.file == name


def test_parquet_with_a_corrupt_footer_is_a_clear_error(tmp_path):
    whole = tmp_path / "whole.parquet"
    parquet_frame().write_parquet(whole)
    data = whole.read_bytes()
    write(tmp_path, "corrupt.parquet", data[:4] + b"\x00" * (len(data) - 8) + data[-4:])
    with pytest.raises(IngestError, match=r"^corrupt\.parquet: not a readable Parquet file"):
        read_file(tmp_path / "corrupt.parquet", parquet_settings(tmp_path), tmp_path)


def test_parquet_header_only_and_wrong_timestamp_type_are_clear_errors(tmp_path):
    parquet_frame().head(0).write_parquet(tmp_path / "schema_only.parquet")
    parquet_frame().with_columns(pl.lit(5).alias("timestamp")).write_parquet(tmp_path / "int_ts.parquet")
    ingestion = parquet_settings(tmp_path)
    with pytest.raises(IngestError, match=r"^schema_only\.parquet: no data rows"):
        read_file(tmp_path / "schema_only.parquet", ingestion, tmp_path)
    with pytest.raises(IngestError, match=r"^int_ts\.parquet: column 'timestamp': timestamp column has type Int32"):
        read_file(tmp_path / "int_ts.parquet", ingestion, tmp_path)


def test_parquet_bad_device_id_names_the_data_row(tmp_path):
    frame = parquet_frame().with_columns(
        pl.when(pl.int_range(pl.len()) == 41).then(pl.lit("PUMP 07")).otherwise(pl.col("device")).alias("device")
    )
    frame.write_parquet(tmp_path / "pumps.parquet")
    with pytest.raises(IngestError, match=r"^pumps\.parquet: row 42, column 'device': device id 'PUMP 07' is not"):
        read_file(tmp_path / "pumps.parquet", parquet_settings(tmp_path), tmp_path)


# ------------------------------------------------------------------------ readable files: quarantine with reasons


def test_csv_cut_mid_line_after_the_timestamp_is_a_truncation_error(tmp_path):
    """A last line cut short (no final line break, fewer fields than the header) is a truncated transfer."""
    settings = example_settings(tmp_path)
    path = write(tmp_path, "rig_T1.csv", HEADER + GOOD + "28.03.2026 00:02:00;36,3;0,2")
    with pytest.raises(IngestError, match=r"^rig_T1\.csv: line 4: the file ends in the middle of a line .*truncated"):
        split(path, settings, tmp_path)


def test_a_short_line_in_the_middle_is_read_with_missing_cells(tmp_path):
    """Some exports drop trailing empty fields: a short line followed by more lines is not a truncation; its
    state is missing, so the row is quarantined, and nothing is lost."""
    settings = example_settings(tmp_path)
    path = write(tmp_path, "rig_T1.csv", HEADER + "28.03.2026 00:02:00;36,3;0,2\n" + GOOD)
    raw, result = split(path, settings, tmp_path)
    assert raw.height == 3
    assert result.reason_counts == {"unknown_state": 1}
    assert result.quarantine["detail"].to_list() == ["state=NULL"]


def test_csv_cut_mid_line_is_not_silently_validated_without_a_state_column(tmp_path):
    """Without a state column nothing else catches the short last line: its missing cells must not pass as a
    valid sample. Either the read fails naming the line, or the row is quarantined."""
    settings = example_settings(tmp_path, state_column=None)
    path = write(tmp_path, "rig_T1.csv", HEADER + GOOD + "28.03.2026 00:02:00;36,3;0,2")
    try:
        raw, result = split(path, settings, tmp_path)
    except IngestError as exc:
        assert re.search(r"^rig_T1\.csv: line 4\b", str(exc)), str(exc)
        return
    cut = datetime(2026, 3, 27, 23, 2)
    assert cut not in result.validated["ts"].to_list(), (
        "the truncated line 4 (2 of 6 fields) was validated with NULL sensors and no label"
    )
    assert cut in result.quarantine["ts"].to_list()


def test_mixed_types_in_a_sensor_column_are_bad_type_rows_with_their_text(tmp_path):
    settings = example_settings(tmp_path)
    path = write(
        tmp_path, "rig_M1.csv",
        HEADER + GOOD
        + "28.03.2026 00:02:00;abc;0,2;14;RUN;0\n"
        + "28.03.2026 00:03:00;12.5.3;0,2;14;RUN;0\n"
        + "28.03.2026 00:04:00;1.234,5;0,2;14;RUN;0\n"
        + "28.03.2026 00:05:00;36,1;0,2;14;RUN;0\n",
    )
    raw, result = split(path, settings, tmp_path)
    assert raw.schema["temp_c"] == pl.String  # text survives reading; validation judges it
    assert result.reason_counts == {"bad_type": 3}
    assert sorted(result.quarantine["detail"].to_list()) == ["temp_c=1.234,5", "temp_c=12.5.3", "temp_c=abc"]
    assert all('"temp_c":"' in r for r in result.quarantine["raw_row"].to_list())
    assert result.validated["temp_c"].to_list() == [36.57, 36.38, 36.1]


def test_timestamps_out_of_order_are_sorted_and_all_kept(tmp_path):
    settings = example_settings(tmp_path)
    minutes = [5, 1, 3, 0, 4, 2]
    lines = "".join(f"{local(m)};{30 + m},0;0,2;14;RUN;0\n" for m in minutes)
    raw, result = split(write(tmp_path, "rig_O1.csv", HEADER + lines), settings, tmp_path)
    assert raw.height == 6 and result.quarantine.height == 0
    expected = [datetime(2026, 3, 27, 23, m) for m in range(6)]
    assert result.validated["ts"].to_list() == expected
    assert result.validated["temp_c"].to_list() == [30.0 + m for m in range(6)]


def test_far_future_timestamp_lands_in_its_own_day_outside_the_requested_partitions(tmp_path):
    settings = example_settings(tmp_path)
    write(tmp_path, "rig_F1.csv", HEADER + GOOD + "01.06.2099 12:00:00;36,3;0,2;14;RUN;0\n")
    raw, result = split(tmp_path / "rig_F1.csv", settings, tmp_path)
    # The file reads: the row carries its own UTC day (local 12:00 CEST = 10:00 UTC) and passes validation.
    future = raw.filter(pl.col("day") == date(2099, 6, 1))
    assert future["ts"].to_list() == [datetime(2099, 6, 1, 10, 0)]
    assert result.quarantine.height == 0 and result.validated.height == 3
    # It is a partition with data of its own ...
    assert (date(2099, 6, 1), "F1") in available_partitions(settings.ingestion, tmp_path).rows()
    # ... and never part of a run that asks for the sample's days.
    requested = read_telemetry(settings.ingestion, tmp_path, days=[date(2026, 3, 27)], devices=["F1"])
    assert requested.height == 2 and requested["day"].unique().to_list() == [date(2026, 3, 27)]


def test_clock_jump_backwards_quarantines_conflicts_and_collapses_exact_copies(tmp_path):
    """The clock jumps back two minutes: re-sent minutes with other values conflict (no way to know which is
    right, both go), identical re-sent minutes are exact copies (one is kept)."""
    settings = example_settings(tmp_path)
    lines = (
        f"{local(0)};30,0;0,2;14;RUN;0\n{local(1)};31,0;0,2;14;RUN;0\n{local(2)};32,0;0,2;14;RUN;0\n"
        f"{local(1)};99,0;0,2;14;RUN;0\n{local(2)};32,0;0,2;14;RUN;0\n{local(3)};33,0;0,2;14;RUN;0\n"
    )
    raw, result = split(write(tmp_path, "rig_J1.csv", HEADER + lines), settings, tmp_path)
    assert raw.height == 6
    assert result.reason_counts == {"duplicate_conflict": 2, "duplicate_exact": 1}
    conflict = result.quarantine.filter(pl.col("reason") == "duplicate_conflict")
    assert sorted(conflict["temp_c"].to_list()) == [31.0, 99.0]
    assert conflict["ts"].unique().to_list() == [datetime(2026, 3, 27, 23, 1)]
    assert result.validated["temp_c"].to_list() == [30.0, 32.0, 33.0]
    # exact copies are harmless; the two versions of 23:01 are one lost sample
    assert result.rejected_share == pytest.approx(1 / 6)


@pytest.mark.parametrize(
    ("cell", "reason", "detail"),
    [
        ("1e308", "out_of_range", "temp_c=1e+308"),
        ("-1,5e308", "out_of_range", "temp_c=-1.5e+308"),
        ("1e309", "non_finite", "temp_c=inf"),
        ("inf", "non_finite", "temp_c=inf"),
        ("-Infinity", "non_finite", "temp_c=-inf"),
        ("NaN", "non_finite", "temp_c=NaN"),
        ("nan", "non_finite", "temp_c=NaN"),
    ],
)
def test_huge_and_non_finite_values_are_quarantined(tmp_path, cell, reason, detail):
    settings = example_settings(tmp_path)  # temp_c has the range -40..250
    path = write(tmp_path, "rig_H1.csv", HEADER + GOOD + f"28.03.2026 00:02:00;{cell};0,2;14;RUN;0\n")
    raw, result = split(path, settings, tmp_path)
    assert result.reason_counts == {reason: 1}
    assert result.quarantine["detail"].to_list() == [detail]
    assert result.validated.height == 2


def test_huge_values_pass_when_no_range_is_configured_but_infinity_never_does(tmp_path):
    config = example_config(str(tmp_path / "*.csv"))
    del config["sensors"]["temp_c"]  # temp_c: only checked to be a finite number
    settings = Settings.model_validate(config)
    assert settings.sensors["temp_c"].min == -math.inf
    path = write(
        tmp_path, "rig_H2.csv",
        HEADER + GOOD + "28.03.2026 00:02:00;1e308;0,2;14;RUN;0\n28.03.2026 00:03:00;inf;0,2;14;RUN;0\n",
    )
    raw, result = split(path, settings, tmp_path)
    assert result.reason_counts == {"non_finite": 1}
    assert 1e308 in result.validated["temp_c"].to_list()


def test_all_null_sensor_column_is_kept_as_null_and_shows_in_the_missing_rate(tmp_path):
    settings = example_settings(tmp_path)
    lines = "".join(f"{local(m)};36,{m};;14;RUN;0\n" for m in range(4)) + f"{local(4)};36,4; ;14;RUN;0\n"
    raw, result = split(write(tmp_path, "rig_N1.csv", HEADER + lines), settings, tmp_path)
    assert result.quarantine.height == 0 and result.validated.height == 5
    assert result.validated.schema["vibration_g"] == pl.Float64
    missing = result.validated.select(pl.col(s).is_null().mean() for s in settings.sensors).row(0, named=True)
    assert missing == {"temp_c": 0.0, "vibration_g": 1.0, "current_a": 0.0}
    assert missing["vibration_g"] > settings.validation.max_missing_rate  # what the WARN check reports


def test_unknown_and_empty_state_values_are_quarantined(tmp_path):
    settings = example_settings(tmp_path)
    path = write(
        tmp_path, "rig_S1.csv",
        HEADER + GOOD + "28.03.2026 00:02:00;36,3;0,2;14;RUNNING;0\n28.03.2026 00:03:00;36,3;0,2;14;;0\n"
        + "28.03.2026 00:04:00;36,3;0,2;14;run;0\n",
    )
    raw, result = split(path, settings, tmp_path)
    assert result.reason_counts == {"unknown_state": 3}
    assert result.quarantine["detail"].to_list() == ["state=RUNNING", "state=NULL", "state=run"]


def test_a_duplicated_column_the_config_does_not_map_is_harmless(tmp_path):
    settings = example_settings(tmp_path)
    path = write(tmp_path, "rig_D1.csv", HEADER.replace("\n", ";Notiz;Notiz\n") + GOOD.replace("\n", ";a;b\n"))
    raw, result = split(path, settings, tmp_path)
    assert result.validated.height == 2 and result.quarantine.height == 0


# -------------------------------------------------------------------------------------------------- settings files


def write_yaml(tmp_path: Path, text: str, name: str = "itap.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("simulaton:\n  devices: 3\n", r"simulaton: Extra inputs are not permitted"),
        ("simulation:\n  device: 3\n", r"simulation\.device: Extra inputs are not permitted"),
        ("validation:\n  max_quarantine_shares: 0.1\n", r"validation\.max_quarantine_shares: Extra inputs"),
    ],
    ids=["top_level", "nested", "validation"],
)
def test_settings_with_a_typo_key_name_the_file_and_the_key(tmp_path, text, key):
    path = write_yaml(tmp_path, text)
    with pytest.raises(SettingsError, match=rf"^{path}: {key}"):
        load_settings(path)


def test_files_settings_with_a_typo_in_the_ingestion_section_name_the_key(tmp_path):
    text = EXAMPLE.read_text(encoding="utf-8").replace("  delimiter: \";\"", "  delimeter: \";\"")
    path = write_yaml(tmp_path, text)
    with pytest.raises(SettingsError, match=rf"^{path}: ingestion\.delimeter: Extra inputs are not permitted"):
        load_settings(path)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("simulation:\n  devices: [3\n  days: 2\n", r"line 3, column 7"),
        ("simulation:\n\tdevices: 3\n", r"found character '\\t' that cannot start any token.*line 2, column 1"),
        ("source: files\ningestion: {path: 'a\n", r"while scanning a quoted scalar"),
    ],
    ids=["unclosed_bracket", "tab_indent", "unclosed_quote"],
)
def test_settings_with_bad_yaml_syntax_name_the_file_and_the_line(tmp_path, text, where):
    path = write_yaml(tmp_path, text)
    with pytest.raises(SettingsError, match=rf"(?s)^{path}: not valid YAML.*{where}"):
        load_settings(path)


def test_settings_whose_top_level_is_not_a_mapping_are_refused(tmp_path):
    path = write_yaml(tmp_path, "- simulation\n- sensors\n")
    with pytest.raises(SettingsError, match=rf"^{path}: top level must be a mapping, got list"):
        load_settings(path)


@pytest.mark.parametrize(("low", "high"), [(10, 10), (100, 10)], ids=["min_equals_max", "min_above_max"])
def test_sensor_range_with_min_not_below_max_is_refused(tmp_path, low, high):
    path = write_yaml(tmp_path, f"sensors:\n  temp_c: {{family: Temperature, min: {low}, max: {high}}}\n")
    with pytest.raises(SettingsError, match=rf"^{path}: sensors\.temp_c: .*min={low}\.0 must be below max={high}\.0"):
        load_settings(path)


def test_files_source_sensor_range_with_min_not_below_max_is_refused(tmp_path):
    config = example_config(str(tmp_path / "*.csv"))
    config["sensors"]["current_a"] = {"min": 500, "max": 0}
    path = write_yaml(tmp_path, yaml.safe_dump(config))
    with pytest.raises(SettingsError, match=rf"^{path}: sensors\.current_a: .*min=500\.0 must be below max=0\.0"):
        load_settings(path)


# ------------------------------------------------------------------------------------------------ alert rule files

RULES = """\
defaults:
  default_route: operations
rules:
  - name: storm
    type: burst
    min_anomalies: 5
    window_minutes: 5
    severity: CRITICAL
    cause: Anomaly storm
    action: Inspect the device.
"""
FAMILIES = ["Temperature", "Vibration", "Current"]


def test_the_rules_template_used_below_is_valid(tmp_path):
    assert load_alert_rules(write_yaml(tmp_path, RULES, "rules.yaml"), FAMILIES).rules[0].name == "storm"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("type: burst", "type: bursts",
         r"Rule 'storm': unknown rule type 'bursts' \(valid: burst, .*\); did you mean 'burst'\?"),
        ("window_minutes: 5", "window_minutes: -5", r"Rule 'storm': window_minutes=-5 must be greater than 0"),
        ("defaults:\n  default_route: operations\n", "",
         r"Rule 'storm': route is missing and there is no default route"),
        ("min_anomalies: 5", "min_anomalies: 0", r"Rule 'storm': min_anomalies=0 must be 1 or more"),
        ("    severity: CRITICAL\n", "    severity: CRITICAL\n    severty: INFO\n",
         r"Rule 'storm': unknown key 'severty'; did you mean 'severity'\?"),
    ],
    ids=["unknown_rule_type", "negative_window", "missing_route", "zero_min_anomalies", "typo_key"],
)
def test_bad_alert_rules_name_the_file_the_rule_and_the_field(tmp_path, old, new, message):
    assert old in RULES
    path = write_yaml(tmp_path, RULES.replace(old, new), "rules.yaml")
    with pytest.raises(AlertRulesError, match=rf"^{path}: {message}"):
        load_alert_rules(path, FAMILIES)


def test_alert_rules_with_bad_yaml_syntax_name_the_file(tmp_path):
    path = write_yaml(tmp_path, RULES.replace("cause: Anomaly storm", "cause: [Anomaly storm"), "rules.yaml")
    with pytest.raises(AlertRulesError, match=rf"^{path}: not valid YAML"):
        load_alert_rules(path, FAMILIES)


# ----------------------------------------------------------------------------------------- end to end via Dagster

E2E_DAY = date(2026, 4, 10)  # a plain CEST day: local 10:00 = 08:00 UTC, no DST switch


def e2e_config(root: Path) -> dict:
    config = example_config(str(root / "*.csv"))
    config["partitions"] = {"start_date": "2026-01-01"}
    return config


def test_e2e_mixed_types_and_duplicates_keep_the_invariant_in_the_database(make_pipeline, tmp_path):
    from itap_assets_tests.conftest import run_graph

    def line(m: int, temp: str | None = None, vib: str = "0,2") -> str:
        temp = temp or f"{40 + (m % 7) / 10:.1f}".replace(".", ",")
        return f"{local(600 + m, '10.04.2026')};{temp};{vib};14,0;RUN;0"

    lines = [line(m) for m in range(200)]
    lines[30], lines[31] = line(30, "Sensorfehler"), line(31, "12.5.3")  # mixed types: bad_type
    exact = line(10)  # re-sent unchanged: duplicate_exact
    conflict = line(20, vib="0,9")  # re-sent with another value: duplicate_conflict (both rows)
    far_future = "01.06.2099 12:00:00;40,0;0,2;14,0;RUN;0"
    data = tmp_path / "data"
    data.mkdir()
    write(data, "rig_E1.csv", HEADER + "\n".join([*lines, exact, conflict, far_future]) + "\n")

    p = make_pipeline(e2e_config(data))
    results = run_graph(p, [(E2E_DAY, "E1")], until="telemetry_job")
    assert all(r.success for r in results)

    raw, validated, quarantine = p.table("raw_telemetry"), p.table("validated"), p.table("quarantine")
    assert raw.height == 202  # the 2099 row belongs to a day this run did not ask for
    assert raw["day"].unique().to_list() == [E2E_DAY]
    assert raw.height == validated.height + quarantine.height
    counts = dict(zip(*quarantine.group_by("reason").len().sort("reason").get_columns()))
    assert counts == {"bad_type": 2, "duplicate_conflict": 2, "duplicate_exact": 1}
    assert validated.height == 197
    assert validated["ts"].is_sorted() and validated["ts"].n_unique() == validated.height
    db_counts = p.sql(
        "SELECT (SELECT count(*) FROM raw_telemetry) AS raw, (SELECT count(*) FROM validated) AS ok, "
        "(SELECT count(*) FROM quarantine) AS q"
    ).row(0, named=True)
    assert db_counts["raw"] == db_counts["ok"] + db_counts["q"]


def test_e2e_unparseable_timestamp_fails_the_run_with_the_ingest_error(make_pipeline, tmp_path):
    from itap_assets_tests.conftest import run_graph

    data = tmp_path / "data"
    data.mkdir()
    good = f"{local(600, '10.04.2026')};40,0;0,2;14;RUN;0"
    write(data, "rig_E2.csv", HEADER + good + "\n10.04.2026 25:61:00;40,1;0,2;14;RUN;0\n")
    p = make_pipeline(e2e_config(data))
    expected = r"rig_E2\.csv: line 3, column 'Zeit': cannot parse timestamp '10\.04\.2026 25:61:00'"
    with pytest.raises(Exception, match=expected):
        run_graph(p, [(E2E_DAY, "E2")], until="telemetry_job")
    with pytest.raises(Exception, match="does not exist"):
        p.table("raw_telemetry")  # nothing of the file landed

