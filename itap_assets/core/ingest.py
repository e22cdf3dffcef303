"""Bring your own telemetry: read CSV / Parquet exports into the canonical raw telemetry frame.

Pure Polars (no Dagster). `IngestionSettings` says where the files are and how their columns map onto ITAP's
canonical columns; this module finds the files, reads them and returns

    ts (Datetime us, naive UTC) | day (Date, UTC) | device_id | state | <sensors…> | fault_tag | fault_id

sorted by (device_id, ts). The split of labour with `core.validation` is deliberate:

* A file that cannot be read *as a whole* — wrong encoding, binary or truncated content, missing or duplicated
  mapped columns, a timestamp that cannot be understood, a device id or label that is not allowed — raises
  `IngestError` naming the file, the line (1-based as an editor shows it, header = line 1; Parquet: data row)
  and the column. Nothing of such a file is loaded, so a bad export never half-lands.
* Bad *values* in a good file pass through: CSV sensor columns stay text (only a decimal comma is turned into a
  point), so validation can quarantine "abc" with its original text; an empty cell is NULL (a missing sample).

Time: timestamps without an offset are local wall-clock time in `ingestion.timezone` and are stored as naive UTC.
A local time skipped by the spring DST switch does not exist: that is an error naming the line. A local time in
the repeated autumn hour is ambiguous: it resolves to the earlier occurrence (summer time), except when the rows
of one device in one file run through that hour twice in order — the ambiguous rows are non-decreasing apart from
exactly one backward jump — then the rows after the jump are the second pass (winter time). Timestamps that carry
an offset (`…Z`, `…+02:00`, or a tz-aware Parquet column) are exact and ignore `timezone`.

Every file is accounted for (`core.ingest_accounting`, table `itap.ingest_files`): records counted on the bytes =
rows ingested + rows rejected at ingestion (a record with no value in any mapped column, such as `;;;;;`). A file
still being written (no final line break, changed during the read, younger than `ingestion.settle_seconds`) is not
read (`IncompleteFile`; read by the next run). Hidden files (a name starting with '.') and, unless
`ingestion.follow_symlinks`, files reached through a symbolic link are skipped and reported, never read.

Other choices: a file with a header but no data rows is an error ("no data rows"), blank lines are skipped, a
glob that matches no readable file is an error, a relative glob may not leave `root` via `..`, a duplicated
header name is an error only when the config maps that name (it would be ambiguous), an empty state cell stays
NULL (validation quarantines it as `unknown_state`), an empty label cell means "no label" unless the mapping has
a key "". `fault_id` names each contiguous run (per device, in time order) of one non-null tag:
`{device}-{tag}-{run start UTC %Y%m%dT%H%M%S}`; it is computed over everything read, before the days/devices
filter, so it does not depend on which partitions are requested.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from itap_assets.core.ingest_accounting import FileAccount, fingerprint, snapshot
from itap_assets.core.ingest_csv import read_bytes, read_csv_file
from itap_assets.core.ingest_files import (
    CSV_SUFFIXES, PARQUET_SUFFIXES, ROW, IncompleteFile, IngestError, Source, Survey, check_settled,
    device_from_path, discover_files, display_name, file_kind, missing_columns, quoted_cell, survey_files,
)
from itap_assets.settings import ID_PATTERN, IngestionSettings

KEY_COLUMNS = ("ts", "day", "device_id", "state")
LABEL_COLUMNS = ("fault_tag", "fault_id")
RESERVED = (*KEY_COLUMNS, *LABEL_COLUMNS)

_ISO_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")
_ISO_AWARE = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z")
_OFFSET_DIRECTIVES = ("%z", "%:z", "%#z", "%::z", "%Z")
# A number written with a decimal comma: "12,5", "-0,25", ",5", "1,5e3" (a plain integer needs no change).
_COMMA_NUMBER = r"^\s*[+-]?(\d+,\d*|,\d+)([eE][+-]?\d+)?\s*$"


def _roles(ingestion: IngestionSettings) -> dict[str, str]:
    """Source columns the config names -> which setting names them (in reading order, no duplicates)."""
    roles: dict[str, str] = {}

    def add(column: str | None, role: str) -> None:
        if column is not None and column not in roles:
            roles[column] = role

    add(ingestion.timestamp_column, "timestamp_column")
    add(ingestion.device_column, "device_column")
    add(ingestion.state_column, "state_column")
    add(ingestion.label_column, "label_column")
    for source in ingestion.columns:
        add(source, "columns")
    return roles


def _check_mapping(ingestion: IngestionSettings) -> None:
    clash = sorted(set(ingestion.columns.values()) & set(RESERVED))
    if clash:
        raise IngestError(f"ingestion.columns maps to sensor name(s) {clash}, which are canonical column names")


def _read_parquet(source: Source, roles: dict[str, str], read: list[str], settle_seconds: float
                  ) -> tuple[pl.DataFrame, int, str]:
    """The mapped columns, the record count of the file's own metadata and the content fingerprint."""
    import pyarrow.parquet as pq

    try:
        before = snapshot(source.path)
        data = source.path.read_bytes()
    except OSError as exc:
        raise IngestError(f"{source.display}: cannot read file: {exc.strerror or exc}", file=source.display) from exc
    size = len(data)
    if size == 0:
        raise source.error("empty file (0 bytes)")
    if data[:4] != b"PAR1" or data[-4:] != b"PAR1" or size < 12:
        raise source.error("not a readable Parquet file (no PAR1 magic at start and end: truncated or not Parquet)")
    buffer = io.BytesIO(data)
    try:
        meta = pq.read_metadata(buffer)
        schema = meta.schema.to_arrow_schema()
    except Exception as exc:  # pyarrow raises several types for corrupt footers
        raise source.error(f"not a readable Parquet file (corrupt footer?): {_first_line(exc)}") from None
    names = schema.names
    for name in roles:
        if names.count(name) > 1:
            raise source.error(f"the schema names this column {names.count(name)} times", column=name)
    missing = missing_columns(source, names, roles)
    if missing is not None:
        raise missing
    for name in read:
        kind = _unreadable_type(schema.field(name).type)
        if kind is not None:
            raise source.error(f"has type {schema.field(name).type} ({kind}); ITAP reads numbers, text, booleans and "
                               "date-times", column=name)
    try:
        buffer.seek(0)
        frame = pl.read_parquet(buffer, columns=read).with_row_index(ROW)
    except Exception as exc:
        raise source.error(f"not a readable Parquet file (corrupt or truncated data): {_first_line(exc)}") from None
    check_settled(source, before, snapshot(source.path), settle_seconds)
    if frame.height == 0:
        raise source.error("no data rows")
    return frame, meta.num_rows, fingerprint(data)


