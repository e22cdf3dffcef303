import subprocess
import sys
import textwrap
import time
from datetime import date

import duckdb
import polars as pl
import pytest

from itap_assets import storage


def frame(day: date, device: str, values: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"day": [day] * len(values), "device_id": [device] * len(values), "x": values})


D1, D2 = date(2026, 1, 1), date(2026, 1, 2)


def test_rewriting_a_partition_replaces_its_rows_and_leaves_others(tmp_path):
    db = tmp_path / "t.duckdb"
    both = pl.concat([frame(D1, "A", [1.0, 2.0]), frame(D2, "A", [3.0])])
    storage.replace_partitions(db, "main", "t", both, storage.partition_frame([D1, D2], ["A", "A"]))
    storage.replace_partitions(db, "main", "t", frame(D1, "A", [9.0]), storage.partition_frame([D1], ["A"]))
    storage.replace_partitions(db, "main", "t", frame(D1, "A", [9.0]), storage.partition_frame([D1], ["A"]))
    out = storage.read_partitions(db, "main", "t", None).sort("day")
    assert out["x"].to_list() == [9.0, 3.0]


@pytest.fixture
def one_chunk_per_batch(monkeypatch):
    monkeypatch.setattr(storage, "WRITE_BATCH_ROWS", 1)


def write_a_and_b(db):
    keys = storage.partition_frame([D1, D1], ["A", "B"])
    storage.replace_partitions(db, "main", "t", pl.concat([frame(D1, "A", [1.0]), frame(D1, "B", [2.0])]), keys)
    return keys


def test_chunks_replace_the_run_partitions(tmp_path, one_chunk_per_batch):
    db = tmp_path / "t.duckdb"
    keys = write_a_and_b(db)
    chunks = storage.FrameChunks(iter([frame(D1, "A", [3.0, 4.0])]), {"note": 1})
    assert storage.replace_partitions(db, "main", "t", chunks, keys) == 2
    # B had no rows in the new output: its old rows are gone too
    assert storage.read_partitions(db, "main", "t", None)["x"].to_list() == [3.0, 4.0]


def test_a_failing_chunk_leaves_each_partition_old_or_new_never_half(tmp_path, one_chunk_per_batch):
    db = tmp_path / "t.duckdb"
    keys = write_a_and_b(db)

    def chunks():
        yield frame(D1, "A", [3.0])
        raise RuntimeError("features of B failed")

    with pytest.raises(RuntimeError, match="B failed"):
        storage.replace_partitions(db, "main", "t", storage.FrameChunks(chunks()), keys)
    assert storage.read_partitions(db, "main", "t", None)["x"].to_list() == [3.0, 2.0]


def test_chunks_must_hold_whole_partitions_of_the_run(tmp_path, one_chunk_per_batch):
    db = tmp_path / "t.duckdb"
    keys = write_a_and_b(db)
    split = storage.FrameChunks([frame(D1, "A", [7.0]), frame(D1, "A", [8.0])])
    with pytest.raises(storage.StorageError, match="spans two chunks"):
        storage.replace_partitions(db, "main", "t", split, keys)
    outside = storage.FrameChunks([frame(D2, "B", [9.0])])
    with pytest.raises(storage.StorageError, match="outside this run's keys"):
        storage.replace_partitions(db, "main", "t", outside, keys)
    assert storage.read_partitions(db, "main", "t", None)["x"].to_list() == [7.0, 2.0]


def test_rows_outside_the_run_partitions_are_refused(tmp_path):
    with pytest.raises(storage.StorageError, match="outside this run's keys"):
        storage.replace_partitions(
            tmp_path / "t.duckdb", "main", "t", frame(D2, "A", [1.0]), storage.partition_frame([D1], ["A"])
        )


def test_a_text_day_column_is_refused(tmp_path):
    text_day = frame(D1, "A", [1.0]).with_columns(pl.col("day").cast(pl.String))
    keys = storage.partition_frame([D1], ["A"])
    with pytest.raises(storage.StorageError, match="'day' must be a Date"):
        storage.replace_partitions(tmp_path / "t.duckdb", "main", "t", text_day, keys)


