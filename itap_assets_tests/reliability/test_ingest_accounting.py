"""Issue 19, ingestion half: every record of every file is accounted for at the source, only complete files are
read, nothing outside what the config names is read or quoted, and every bad file gets a one-line message naming
file, line and column. Each case is a file the test writes (vendor layout of configs/examples/files.yaml)."""

from __future__ import annotations

import io
import os
import time
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from itap_assets.core import ingest_accounting
from itap_assets.core.ingest import (
    IncompleteFile, IngestError, available_partitions, read_accounted, read_file, read_telemetry,
)
from itap_assets.core.validation import split_telemetry
from itap_assets.settings import PROJECT_ROOT, Settings

HEADER = "Zeit;Temperatur;Schwingung;Strom;Zustand;Stoerung;Kommentar"
EXAMPLE = PROJECT_ROOT / "configs" / "examples" / "files.yaml"
RIG_A1 = PROJECT_ROOT / "configs" / "examples" / "rigs" / "rig_A1.csv"


def settings_for(root: Path, **ingestion) -> Settings:
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    config["ingestion"].update({"path": str(root / "*.csv"), "settle_seconds": 0, **ingestion})
    return Settings.model_validate(config)


def aged(path: Path, seconds: float = 3600) -> Path:
    """Pretend the file was last written `seconds` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def write(root: Path, name: str, content: str | bytes) -> Path:
    path = root / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def rig_lines(comment: str = "ok") -> list[str]:
    """The example rig A1 (4,260 data lines over 4 UTC days) with a free-text column the config does not map."""
    lines = RIG_A1.read_text(encoding="utf-8").splitlines()
    return [lines[0] + ";Kommentar"] + [f"{line};{comment}" for line in lines[1:]]


def one_line_error(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message and len(message) < 400, message
    return message


# ---------------------------------------------------------------------------------------- account at the source


def test_an_unbalanced_quote_in_an_unmapped_column_loses_no_row_and_plans_every_day(tmp_path):
    """Issue 19: `Tuer "offen` in the Kommentar column swallowed 2,259 of 4,260 lines and a day of the plan."""
    lines = rig_lines()
    lines[2002] = lines[2002].rsplit(";", 1)[0] + ';Tuer "offen'
    path = aged(write(tmp_path, "rig_A1.csv", "\n".join(lines) + "\n"))
    settings = settings_for(tmp_path)
    read = read_accounted(settings.ingestion, tmp_path)
    (account,) = read.accounts
    assert (account.records, account.ingested, account.rejected, account.status) == (4260, 4260, 0, "ingested")
    clean = read_file(RIG_A1, settings.ingestion, PROJECT_ROOT)
    assert read.frame.drop("device_id").equals(clean.drop("device_id"))
    planned = available_partitions(settings.ingestion, tmp_path)
    assert planned.height == clean.select("day").n_unique() == 4
    from itap_assets.sensors import source_partitions

    sensor_days = source_partitions(settings)[str(path)][1]
    assert sorted(d for d, _ in sensor_days) == [d.isoformat() for d in planned["day"]]


def test_a_stray_quote_in_a_mapped_cell_is_a_quarantined_value_with_its_text(tmp_path):
    lines = rig_lines()
    head, _, rest = lines[5].split(";", 2)
    lines[5] = f'{head};36"5;{rest}'
    write(tmp_path, "rig_A1.csv", "\n".join(lines) + "\n")
    settings = settings_for(tmp_path)
    raw = read_telemetry(settings.ingestion, tmp_path)
    result = split_telemetry(raw, settings.sensors, settings.validation.states)
    assert raw.height == 4260 == result.validated.height + result.quarantine.height
    assert result.quarantine.filter(pl.col("reason") == "bad_type")["detail"].to_list() == ['temp_c=36"5']


@pytest.mark.parametrize(("cell", "line", "what"), [
    ('"36,5', 7, r"a quoted cell is never closed"),
    ('"36"5', 7, r"text follows the closing quote"),
])
def test_a_broken_quote_in_a_mapped_column_names_file_line_and_column_in_one_line(tmp_path, cell, line, what):
    """Issue 19: an unbalanced quote in a mapped column named no line and dumped ~13k lines into the log."""
    lines = rig_lines()
    head, _, rest = lines[line - 1].split(";", 2)
    lines[line - 1] = f"{head};{cell};{rest}"
    write(tmp_path, "rig_A1.csv", "\n".join(lines) + "\n")
    with pytest.raises(IngestError) as info:
        read_telemetry(settings_for(tmp_path).ingestion, tmp_path)
    message = one_line_error(info.value)
    assert message.startswith(f"rig_A1.csv: line {line}, column 'Temperatur': "), message
    assert what in message and (info.value.line, info.value.column) == (line, "Temperatur")


def test_delimiter_only_rows_are_rejected_and_counted_blank_lines_are_not_records(tmp_path):
    """Issue 19: `;;;;;` rows were skipped without a word. Now: counted as rejected at ingestion, first line named."""
    lines = rig_lines()[:11]
    lines[4:4] = [";;;;;;", "", ";;;;;;nur ein Kommentar"]
    write(tmp_path, "rig_A1.csv", "\n".join(lines) + "\n")
    (account,) = read_accounted(settings_for(tmp_path).ingestion, tmp_path).accounts
    assert (account.records, account.ingested, account.rejected) == (12, 10, 2)
    assert account.records == account.ingested + account.rejected
    assert "2 record(s) with no value in any mapped column" in account.detail and "line 5" in account.detail


@pytest.mark.parametrize("comment", ["ok", '"quoted; with the delimiter"'])
def test_a_reader_that_loses_a_row_is_an_error_naming_the_first_diverging_line(tmp_path, monkeypatch, comment):
    """The record count comes from the bytes, not the reader: a reader that drops a row cannot pass."""
    write(tmp_path, "rig_A1.csv", "\n".join(rig_lines(comment)[:21]) + "\n")
    real = pl.read_csv
    monkeypatch.setattr(pl, "read_csv", lambda *a, **k: real(*a, **k).filter(pl.col("__row") != 6))
    with pytest.raises(IngestError) as info:
        read_telemetry(settings_for(tmp_path).ingestion, tmp_path)
    message = one_line_error(info.value)
    assert message.startswith("rig_A1.csv: line 8: the CSV reader returned 19 rows but the file has 20"), message


def test_parquet_records_are_counted_from_the_file_metadata(tmp_path):
    frame = pl.DataFrame({"Zeit": ["28.03.2026 00:00:00", "28.03.2026 00:01:00"], "Temperatur": ["1", "2"],
                          "Schwingung": ["1", "1"], "Strom": ["1", "1"], "Zustand": ["RUN", "RUN"],
                          "Stoerung": ["0", "0"]})
    frame.write_parquet(tmp_path / "rig_P1.parquet")
    settings = settings_for(tmp_path, path=str(tmp_path / "*.parquet"), device_from_path=r"rig_(?P<device>\w+)\.")
    (account,) = read_accounted(settings.ingestion, tmp_path).accounts
    assert (account.records, account.ingested, account.rejected, account.status) == (2, 2, 0, "ingested")
    assert account.fingerprint == ingest_accounting.fingerprint((tmp_path / "rig_P1.parquet").read_bytes())


# ------------------------------------------------------------------------------------------- only complete files


def test_a_file_without_a_final_line_break_is_not_read_until_it_has_one(tmp_path):
    """Issue 19: a file ending mid-value (`6` of `62.x`) was ingested as a real reading."""
    lines = rig_lines()[:11]
    path = write(tmp_path, "rig_A1.csv", "\n".join(lines)[:-8])
    settings = settings_for(tmp_path)
    with pytest.raises(IncompleteFile, match=r"^rig_A1\.csv: line 11: the file ends in the middle of a line"):
        read_file(path, settings.ingestion, tmp_path)
    read = read_accounted(settings.ingestion, tmp_path)
    assert read.frame.height == 0 and available_partitions(settings.ingestion, tmp_path).height == 0
    assert [(a.status, a.records) for a in read.accounts] == [("incomplete", None)]
    write(tmp_path, "rig_A1.csv", "\n".join(lines) + "\n")
    assert read_accounted(settings.ingestion, tmp_path).frame.height == 10


def test_an_old_file_without_a_final_line_break_is_read_as_its_writer_left_it(tmp_path):
    """Published data sets end without a line break (7 of the 57 NAB series): once the file is older than
    `unterminated_settle_seconds` and its last line has every field, that line is a reading, not a torn write."""
    import os

    lines = rig_lines()[:11]
    path = write(tmp_path, "rig_A1.csv", "\n".join(lines))
    an_hour_ago = path.stat().st_mtime - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))
    (account,) = read_accounted(settings_for(tmp_path).ingestion, tmp_path).accounts
    assert (account.status, account.records, account.ingested) == ("ingested", 10, 10)
    cut = write(tmp_path, "rig_A1.csv", "\n".join(lines)[:-8].rsplit(";", 1)[0])  # a field short: truncated
    os.utime(cut, (an_hour_ago, an_hour_ago))
    assert [a.status for a in read_accounted(settings_for(tmp_path).ingestion, tmp_path).accounts] == ["incomplete"]


def test_a_young_file_without_a_final_line_break_is_named_with_the_setting_that_reads_it(tmp_path):
    """`make demo` says which files it left for a later run and why, instead of leaving their devices out unsaid."""
    write(tmp_path, "rig_A1.csv", "\n".join(rig_lines()[:11]))  # every field, no line break, just written
    heard: list[str] = []
    assert available_partitions(settings_for(tmp_path).ingestion, tmp_path, on_incomplete=heard.append).height == 0
    assert len(heard) == 1 and heard[0].startswith("rig_A1.csv: line 11: the file ends in the middle of a line")
    assert "ingestion.unterminated_settle_seconds (300 s)" in heard[0]


def test_a_file_younger_than_the_settle_time_is_left_for_the_next_run_and_sensor_tick(tmp_path):
    from itap_assets.sensors import source_partitions

    path = write(tmp_path, "rig_A1.csv", "\n".join(rig_lines()[:11]) + "\n")
    settings = settings_for(tmp_path, settle_seconds=600)
    read = read_accounted(settings.ingestion, tmp_path)
    assert read.frame.height == 0
    assert read.accounts[0].status == "incomplete" and "settle_seconds: 600" in read.accounts[0].detail
    assert source_partitions(settings) == {}  # not in the cursor: the next tick looks again
    aged(path)
    assert read_accounted(settings.ingestion, tmp_path).frame.height == 10
    assert len(source_partitions(settings)[str(path)][1]) == 1


def test_a_file_that_changes_while_it_is_read_is_not_read(tmp_path, monkeypatch):
    """Issue 19: appending while a run read the file stored `2` instead of `24.29`."""
    from itap_assets.core import ingest_csv

    path = write(tmp_path, "rig_A1.csv", "\n".join(rig_lines()[:11]) + "\n")
    real = ingest_csv.snapshot
    calls = []

    def appending_snapshot(p):
        calls.append(p)
        if len(calls) == 2:  # between reading the bytes and the second look: the writer appends
            with path.open("a", encoding="utf-8") as fh:
                fh.write("28.03.2026 00:10:00;2")
        return real(p)

    monkeypatch.setattr(ingest_csv, "snapshot", appending_snapshot)
    read = read_accounted(settings_for(tmp_path).ingestion, tmp_path)
    assert read.frame.height == 0
    assert read.accounts[0].status == "incomplete" and "changed while it was read" in read.accounts[0].detail


def test_the_settle_time_is_a_documented_bounded_setting():
    from itap_assets.settings import IngestionSettings

    assert IngestionSettings.model_fields["settle_seconds"].default == 2.0
    with pytest.raises(ValueError):
        settings_for(Path("/nonexistent"), settle_seconds=-1)
    with pytest.raises(ValueError):
        settings_for(Path("/nonexistent"), settle_seconds=float("inf"))


# ----------------------------------------------------------------------------------------------------------- paths


def test_a_symlink_inside_the_data_directory_is_skipped_unless_the_config_follows_links(tmp_path):
    """Issue 19: an outside CSV reached through a link was ingested silently."""
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir(), outside.mkdir()
    write(data, "rig_A1.csv", "\n".join(rig_lines()[:3]) + "\n")
    write(outside, "secret.csv", "\n".join(rig_lines()[:5]) + "\n")
    (data / "rig_L1.csv").symlink_to(outside / "secret.csv")
    (data / "linked").symlink_to(outside, target_is_directory=True)
    settings = settings_for(data, path=[str(data / "*.csv"), str(data / "**/*.csv")])
    read = read_accounted(settings.ingestion, data)
    assert read.frame["device_id"].unique().to_list() == ["A1"]
    skipped = {a.file: a.detail for a in read.accounts if a.status == "skipped"}
    assert set(skipped) == {"rig_L1.csv", "linked/secret.csv"}
    assert all("follow_symlinks: false" in why for why in skipped.values())
    followed = settings_for(data, path=str(data / "*.csv"), follow_symlinks=True)
    assert sorted(read_telemetry(followed.ingestion, data)["device_id"].unique()) == ["A1", "L1"]


def test_a_link_to_a_system_file_is_never_read_nor_quoted(tmp_path):
    """Issue 19: /etc/passwd through a link produced an error quoting its first line."""
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n" * 3, encoding="utf-8")
    data = tmp_path / "data"
    data.mkdir()
    (data / "rig_P1.csv").symlink_to(secret)
    write(data, "rig_A1.csv", "\n".join(rig_lines()[:3]) + "\n")
    read = read_accounted(settings_for(data).ingestion, data)
    assert "root:x" not in repr(read.accounts) and read.frame.height == 2


def test_a_long_header_is_quoted_only_in_part(tmp_path):
    """A message names at most 12 header cells of 40 characters: it never carries a file's content."""
    write(tmp_path, "rig_A1.csv", ";".join(f"{'x' * 100}{i}" for i in range(50)) + "\n1;2\n")
    with pytest.raises(IngestError) as info:
        read_telemetry(settings_for(tmp_path).ingestion, tmp_path)
    message = one_line_error(info.value)
    assert "x" * 41 not in message and "(50 columns)" in message