def _unreadable_type(arrow_type) -> str | None:
    """Why a Parquet column type cannot be telemetry (None when it can)."""
    import pyarrow.types as pat

    if pat.is_nested(arrow_type):
        return "a nested list, struct or map"
    if pat.is_binary(arrow_type) or pat.is_large_binary(arrow_type) or pat.is_fixed_size_binary(arrow_type):
        return "raw bytes"
    if pat.is_dictionary(arrow_type):
        return _unreadable_type(arrow_type.value_type)
    return None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


# --------------------------------------------------------------------------------------------------- columns


def _text(column: str, dtype: pl.DataType) -> pl.Expr:
    """A key/label column as stripped text (NULL when empty); integral floats lose their '.0'."""
    expr = pl.col(column)
    if dtype.is_float():
        expr = pl.when(expr == expr.round(0)).then(expr.cast(pl.Int64, strict=False).cast(pl.String)).otherwise(
            expr.cast(pl.String))
    elif dtype != pl.String:
        expr = expr.cast(pl.String)
    expr = expr.str.strip_chars()
    return pl.when(expr == "").then(None).otherwise(expr)


def _first(frame: pl.DataFrame, condition: pl.Expr) -> tuple[int, dict, int] | None:
    """First offending row (in file order): its row index, the row, and how many rows offend."""
    bad = frame.filter(condition)
    if bad.height == 0:
        return None
    row = bad.row(0, named=True)
    return row[ROW], row, bad.height