def test_day_is_stored_as_date(tmp_path):
    db = tmp_path / "t.duckdb"
    storage.replace_partitions(db, "main", "t", frame(D1, "A", [1.0]), storage.partition_frame([D1], ["A"]))
    with duckdb.connect(str(db)) as con:
        assert con.execute("SELECT data_type FROM information_schema.columns WHERE column_name='day'").fetchone()[0] == "DATE"


@pytest.mark.parametrize("bad", ["a'b", "x; DROP TABLE t", "two words", "..", "a" * 65, "ü"])
def test_hostile_device_ids_are_refused_before_sql(bad):
    with pytest.raises(storage.StorageError, match="not allowed"):
        storage.partition_frame([D1], [bad])


@pytest.mark.parametrize("bad", ['t"; drop', "T", "1abc", "a-b"])
def test_hostile_table_names_are_refused(tmp_path, bad):
    with pytest.raises(storage.StorageError, match="not a valid table"):
        storage.read_partitions(tmp_path / "t.duckdb", "main", bad, None)


def test_new_columns_are_added_to_an_existing_table(tmp_path):
    db = tmp_path / "t.duckdb"
    keys = storage.partition_frame([D1], ["A"])
    storage.replace_partitions(db, "main", "t", frame(D1, "A", [1.0]), keys)
    storage.replace_partitions(db, "main", "t", frame(D1, "A", [2.0]).with_columns(pl.lit(5).alias("y")), keys)
    assert storage.read_partitions(db, "main", "t", None).select("x", "y").row(0) == (2.0, 5)


def test_nested_columns_round_trip_and_never_turn_into_text(tmp_path):
    db = tmp_path / "t.duckdb"
    shares = pl.Struct({"Vibration": pl.Float32, "RPM": pl.Float32})
    rows = pl.DataFrame({"day": [D1], "device_id": ["A"], "family_pct": [{"Vibration": 70.0, "RPM": 30.0}],
                         "top_features": [[{"feature": "vib_z", "pct": 60.0}]]}).cast({"family_pct": shares})
    storage.replace_partitions(db, "main", "t", rows, None)
    assert storage.read_partitions(db, "main", "t", None).equals(rows)
    # given rows of an older layout, where the same column was JSON text
    as_text = rows.with_columns(pl.col("family_pct").struct.json_encode())
    # then the write is refused with what to do, and the table keeps its rows
    with pytest.raises(storage.StorageError, match="column family_pct is STRUCT.*VARCHAR.*DROP TABLE main.t"):
        storage.replace_partitions(db, "main", "t", as_text, None)
    assert storage.read_partitions(db, "main", "t", None).equals(rows)


def test_a_locked_file_is_waited_for_not_failed(tmp_path):
    db = tmp_path / "t.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, time
            con = duckdb.connect({str(db)!r})
            print("locked", flush=True)
            time.sleep(1.5)
            con.close()
        """)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    storage.replace_partitions(db, "main", "t", frame(D1, "A", [1.0]), storage.partition_frame([D1], ["A"]))
    assert time.monotonic() - started > 0.5
    holder.wait(timeout=10)
    assert storage.read_partitions(db, "main", "t", None).height == 1


def test_reading_a_missing_table_names_the_asset(tmp_path):
    with pytest.raises(storage.StorageError, match="materialize asset 'nope' first"):
        storage.read_partitions(tmp_path / "t.duckdb", "main", "nope", None)


def test_reading_partitions_returns_exactly_those_in_partition_and_time_order(tmp_path):
    db = tmp_path / "t.duckdb"
    rows = pl.DataFrame({"day": [D1, D1, D2, D2, D1, D2], "device_id": ["B", "B", "A", "B", "A", "A"],
                         "ts": [2, 1, 1, 1, 1, 2], "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    storage.replace_partitions(db, "main", "t", rows, None)
    # a diagonal: inside the bounding box of days x devices, but not a rectangle
    keys = storage.partition_frame([D1, D2], ["B", "A"])
    out = storage.read_partitions(db, "main", "t", keys)
    assert out.select("device_id", "day", "ts").rows() == [("A", D2, 1), ("A", D2, 2), ("B", D1, 1), ("B", D1, 2)]