def test_hidden_files_are_skipped_and_reported(tmp_path):
    """Issue 19: dot-files were skipped without a word."""
    write(tmp_path, "rig_A1.csv", "\n".join(rig_lines()[:3]) + "\n")
    write(tmp_path, ".rig_A1.csv", "\n".join(rig_lines()[:2]))  # an editor's or rsync's partial copy
    (tmp_path / ".partial").mkdir()
    write(tmp_path / ".partial", "rig_B2.csv", "\n".join(rig_lines()[:2]) + "\n")
    read = read_accounted(settings_for(tmp_path, path=str(tmp_path / "**/*.csv")).ingestion, tmp_path)
    assert read.frame.height == 2
    assert [(a.file, a.status) for a in read.accounts] == [
        (".partial/rig_B2.csv", "skipped"), (".rig_A1.csv", "skipped"), ("rig_A1.csv", "ingested")]
    assert all(a.detail.startswith("hidden (a name in its path starts with '.'") for a in read.accounts[:2])


# -------------------------------------------------------------------------------------------------------- messages


def test_a_cr_only_file_names_its_line_ends(tmp_path):
    """Issue 19: a classic-Mac file (CR line ends) said "header only"."""
    write(tmp_path, "rig_A1.csv", "\r".join(rig_lines()[:5]) + "\r")
    with pytest.raises(IngestError) as info:
        read_telemetry(settings_for(tmp_path).ingestion, tmp_path)
    assert one_line_error(info.value).startswith("rig_A1.csv: line 1: lines end in a bare CR")