def _more(count: int) -> str:
    return f" (and {count - 1} more row{'s' if count > 2 else ''})" if count > 1 else ""


def _timestamps(frame: pl.DataFrame, source: Source, ingestion: IngestionSettings, device: pl.Expr) -> pl.Series:
    """Parse the timestamp column into naive UTC; error (naming line and value) on anything not understood."""
    col = ingestion.timestamp_column
    dtype = frame.schema[col]
    fmt = ingestion.timestamp_format
    local: pl.Expr | None = None
    aware: pl.Expr | None = None
    if dtype == pl.String:
        raw = pl.col(col).str.strip_chars()
        if fmt is not None:
            if any(d in fmt for d in _OFFSET_DIRECTIVES):
                aware = raw.str.strptime(pl.Datetime("us", "UTC"), fmt, strict=False)
            else:
                local = raw.str.strptime(pl.Datetime("us"), fmt, strict=False)
        else:
            iso = raw.str.replace(r"^(\d{4}-\d{2}-\d{2})[ T]", "${1}T")
            local = pl.coalesce(iso.str.strptime(pl.Datetime("us"), f, strict=False) for f in _ISO_NAIVE)
            aware = pl.coalesce(iso.str.strptime(pl.Datetime("us", "UTC"), f, strict=False) for f in _ISO_AWARE)
    elif isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            local = pl.col(col).cast(pl.Datetime("us"))
        else:
            aware = pl.col(col).dt.convert_time_zone("UTC").cast(pl.Datetime("us", "UTC"))
    elif dtype == pl.Date:
        local = pl.col(col).cast(pl.Datetime("us"))
    else:
        raise source.error(f"timestamp column has type {dtype}; expected date-times or text", column=col)
    if aware is not None:
        aware = aware.dt.convert_time_zone("UTC").dt.replace_time_zone(None)

    frame = frame.select(
        ROW,
        pl.col(col).alias("__raw"),
        (local if local is not None else pl.lit(None, dtype=pl.Datetime("us"))).alias("__local"),
        (aware if aware is not None else pl.lit(None, dtype=pl.Datetime("us"))).alias("__aware"),
        device.alias("__device"),
    )
    empty = _first(frame, pl.col("__raw").is_null())
    if empty is not None:
        raise source.error(f"empty timestamp{_more(empty[2])}", empty[0], col)
    bad = _first(frame, pl.col("__local").is_null() & pl.col("__aware").is_null())
    if bad is not None:
        how = f"with timestamp_format {fmt!r}" if fmt is not None else "as ISO 8601 (set timestamp_format:)"
        raise source.error(f"cannot parse timestamp {str(bad[1]['__raw'])!r} {how}{_more(bad[2])}", bad[0], col)

    tz = ingestion.timezone
    if tz == "UTC" or frame["__local"].null_count() == frame.height:
        return frame.select(pl.coalesce("__aware", "__local")).to_series()

    frame = frame.with_columns(
        pl.col("__local").dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").alias("__early"),
        pl.col("__local").dt.replace_time_zone(tz, ambiguous="latest", non_existent="null").alias("__late"),
    )
    gap = _first(frame, pl.col("__local").is_not_null() & pl.col("__early").is_null())
    if gap is not None:
        raise source.error(
            f"local time {str(gap[1]['__raw'])!r} does not exist in {tz} (skipped by the daylight-saving "
            f"switch){_more(gap[2])}; check the export's clock or timezone", gap[0], col,
        )
    ambiguous = frame.filter(pl.col("__early") != pl.col("__late"))
    if ambiguous.height:
        group = [pl.col("__device"), pl.col("__local").dt.date()]
        back = (pl.col("__local") < pl.col("__local").shift(1)).over(group).fill_null(False)
        passes = ambiguous.with_columns(back.alias("__back")).with_columns(
            ((pl.col("__back").sum().over(group) == 1) & (pl.col("__back").cum_sum().over(group) >= 1)).alias("__2nd")
        )
        frame = frame.join(passes.select(ROW, "__2nd"), on=ROW, how="left", maintain_order="left")
    else:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Boolean).alias("__2nd"))
    utc = pl.when(pl.col("__2nd")).then(pl.col("__late")).otherwise(pl.col("__early"))
    utc = utc.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return frame.select(pl.coalesce("__aware", utc)).to_series()


