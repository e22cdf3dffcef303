"""storage.mode: parquet — one Parquet file per partition, SQL through views, ledgers as one file per append; and
the whole graph giving the DuckDB mode's tables, on local disk and on an S3-protocol server."""

from __future__ import annotations

import os
import time
from datetime import date, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from itap_assets import storage
from itap_assets.resources import DUCKDB_POOL, NOTIFICATIONS_POOL, delivery_pool, writer_pool
from itap_assets.settings import Settings, SettingsError, load_settings
from itap_assets_tests.conftest import run_graph, write_config
from itap_assets_tests.s3_server import s3_server  # noqa: F401 - the fixture
from itap_assets_tests.storage_modes import content_hash, deployment, parquet_settings, stored_tables

D1, D2, D3 = date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)


def rows(day: date, device: str, n: int = 3, **extra) -> pl.DataFrame:
    """n rows of one (day, device) partition, a minute apart."""
    return pl.DataFrame({"ts": [f"{day}T00:{i:02d}" for i in range(n)], "day": [day] * n, "device_id": [device] * n,
                         "x": [float(i) for i in range(n)], **extra}).with_columns(pl.col("ts").str.to_datetime())


def ack(alert_id: str) -> pl.DataFrame:
    return pl.DataFrame({"alert_id": [alert_id], "action": ["ack"], "actor": ["me"], "note": [None],
                         "acted_at": [datetime(2026, 1, 2)], "silenced_until": [None]},
                        schema_overrides={"note": pl.String, "silenced_until": pl.Datetime("us")})


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A Parquet-mode deployment on local disk; returns (catalog path, tree)."""
    p = deployment(monkeypatch, tmp_path, parquet_settings(str(tmp_path / "parquet")))
    p.instance.dispose()
    return p.db_path, storage.tree_for(p.db_path)


def keys_of(*pairs) -> pl.DataFrame:
    return storage.partition_frame([d for d, _ in pairs], [dev for _, dev in pairs])


def write(db, table, frame, *pairs):
    return storage.replace_partitions(db, "main", table, frame, keys_of(*pairs))


def test_each_partition_is_its_own_file_under_the_documented_path(tree):
    db, t = tree
    write(db, "t", pl.concat([rows(D1, "A"), rows(D2, "B")]), (D1, "A"), (D2, "B"))
    storage.replace_partitions(db, "main", "reg", pl.DataFrame({"device_id": ["A"], "v": [1]}),
                               storage.partition_frame(None, ["A"]))
    storage.replace_partitions(db, "main", "whole", pl.DataFrame({"v": [1]}), None)
    root = Path(t.root.path)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("part.parquet") if "_schema" not in str(p)
                   and "0001-01-01" not in str(p))
    assert files == ["reg/device_id=A/part.parquet", "t/day=2026-01-01/device_id=A/part.parquet",
                     "t/day=2026-01-02/device_id=B/part.parquet", "whole/part.parquet"]
    assert storage.read_partitions(db, "main", "t", keys_of((D2, "B"))).equals(rows(D2, "B"))


def test_a_file_is_written_under_a_temporary_name_and_renamed_so_a_crash_leaves_the_old_one(tree, monkeypatch):
    db, t = tree
    write(db, "t", rows(D1, "A"), (D1, "A"))
    moves = []
    real_mv = t.fs.mv
    monkeypatch.setattr(t.fs, "mv", lambda a, b: (moves.append((a, b)), real_mv(a, b)))
    write(db, "t", rows(D1, "A", 5), (D1, "A"))
    (source, target), = moves
    assert Path(target).name == "part.parquet" and Path(source).name.startswith(".part.parquet.")
    assert Path(source).parent == Path(target).parent  # a rename within the directory: atomic

    monkeypatch.setattr(pl.DataFrame, "write_parquet", lambda self, sink: (sink.write(b"PAR1 half"), 1 / 0))
    with pytest.raises(ZeroDivisionError):
        write(db, "t", rows(D1, "A", 7), (D1, "A"))
    monkeypatch.undo()
    assert storage.read_partitions(db, "main", "t", keys_of((D1, "A"))).height == 5
    assert not list(Path(t.root.path).rglob("*.tmp"))


def test_a_rematerialization_replaces_exactly_its_partitions_and_an_empty_one_loses_its_file(tree):
    db, t = tree
    pairs = [(D1, "A"), (D1, "B"), (D2, "A")]
    write(db, "t", pl.concat([rows(d, dev) for d, dev in pairs]), *pairs)
    kept = t.part_path("t", {"day": D1, "device_id": "B"}).path
    before = os.stat(kept).st_mtime_ns
    # D1|A gets new rows, D2|A has none now: its file goes (no stale rows), D1|B is not touched.
    assert write(db, "t", rows(D1, "A", 1), (D1, "A"), (D2, "A")) == 1
    assert os.stat(kept).st_mtime_ns == before
    assert not t.fs.exists(t.part_path("t", {"day": D2, "device_id": "A"}).path)
    everything = storage.read_partitions(db, "main", "t", None)
    assert everything.group_by("day", "device_id").len().sort("day", "device_id").rows() == [
        (D1, "A", 1), (D1, "B", 3)]
    # Every partition empty: the table keeps its columns.
    write(db, "t", rows(D1, "A").clear(), (D1, "A"), (D1, "B"))
    empty = storage.read_partitions(db, "main", "t", None)
    assert empty.height == 0 and empty.columns == ["ts", "day", "device_id", "x"]
    with storage.connect(db) as con:
        assert con.execute("SELECT count(*) FROM itap.t").fetchall() == [(0,)]


def test_chunks_write_whole_partitions_and_empty_the_rest(tree):
    db, _ = tree
    write(db, "t", pl.concat([rows(D1, "A"), rows(D2, "A")]), (D1, "A"), (D2, "A"))
    chunks = storage.FrameChunks(iter([rows(D1, "A", 2)]))
    assert storage.replace_partitions(db, "main", "t", chunks, keys_of((D1, "A"), (D2, "A"))) == 2
    assert storage.read_partitions(db, "main", "t", None).height == 2
    twice = storage.FrameChunks(iter([rows(D1, "A", 1), rows(D1, "A", 1)]))
    with pytest.raises(storage.StorageError, match="a partition spans two chunks"):
        storage.replace_partitions(db, "main", "t", twice, keys_of((D1, "A")))


def test_range_and_previous_day_reads_and_the_model_registry_read_as_in_the_duckdb_mode(tree, tmp_path):
    db, _ = tree
    pairs = [(d, dev) for d in (D1, D2, D3) for dev in ("A", "B")]
    frame = pl.concat([rows(d, dev) for d, dev in pairs])
    write(db, "t", frame, *pairs)
    duck = tmp_path / "duck.duckdb"  # not ITAP_DB_PATH: the DuckDB mode
    storage.replace_partitions(duck, "main", "t", frame, keys_of(*pairs))
    for wanted in ([(D2, "A"), (D3, "A")], [(D1, "B"), (D3, "A")], [(D3, "B"), (D2, "B")], []):  # D-1 and D
        got = storage.read_partitions(db, "main", "t", keys_of(*wanted))
        assert got.equals(storage.read_partitions(duck, "main", "t", keys_of(*wanted)))
    registry = pl.DataFrame({"device_id": ["A", "B"], "version": [1, 1], "blob": [b"\x00\x01", b"\x02"]})
    devices = storage.partition_frame(None, ["A", "B"])
    for path in (db, duck):
        storage.replace_partitions(path, "main", "model", registry, devices)
        storage.replace_partitions(path, "main", "model", registry.filter(pl.col("device_id") == "B")
                                   .with_columns(version=pl.lit(2)), storage.partition_frame(None, ["B"]))
    assert storage.read_partitions(db, "main", "model", None).equals(storage.read_partitions(duck, "main", "model",
                                                                                             None))
    with pytest.raises(storage.StorageError, match="table main.nothing|table nothing does not exist"):
        storage.read_partitions(db, "main", "nothing", None)


def test_a_new_column_reads_null_in_older_files_and_a_struct_never_meets_text(tree):
    db, _ = tree
    write(db, "t", rows(D1, "A"), (D1, "A"))
    write(db, "t", rows(D2, "A", note=["n"] * 3), (D2, "A"))
    both = storage.read_partitions(db, "main", "t", None)
    assert both.columns == ["ts", "day", "device_id", "x", "note"]
    assert both["note"].to_list() == [None] * 3 + ["n"] * 3
    with storage.connect(db) as con:
        assert con.execute("SELECT count(note) FROM itap.t").fetchall() == [(3,)]
    with pytest.raises(storage.StorageError, match="column note is String.*Struct.*DROP TABLE t"):
        write(db, "t", rows(D3, "A", note=[{"a": 1}] * 3), (D3, "A"))


def test_ledgers_append_one_file_each_keep_their_constraints_and_show_the_latest_outcome(tree):
    db, t = tree
    outbox = pl.DataFrame({
        "notification_id": ["n1"], "receiver": ["ops"], "seq": [1], "alert_id": ["a1"], "event": ["firing"],
        "revision": pl.Series([1], dtype=pl.Int32), "severity": ["WARNING"], "cause": [None], "route": [None],
        "payload": ["{}"], "created_at": [datetime(2026, 1, 1)], "run_id": [None], "status": ["pending"],
        "sent_at": [None]}, schema_overrides={"cause": pl.String, "route": pl.String, "run_id": pl.String,
                                              "sent_at": pl.Datetime("us")})
    with storage.open_ledgers(db, "main") as con:
        assert con.execute("SELECT count(*) FROM notification_outbox").fetchall() == [(0,)]
        storage.append_rows(con, "main", "notification_outbox", outbox)
        with pytest.raises(duckdb.ConstraintException, match="Duplicate key"):
            storage.append_rows(con, "main", "notification_outbox", outbox)
        with pytest.raises(duckdb.ConstraintException):  # CHECK (status IN ...)
            storage.append_rows(con, "main", "notification_outbox",
                                outbox.with_columns(notification_id=pl.lit("n2"), status=pl.lit("lost")))
        storage.append_rows(con, "main", "alert_acks", ack("a1"))
    with storage.connect(db) as con:
        storage.update_row(con, "main", "notification_outbox", {"notification_id": "n1", "receiver": "ops"},
                           {"status": "sent", "sent_at": datetime(2026, 1, 3)})
        assert con.execute("SELECT status, sent_at IS NOT NULL FROM notification_outbox").fetchall() == [
            ("sent", True)]
        assert con.execute("SELECT actor FROM itap.alert_acks").fetchall() == [("me",)]
    files = sorted(p.name for p in (Path(t.root.path) / "_ledgers" / "notification_outbox").glob("*.parquet"))
    assert len(files) == 3 and files[-1] == "_schema.parquet"  # the schema file, the append, the outcome


def test_the_catalog_file_has_every_view_and_a_read_only_session_on_it_blocks_no_writer(tree):
    db, _ = tree
    write(db, "events", rows(D1, "A", alert_id=["x", "y", "z"]), (D1, "A"))
    reader = duckdb.connect(str(db), read_only=True)  # e.g. `duckdb -readonly data/itap.duckdb`, left open
    try:
        assert reader.execute("SELECT count(*) FROM itap.events").fetchall() == [(3,)]
        assert reader.execute("SELECT count(*) FROM itap.alert_acks").fetchall() == [(0,)]
        started = time.monotonic()
        write(db, "events", rows(D2, "A", 2, alert_id=["u", "v"]), (D2, "A"))  # a new partition
        write(db, "scores", rows(D1, "A"), (D1, "A"))  # a new table: the catalog is rebuilt
        with storage.open_ledgers(db, "main") as con:
            storage.append_rows(con, "main", "alert_acks", ack("x"))
        assert time.monotonic() - started < 5
        # The open session reads the new files through its views; a new session also sees the new table.
        assert reader.execute("SELECT count(*) FROM itap.events").fetchall() == [(5,)]
        assert reader.execute("SELECT count(*) FROM itap.alert_acks").fetchall() == [(1,)]
    finally:
        reader.close()
    with duckdb.connect(str(db), read_only=True) as again:
        assert again.execute("SELECT count(*) FROM itap.scores").fetchall() == [(3,)]
        assert again.execute("SELECT day, count(*) FROM itap.events GROUP BY ALL ORDER BY ALL").fetchall() == [
            (D1, 3), (D2, 2)]


def test_a_duckdb_mode_database_is_never_replaced_by_a_catalog(tmp_path, monkeypatch):
    db = tmp_path / "itap.duckdb"
    storage.replace_partitions(db, "main", "t", rows(D1, "A"), keys_of((D1, "A")))  # DuckDB mode: a table
    p = deployment(monkeypatch, tmp_path, parquet_settings(str(tmp_path / "parquet")))
    p.instance.dispose()
    with pytest.raises(storage.StorageError, match="is not a Parquet-mode catalog"):
        storage.replace_partitions(db, "main", "t", rows(D1, "A"), keys_of((D1, "A")))


def test_the_mode_decides_the_pools_and_a_bad_storage_setting_is_one_line(tmp_path, monkeypatch):
    duck, parquet = Settings(), Settings.model_validate(parquet_settings("/x"))
    assert (writer_pool(duck), delivery_pool(duck)) == (DUCKDB_POOL, DUCKDB_POOL)
    assert (writer_pool(parquet), delivery_pool(parquet)) == (None, NOTIFICATIONS_POOL)
    with pytest.raises(SettingsError, match=r"itap.yaml: storage: .*storage.mode: parquet needs storage.root"):
        load_settings(write_config(tmp_path / "itap.yaml", {"storage": {"mode": "parquet"}}))
    p = deployment(monkeypatch, tmp_path / "nope", parquet_settings("nope://bucket/itap"))
    p.instance.dispose()
    with pytest.raises(storage.StorageError, match=r"^storage.root: cannot use 'nope://bucket/itap': .*nope"):
        write(p.db_path, "t", rows(D1, "A"), (D1, "A"))


def test_on_object_storage_files_views_and_ledgers_work_alike(s3_server, tmp_path, monkeypatch):  # noqa: F811
    url = s3_server.bucket("itap-unit") + "/itap"
    p = deployment(monkeypatch, tmp_path, parquet_settings(url, s3_server.storage_options))
    p.instance.dispose()
    db = p.db_path
    write(db, "t", pl.concat([rows(D1, "A"), rows(D2, "A")]), (D1, "A"), (D2, "A"))
    write(db, "t", rows(D1, "A", 1), (D1, "A"), (D2, "A"))
    assert storage.read_partitions(db, "main", "t", None).equals(rows(D1, "A", 1))
    tree = storage.tree_for(db)
    assert tree.fs.exists(tree.part_path("t", {"day": D1, "device_id": "A"}).path)
    assert not tree.fs.exists(tree.part_path("t", {"day": D2, "device_id": "A"}).path)
    with storage.connect(db) as con:
        assert con.execute("SELECT count(*) FROM itap.t WHERE day = ?", [D1]).fetchall() == [(1,)]
        assert con.execute("SELECT count(*) FROM itap.alert_acks").fetchall() == [(0,)]


# --- the whole graph: the same tables in both modes ------------------------------------------------------------

DEVICES = ["DEV-0001", "DEV-0002"]
DAYS = ["2026-01-01", "2026-01-02"]
# configs/itap.yaml's fleet and settings, smaller and coarser: the whole graph three times stays within seconds
# (on the S3 server every file costs requests).
DEMO = {"simulation": {"devices": 2, "days": 2, "sample_interval_s": 60, "fault_rate": 3.0, "seed": 3}}
MONTH_DEVICES = ["DEV-0001"]  # the device dimension is the demo's: here 30 days in one backfill run
MONTH = {"simulation": {"devices": 1, "days": 30, "sample_interval_s": 600, "healthy_days": 7, "fault_rate": 0.5,
                        "seed": 5}, "model": {"training": {"first_days": 7}}}


def build(monkeypatch, directory: Path, overrides: dict, devices, days) -> dict[str, pl.DataFrame]:
    p = deployment(monkeypatch, directory, overrides)
    try:
        assert all(r.success for r in run_graph(p, devices, days))
        return stored_tables(p, monkeypatch)
    finally:
        p.instance.dispose()


def assert_same_tables(duck: dict[str, pl.DataFrame], parquet: dict[str, pl.DataFrame]) -> None:
    assert sorted(parquet) == sorted(duck)
    for name, frame in duck.items():
        if content_hash(parquet[name]) != content_hash(frame):
            assert_frame_equal(parquet[name], frame, check_exact=True)  # says where they differ
            raise AssertionError(f"{name}: same rows, different content hash")
    assert duck["scores"].height and duck["v_alerts"].height and duck["model"].height


@pytest.fixture(scope="module")
def duckdb_demo(tmp_path_factory) -> dict[str, pl.DataFrame]:
    with pytest.MonkeyPatch.context() as mp:
        return build(mp, tmp_path_factory.mktemp("duck"), DEMO, DEVICES, DAYS)


def test_the_whole_graph_gives_the_duckdb_modes_tables_in_parquet_on_local_disk(duckdb_demo, tmp_path, monkeypatch):
    tables = build(monkeypatch, tmp_path, {**DEMO, **parquet_settings(str(tmp_path / "parquet"))}, DEVICES, DAYS)
    assert_same_tables(duckdb_demo, tables)


def test_the_whole_graph_gives_the_duckdb_modes_tables_in_parquet_on_s3(duckdb_demo, s3_server, tmp_path,  # noqa: F811
                                                                        monkeypatch):
    root = s3_server.bucket("itap-graph") + "/itap"
    tables = build(monkeypatch, tmp_path, {**DEMO, **parquet_settings(root, s3_server.storage_options)}, DEVICES,
                   DAYS)
    assert_same_tables(duckdb_demo, tables)


def test_a_month_backfill_gives_the_same_tables_in_both_modes(tmp_path, monkeypatch):
    days = [date(2026, 1, d).isoformat() for d in range(1, 31)]
    duck = build(monkeypatch, tmp_path / "duck", MONTH, MONTH_DEVICES, days)
    parquet = build(monkeypatch, tmp_path / "pq", {**MONTH, **parquet_settings(str(tmp_path / "pq" / "parquet"))},
                    MONTH_DEVICES, days)
    assert_same_tables(duck, parquet)