@pytest.mark.parametrize("quoted", [False, True])
def test_a_header_cell_over_128_kib_names_file_line_and_column(tmp_path, quoted):
    """Issue 19: a raw `_csv.Error` naming no file."""
    big = "y" * (129 * 1024)
    header = f'Zeit;"{big}";Temperatur' if quoted else f"Zeit;{big};Temperatur"
    write(tmp_path, "rig_A1.csv", header + "\n28.03.2026 00:00:00;1;2\n")
    with pytest.raises(IngestError) as info:
        read_telemetry(settings_for(tmp_path).ingestion, tmp_path)
    message = one_line_error(info.value)
    assert message.startswith("rig_A1.csv: line 1, column '#2': a cell is larger than 128 KiB"), message


@pytest.mark.parametrize(("column", "kind"), [
    (pa.array([[1.0], [2.0]], type=pa.list_(pa.float64())), "a nested list, struct or map"),
    (pa.array([{"a": 1.0}, {"a": 2.0}]), "a nested list, struct or map"),
    (pa.array([b"\x00\x01", b"\x02"], type=pa.binary()), "raw bytes"),
])
def test_list_struct_and_binary_parquet_columns_name_file_and_column(tmp_path, column, kind):
    """Issue 19: raw Polars errors naming nothing."""
    table = pa.table({"Zeit": ["28.03.2026 00:00:00", "28.03.2026 00:01:00"], "Temperatur": column,
                      "Schwingung": ["1", "1"], "Strom": ["1", "1"], "Zustand": ["RUN", "RUN"],
                      "Stoerung": ["0", "0"]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    write(tmp_path, "rig_P1.parquet", buffer.getvalue())
    settings = settings_for(tmp_path, path=str(tmp_path / "*.parquet"), device_from_path=r"rig_(?P<device>\w+)\.")
    with pytest.raises(IngestError) as info:
        read_telemetry(settings.ingestion, tmp_path)
    message = one_line_error(info.value)
    assert message.startswith("rig_P1.parquet: column 'Temperatur': has type") and kind in message, message


def test_rows_before_the_start_date_name_file_line_and_column(tmp_path):
    """Issue 19: a Dagster CheckError naming the day but not the file."""
    write(tmp_path, "rig_A1.csv", "\n".join(rig_lines()[:11]) + "\n")
    settings = settings_for(tmp_path)
    late = date(2026, 3, 28)
    for read in (lambda: read_telemetry(settings.ingestion, tmp_path, not_before=late),
                 lambda: available_partitions(settings.ingestion, tmp_path, not_before=late)):
        with pytest.raises(IngestError) as info:
            read()
        message = one_line_error(info.value)
        assert message.startswith("rig_A1.csv: line 2, column 'Zeit': timestamp '28.03.2026 00:00:00' (UTC day "
                                  "2026-03-27) is before partitions.start_date 2026-03-28 (and 9 more rows)"), message


def test_the_demo_plan_refuses_rows_before_the_start_date_naming_the_file(tmp_path):
    from itap_assets.demo import data_partitions

    write(tmp_path, "rig_A1.csv", "\n".join(rig_lines()[:3]) + "\n")
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    config["ingestion"].update({"path": str(tmp_path / "*.csv"), "settle_seconds": 0})
    config["partitions"] = {"start_date": "2026-04-01"}
    with pytest.raises(IngestError, match=r"rig_A1\.csv: line 2, column 'Zeit': .* before partitions\.start_date"):
        data_partitions(Settings.model_validate(config))


# ---------------------------------------------------------------------------------------------------- end to end


def test_e2e_ingest_files_accounts_for_every_file_and_a_rerun_replaces_its_rows(make_pipeline, tmp_path):
    from itap_assets_tests.conftest import run_graph

    data = tmp_path / "data"
    data.mkdir()
    lines = rig_lines()[:61]
    lines[3:3] = [";;;;;;"]
    write(data, "rig_A1.csv", "\n".join(lines) + "\n")
    write(data, ".rig_A1.csv", "partial")
    (data / "late").mkdir()
    write(data / "late", "rig_A1.csv", "\n".join(rig_lines()[:5]))  # no final line break: still being written
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    config["ingestion"].update({"path": [str(data / "*.csv"), str(data / "late/*.csv")], "settle_seconds": 0})
    p = make_pipeline(config)
    for _ in range(2):
        results = run_graph(p, [(date(2026, 3, 27), "A1")], until="telemetry_job")
        assert all(r.success for r in results)
    files = p.sql("SELECT * FROM ingest_files ORDER BY file")
    assert files.columns == list(ingest_accounting.INGEST_FILES_SCHEMA)
    files = files.with_columns(pl.col("file").str.strip_prefix(f"{data}/"))  # outside the project: absolute
    assert files.select("file", "status", "records", "ingested", "rejected").rows() == [
        (".rig_A1.csv", "skipped", None, None, None), ("late/rig_A1.csv", "incomplete", None, None, None),
        ("rig_A1.csv", "ingested", 61, 60, 1),
    ]
    a1 = files.row(2, named=True)
    assert a1["fingerprint"] == ingest_accounting.fingerprint((data / "rig_A1.csv").read_bytes())
    assert (a1["first_ts"].isoformat(), a1["last_ts"].isoformat()) == ("2026-03-27T23:00:00", "2026-03-27T23:59:00")
    meta = results[0].asset_materializations_for_node("raw_telemetry")[0].metadata
    assert meta["files_incomplete"].value == 1 and meta["rejected_at_ingestion"].value == 1


def test_e2e_a_bad_file_fails_the_run_with_its_one_line_message_and_no_chained_traceback(make_pipeline, tmp_path):
    import dagster as dg

    from itap_assets_tests.conftest import run_graph

    data = tmp_path / "data"
    data.mkdir()
    lines = rig_lines()[:5]
    lines[2] = lines[2].replace(";ok", ';"offen')
    write(data, "rig_A1.csv", "\n".join(lines) + "\n")
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    config["ingestion"].update({"path": str(data / "*.csv"), "settle_seconds": 0})
    p = make_pipeline(config)
    with pytest.raises(dg.Failure) as info:
        run_graph(p, [(date(2026, 3, 27), "A1")], until="telemetry_job")
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "\n" not in info.value.description
    assert info.value.description.endswith("rig_A1.csv: line 3, column 'Kommentar': a quoted cell is never closed "
                                           "(an unbalanced '\"'; it would swallow every later line)")