def _sensor(column: str, dtype: pl.DataType, decimal: str) -> pl.Expr:
    """CSV text stays text (decimal comma -> point only where the text is such a number); numbers stay numbers."""
    expr = pl.col(column)
    if dtype == pl.String and decimal == ",":
        expr = pl.when(expr.str.contains(_COMMA_NUMBER)).then(expr.str.replace(",", ".", literal=True)).otherwise(expr)
    return expr


def _with_fault_ids(frame: pl.DataFrame) -> pl.DataFrame:
    """One id per contiguous run (per device, in row order) of the same non-null tag."""
    tag = pl.col("fault_tag")
    new_run = tag.is_not_null() & (tag != tag.shift(1)).over("device_id").fill_null(True)
    start = pl.when(new_run).then(pl.col("ts")).forward_fill().over("device_id")
    fault_id = pl.concat_str([pl.col("device_id"), pl.lit("-"), tag, pl.lit("-"), start.dt.strftime("%Y%m%dT%H%M%S")])
    return frame.with_columns(pl.when(tag.is_not_null()).then(fault_id).otherwise(None).alias("fault_id"))


def _canonical(frame: pl.DataFrame, source: Source, ingestion: IngestionSettings, device: str | None,
               not_before: date | None) -> pl.DataFrame:
    schema = frame.schema
    if device is not None:
        device_expr = pl.lit(device, dtype=pl.String)
    else:
        col = ingestion.device_column
        assert col is not None
        device_expr = _text(col, schema[col])
        bad = _first(frame, device_expr.is_null() | ~device_expr.str.contains(ID_PATTERN.pattern))
        if bad is not None:
            value = bad[1][col]
            what = "empty device id" if value is None or not str(value).strip() else (
                f"device id {quoted_cell(str(value))} is not allowed (ids match {ID_PATTERN.pattern})")
            raise source.error(f"{what}{_more(bad[2])}", bad[0], col)

    ts = _timestamps(frame, source, ingestion, device_expr)
    frame = frame.with_columns(ts.alias("__ts"))
    if not_before is not None:
        early = _first(frame, pl.col("__ts").dt.date() < not_before)
        if early is not None:
            raise source.error(
                f"timestamp {str(early[1][ingestion.timestamp_column]).strip()!r} (UTC day {early[1]['__ts'].date()}) "
                f"is before partitions.start_date {not_before}{_more(early[2])}; set an earlier start_date or "
                "remove these rows", early[0], ingestion.timestamp_column,
            )

    if ingestion.state_column is not None:
        state = _text(ingestion.state_column, schema[ingestion.state_column])
    else:
        state = pl.lit(ingestion.default_state, dtype=pl.String)

    tag = pl.lit(None, dtype=pl.String)
    if ingestion.label_column is not None:
        label_col = ingestion.label_column
        label = _text(label_col, schema[label_col])
        mapping = ingestion.label_mapping
        if mapping is None:
            tag = label
        else:
            unknown = label.is_not_null() & ~label.is_in(list(mapping))
            bad = _first(frame, unknown)
            if bad is not None:
                raise source.error(
                    f"label {str(bad[1][label_col]).strip()!r} is not in label_mapping (keys: "
                    f"{', '.join(repr(k) for k in mapping)}){_more(bad[2])}", bad[0], label_col,
                )
            filled = label.fill_null("") if "" in mapping else label
            tag = filled.replace_strict(mapping, default=None, return_dtype=pl.String)

    out = frame.select(
        pl.col("__ts").alias("ts"),
        pl.col("__ts").dt.date().alias("day"),
        device_expr.alias("device_id"),
        state.alias("state"),
        *(_sensor(src, schema[src], ingestion.decimal).alias(name) for src, name in ingestion.columns.items()),
        tag.alias("fault_tag"),
        pl.lit(None, dtype=pl.String).alias("fault_id"),
    )
    return out


