"""A full disk (issue 19): a rerun whose write hits it says "disk full" and names the database file, instead of
DuckDB's follow-up "cannot rollback - no transaction is active"; the partition keeps its old rows.

The full disk is real, not a mock: the database's WAL is a symlink to /dev/full, on which every write fails with
the kernel's ENOSPC ("No space left on device"), so DuckDB fails its COMMIT exactly as on a full filesystem
(Linux: /dev/full).
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from itap_assets import storage
from itap_assets.storage import StorageError

DAY, DEVICE = date(2026, 1, 1), "DEV-0001"


def rows(value: int) -> pl.DataFrame:
    return pl.DataFrame({"day": [DAY] * 3, "device_id": [DEVICE] * 3, "x": [value] * 3})


def test_a_rerun_on_a_full_disk_says_disk_full_and_names_the_database_file(tmp_path):
    db = tmp_path / "itap.duckdb"
    keys = storage.partition_frame([DAY], [DEVICE])
    storage.replace_partitions(db, "main", "t", rows(1), keys)  # the first run, with room on the disk
    wal = Path(f"{db}.wal")
    assert not wal.exists()  # DuckDB checkpointed on close
    wal.symlink_to("/dev/full")

    with pytest.raises(StorageError, match=rf"^disk full: cannot write the database file {re.escape(str(db))};") as info:
        storage.replace_partitions(db, "main", "t", rows(2), keys)
    assert "No space left on device" in str(info.value) and "cannot rollback" not in str(info.value)

    wal.unlink()  # room again: the partition holds its old rows, and the rerun succeeds
    assert storage.read_partitions(db, "main", "t", keys)["x"].to_list() == [1, 1, 1]
    storage.replace_partitions(db, "main", "t", rows(2), keys)
    assert storage.read_partitions(db, "main", "t", keys)["x"].to_list() == [2, 2, 2]