def _source(path: Path, ingestion: IngestionSettings, root: Path) -> Source:
    path = Path(path)
    if not path.is_absolute():
        path = Path(root) / path
    kind = file_kind(path)
    display = display_name(path, Path(root))
    if kind is None:
        raise IngestError(f"{display}: unsupported file type {path.suffix!r} (CSV: {', '.join(CSV_SUFFIXES)}; "
                          f"Parquet: {', '.join(PARQUET_SUFFIXES)})", file=display)
    return Source(path=path, display=display, kind=kind, delimiter=ingestion.delimiter)


def _read(path: Path, ingestion: IngestionSettings, root: Path, *, keys_only: bool = False,
          device: str | None = None, not_before: date | None = None, settle_seconds: float = 0.0
          ) -> tuple[pl.DataFrame, FileAccount]:
    """One file's canonical rows and its account; every record is a row or a counted rejection, or the read
    fails (`IngestError`, `IncompleteFile`)."""
    _check_mapping(ingestion)
    source = _source(path, ingestion, root)
    if ingestion.device_from_path is not None and device is None:
        device = device_from_path(source.path, ingestion, root)
    roles = _roles(ingestion)
    read = list(roles)  # the planning read judges a record's emptiness on the same columns as ingestion
    if source.kind == "csv":
        data = read_bytes(source, settle_seconds)
        csv_read = read_csv_file(source, ingestion, roles, read, data)
        frame, records, rejected = csv_read.frame, csv_read.records, csv_read.rejected
        account = FileAccount(source.display, fingerprint=fingerprint(data), detail=csv_read.detail)
    else:
        frame, records, digest = _read_parquet(source, roles, read, settle_seconds)
        rejected = 0
        account = FileAccount(source.display, fingerprint=digest)
    canonical = _canonical(frame, source, ingestion, device, not_before)
    if records != canonical.height + rejected:
        raise source.error(f"{records} records in the file but {canonical.height} rows read and {rejected} "
                           "rejected: the counts diverge", canonical.height + rejected)
    account.records, account.ingested, account.rejected = records, canonical.height, rejected
    account.first_ts, account.last_ts = canonical["ts"].min(), canonical["ts"].max()
    if keys_only:
        canonical = canonical.select("day", "device_id").unique()
    return canonical, account


def read_file(path: Path, ingestion: IngestionSettings, root: Path, *, not_before: date | None = None,
              settle_seconds: float = 0.0) -> pl.DataFrame:
    """The canonical raw frame for one file (path absolute, or relative to root), sorted by (device_id, ts).
    `IncompleteFile` when it ends without a line break, changes while read or is younger than `settle_seconds`."""
    frame, _ = _read(path, ingestion, root, not_before=not_before, settle_seconds=settle_seconds)
    return _with_fault_ids(frame.sort("device_id", "ts", maintain_order=True))


def _empty(ingestion: IngestionSettings, text_sensors: bool) -> pl.DataFrame:
    sensor_type = pl.String if text_sensors else pl.Float64
    return pl.DataFrame(schema={
        "ts": pl.Datetime("us"), "day": pl.Date, "device_id": pl.String, "state": pl.String,
        **{name: sensor_type for name in ingestion.columns.values()},
        "fault_tag": pl.String, "fault_id": pl.String,
    })


def _concat(frames: list[pl.DataFrame], sensors: list[str]) -> pl.DataFrame:
    """Stack per-file frames; a sensor that is text in any file becomes text everywhere (values survive)."""
    text = [s for s in sensors if any(f.schema[s] == pl.String for f in frames)]
    if text:
        frames = [f.with_columns(pl.col(s).cast(pl.String) for s in text) for f in frames]
    return pl.concat(frames, how="vertical_relaxed", rechunk=True)


@dataclass
class AccountedRead:
    """Telemetry read from the files, and one account per file matched (read, incomplete or skipped)."""

    frame: pl.DataFrame
    accounts: list[FileAccount]


def read_accounted(
    ingestion: IngestionSettings,
    root: Path,
    *,
    days: Collection[date] | None = None,
    devices: Collection[str] | None = None,
    not_before: date | None = None,
) -> AccountedRead:
    """Everything the glob(s) match as one canonical frame sorted by (device_id, ts), optionally only some
    (UTC) days and devices, with every file's account. fault_id runs are computed before filtering, so they do not
    depend on the filter. A file still being written is left out (status `incomplete`) for the next run."""
    root = Path(root)
    survey = survey_files(ingestion, root)
    accounts = [FileAccount(name, status="skipped", detail=why) for name, why in survey.skipped.items()]
    wanted = set(devices) if devices is not None else None
    frames = []
    for path in survey.files:
        device = device_from_path(path, ingestion, root) if ingestion.device_from_path is not None else None
        if wanted is not None and device is not None and device not in wanted:
            continue
        try:
            frame, account = _read(path, ingestion, root, device=device, not_before=not_before,
                                   settle_seconds=ingestion.settle_seconds)
        except IncompleteFile as exc:
            accounts.append(FileAccount(exc.file or display_name(path, root), status="incomplete", detail=str(exc)))
            continue
        frames.append(frame)
        accounts.append(account)
    accounts.sort(key=lambda a: a.file)
    if not frames:
        return AccountedRead(_empty(ingestion, any(file_kind(f) == "csv" for f in survey.files)), accounts)
    frame = _concat(frames, list(ingestion.columns.values())).sort("device_id", "ts", maintain_order=True)
    frame = _with_fault_ids(frame)
    if wanted is not None:
        frame = frame.filter(pl.col("device_id").is_in(sorted(wanted)))
    if days is not None:
        frame = frame.filter(pl.col("day").is_in(sorted(set(days))))
    return AccountedRead(frame, accounts)


def read_telemetry(ingestion: IngestionSettings, root: Path, *, days: Collection[date] | None = None,
                   devices: Collection[str] | None = None, not_before: date | None = None) -> pl.DataFrame:
    """The frame of `read_accounted`."""
    return read_accounted(ingestion, root, days=days, devices=devices, not_before=not_before).frame


def available_partitions(ingestion: IngestionSettings, root: Path, *, not_before: date | None = None,
                         on_incomplete: Callable[[str], None] | None = None) -> pl.DataFrame:
    """Distinct (day, device_id) the complete files hold data for, sorted: the partitions worth materialising.
    `on_incomplete` hears why each file left for a later run is not read now."""
    root = Path(root)
    frames = []
    for path in discover_files(ingestion, root):
        try:
            frames.append(_read(path, ingestion, root, keys_only=True, not_before=not_before,
                                settle_seconds=ingestion.settle_seconds)[0])
        except IncompleteFile as exc:
            if on_incomplete is not None:
                on_incomplete(str(exc))
            continue
    if not frames:
        return pl.DataFrame(schema={"day": pl.Date, "device_id": pl.String})
    return pl.concat(frames).unique().sort("day", "device_id")


__all__ = ["AccountedRead", "IncompleteFile", "IngestError", "Survey", "available_partitions", "device_from_path",
           "discover_files", "read_accounted", "read_file", "read_telemetry", "survey_files"]
