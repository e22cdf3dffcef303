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

Other choices: a file with a header but no data rows is an error ("no data rows"), blank lines are skipped, a
glob that matches no readable file is an error, a relative glob may not leave `root` via `..`, a duplicated
header name is an error only when the config maps that name (it would be ambiguous), an empty state cell stays
NULL (validation quarantines it as `unknown_state`), an empty label cell means "no label" unless the mapping has
a key "". `fault_id` names each contiguous run (per device, in time order) of one non-null tag:
`{device}-{tag}-{run start UTC %Y%m%dT%H%M%S}`; it is computed over everything read, before the days/devices
filter, so it does not depend on which partitions are requested.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path, PurePosixPath

import polars as pl

from itap_assets.settings import ID_PATTERN, IngestionSettings

CSV_SUFFIXES = (".csv", ".txt", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
KEY_COLUMNS = ("ts", "day", "device_id", "state")
LABEL_COLUMNS = ("fault_tag", "fault_id")
RESERVED = (*KEY_COLUMNS, *LABEL_COLUMNS)

_ROW = "__row"  # 0-based data row of the file (blank lines included for CSV), for error messages
_ISO_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")
_ISO_AWARE = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z")
_OFFSET_DIRECTIVES = ("%z", "%:z", "%#z", "%::z", "%Z")
# A number written with a decimal comma: "12,5", "-0,25", ",5", "1,5e3" (a plain integer needs no change).
_COMMA_NUMBER = r"^\s*[+-]?(\d+,\d*|,\d+)([eE][+-]?\d+)?\s*$"


class IngestError(ValueError):
    """A file (or the set of files) that cannot be ingested; the message names file, line and column."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: str | None = None) -> None:
        super().__init__(message)
        self.file, self.line, self.column = file, line, column


# --------------------------------------------------------------------------------------------------- discovery


def discover_files(ingestion: IngestionSettings, root: Path) -> list[Path]:
    """Files the `path` glob(s) match, sorted and de-duplicated; CSV (.csv/.txt/.tsv) and Parquet (.parquet/.pq)
    only, other files and directories are ignored. Relative globs are relative to `root` and may not use `..`."""
    root = Path(root)
    found: set[Path] = set()
    unmatched: list[str] = []
    for pattern in ingestion.paths:
        if not pattern.strip():
            raise IngestError("ingestion.path contains an empty glob")
        if os.path.isabs(pattern):
            matches = [Path(m) for m in glob.glob(pattern, recursive=True)]
        else:
            if ".." in PurePosixPath(pattern.replace("\\", "/")).parts:
                raise IngestError(
                    f"ingestion.path {pattern!r} leaves the project root {root} via '..'; relative globs must stay "
                    "inside it (give an absolute path if the files really live elsewhere)"
                )
            matches = [root / m for m in glob.glob(pattern, root_dir=root, recursive=True)]
        files = [Path(os.path.normpath(m)) for m in matches if m.is_file()]
        readable = [f for f in files if _kind(f) is not None]
        if not readable:
            others = sorted({f.suffix or f.name for f in files})
            unmatched.append(f"{pattern!r}" + (f" (only {', '.join(others[:5])} files)" if others else ""))
        found.update(readable)
    if unmatched:
        raise IngestError(
            f"ingestion.path glob(s) {', '.join(unmatched)} match no CSV ({'/'.join(CSV_SUFFIXES)}) or Parquet "
            f"({'/'.join(PARQUET_SUFFIXES)}) file under {root}"
        )
    return sorted(found)


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "csv" if suffix in CSV_SUFFIXES else "parquet" if suffix in PARQUET_SUFFIXES else None


def _relative(path: Path, root: Path) -> str:
    """The file as the config sees it: relative to root (POSIX) when inside, else absolute."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return path.as_posix()


def device_from_path(path: Path, ingestion: IngestionSettings, root: Path) -> str:
    """The device id `device_from_path` finds in the file path (relative to root, POSIX separators)."""
    assert ingestion.device_from_path is not None
    rel = _relative(Path(path), Path(root))
    match = re.search(ingestion.device_from_path, rel)
    if match is None or match.group("device") is None:
        raise IngestError(
            f"{rel}: device_from_path {ingestion.device_from_path!r} does not match this path (it is searched in "
            "the path relative to the project root, with '/' separators)", file=rel
        )
    device = match.group("device")
    if not ID_PATTERN.fullmatch(device):
        raise IngestError(
            f"{rel}: device id {device!r} taken from the path is not allowed (ids match {ID_PATTERN.pattern})",
            file=rel,
        )
    return device


# --------------------------------------------------------------------------------------------------- reading


@dataclass
class _Source:
    """One file being read: its name for messages and how a data row maps to a line."""

    path: Path
    display: str
    kind: str
    text: str | None = None  # decoded CSV text, only used to locate lines on the error path
    delimiter: str = ","
    _starts: list[int] | None = field(default=None, repr=False)

    def line(self, row: int) -> int:
        """1-based line of 0-based data row `row` (CSV: header = line 1; Parquet: data row number)."""
        if self.kind != "csv":
            return row + 1
        if self._starts is None:
            self._starts = _record_start_lines(self.text or "", self.delimiter)
        return self._starts[row + 1] if row + 1 < len(self._starts) else row + 2

    def where(self, row: int | None = None, column: str | None = None) -> str:
        parts = [self.display]
        if row is not None:
            parts.append(f"{'line' if self.kind == 'csv' else 'row'} {self.line(row)}")
        if column is not None:
            parts.append(f"column {column!r}")
        return ": ".join(parts[:1]) + (": " + ", ".join(parts[1:]) if len(parts) > 1 else "")

    def error(self, what: str, row: int | None = None, column: str | None = None) -> IngestError:
        line = self.line(row) if row is not None else None
        return IngestError(f"{self.where(row, column)}: {what}", file=self.display, line=line, column=column)


def _record_start_lines(text: str, delimiter: str) -> list[int]:
    """Start line of every CSV record (header first); blank lines are records too, as Polars reads them."""
    starts: list[int] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    previous = 0
    try:
        for _ in reader:
            starts.append(previous + 1)
            previous = reader.line_num
    except csv.Error:
        pass  # the rest falls back to "one record per line"
    return starts


def _roles(ingestion: IngestionSettings, keys_only: bool = False) -> dict[str, str]:
    """Source columns the config names -> which setting names them (in reading order, no duplicates)."""
    roles: dict[str, str] = {}

    def add(column: str | None, role: str) -> None:
        if column is not None and column not in roles:
            roles[column] = role

    add(ingestion.timestamp_column, "timestamp_column")
    add(ingestion.device_column, "device_column")
    if not keys_only:
        add(ingestion.state_column, "state_column")
        add(ingestion.label_column, "label_column")
        for source in ingestion.columns:
            add(source, "columns")
    return roles


def _check_mapping(ingestion: IngestionSettings) -> None:
    clash = sorted(set(ingestion.columns.values()) & set(RESERVED))
    if clash:
        raise IngestError(f"ingestion.columns maps to sensor name(s) {clash}, which are canonical column names")


def _missing_columns(source: _Source, header: list[str], roles: dict[str, str]) -> IngestError | None:
    missing = [c for c in roles if c not in header]
    if not missing:
        return None
    named = ", ".join(f"{c!r} ({roles[c]})" for c in missing)
    has = ", ".join(repr(c) for c in header)
    hint = ""
    if source.kind == "csv" and len(header) == 1:
        other = [d for d in (";", ",", "\t", "|") if d in header[0] and d != source.delimiter]
        if other:
            hint = f" — the header is one column containing {other[0]!r}: is `delimiter: {other[0]!r}` meant?"
    where = f"{source.display}: line 1" if source.kind == "csv" else source.display
    return IngestError(f"{where}: column(s) {named} not found; the file has {has}{hint}", file=source.display,
                       line=1 if source.kind == "csv" else None, column=missing[0])


def _decode(data: bytes, source: _Source, encoding: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8" if encoding.startswith("utf8") else encoding,
                           errors="replace" if encoding == "utf8-lossy" else "strict")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        suggestion = ("`encoding: cp1252` (Excel/Windows exports) or `encoding: latin1`" if encoding == "utf8"
                      else "`encoding: utf8` or `encoding: latin1`")
        raise IngestError(
            f"{source.display}: line {line}: byte 0x{data[exc.start]:02x} at character {exc.start - line_start + 1} "
            f"is not valid {encoding} (tried encoding {encoding!r}); set {suggestion} under ingestion:",
            file=source.display, line=line,
        ) from exc


def _read_bytes(path: Path, display: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IngestError(f"{display}: cannot read file: {exc.strerror or exc}", file=display) from exc


def _read_csv(source: _Source, ingestion: IngestionSettings, roles: dict[str, str], read: list[str]) -> pl.DataFrame:
    data = _read_bytes(source.path, source.display)
    if not data.strip(b" \t\r\n\xef\xbb\xbf"):
        raise source.error("empty file (no header, no data)")
    head = data[:65536]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise source.error("file is UTF-16 encoded (Excel 'Unicode text'); re-export it as UTF-8 or cp1252 CSV")
    if head.startswith(b"PAR1"):
        raise source.error("this is a Parquet file; give it a .parquet suffix")
    if head.startswith(b"\x1f\x8b") or head.startswith(b"PK\x03\x04"):
        raise source.error("this is a compressed archive (gzip/zip/xlsx), not a text CSV; unpack or export it as CSV")
    nul = head.find(b"\x00")
    if nul >= 0:
        raise source.error(f"binary content (NUL byte at offset {nul}), not a text CSV")
    text = _decode(data, source, ingestion.encoding)
    source.text = text
    header = [c.strip() for c in next(csv.reader(io.StringIO(text, newline=""), delimiter=ingestion.delimiter))]
    for name in roles:
        positions = [i + 1 for i, c in enumerate(header) if c == name]
        if len(positions) > 1:
            raise IngestError(
                f"{source.display}: line 1, column {name!r}: the header names this column {len(positions)} times "
                f"(positions {', '.join(map(str, positions))}); ambiguous which one {roles[name]} means",
                file=source.display, line=1, column=name,
            )
    missing = _missing_columns(source, header, roles)
    if missing is not None:
        raise missing
    _check_complete(source, text, header, ingestion.delimiter)
    indices = sorted(header.index(c) for c in read)
    payload = data.removeprefix(b"\xef\xbb\xbf") if ingestion.encoding == "utf8" else text.encode("utf-8")
    try:
        frame = pl.read_csv(
            payload, separator=ingestion.delimiter, has_header=True, columns=indices, infer_schema=False,
            row_index_name=_ROW, quote_char='"', raise_if_empty=False,
        )
    except pl.exceptions.PolarsError as exc:
        raise _csv_parse_error(source, header, ingestion.delimiter, exc) from exc
    frame = frame.rename(dict(zip(frame.columns[1:], [header[i] for i in indices])))
    # Empty and whitespace-only cells are missing values; a line with nothing in any mapped column is blank.
    frame = frame.with_columns(
        pl.when(pl.col(c).str.strip_chars() == "").then(None).otherwise(pl.col(c)).alias(c) for c in read
    ).filter(pl.any_horizontal(pl.col(c).is_not_null() for c in read))
    if frame.height == 0:
        raise source.error("no data rows (the file has a header only)")
    return frame


def _check_complete(source: _Source, text: str, header: list[str], delimiter: str) -> None:
    """A file whose last line has no line break and is cut short (an open quote, fewer fields than the header) was
    truncated in transfer: refuse it rather than read a half row as if it were whole."""
    if text.endswith(("\n", "\r")) or "\n" not in text.rstrip("\r\n"):
        return
    last = text[text.rfind("\n") + 1:]
    fields = next(csv.reader([last], delimiter=delimiter), [])
    if last.count('"') % 2 or len(fields) < len(header):
        line = text.count("\n") + 1
        raise IngestError(
            f"{source.display}: line {line}: the file ends in the middle of a line ({len(fields)} of {len(header)} "
            "fields, no final line break): it looks truncated; re-export or re-copy it",
            file=source.display, line=line,
        )


def _csv_parse_error(source: _Source, header: list[str], delimiter: str, exc: Exception) -> IngestError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        reader = csv.reader(io.StringIO(source.text or "", newline=""), delimiter=delimiter)
        previous = 0
        for fields in reader:
            if len(fields) > len(header):
                return IngestError(
                    f"{source.display}: line {previous + 1}: {len(fields)} fields but the header has {len(header)} "
                    f"(check delimiter {delimiter!r} and quoting)", file=source.display, line=previous + 1,
                )
            previous = reader.line_num
    except csv.Error as csv_exc:
        return IngestError(f"{source.display}: line {reader.line_num}: not valid CSV: {csv_exc}",
                           file=source.display, line=reader.line_num)
    return IngestError(f"{source.display}: not valid CSV: {reason}", file=source.display)


def _read_parquet(source: _Source, roles: dict[str, str], read: list[str]) -> pl.DataFrame:
    import pyarrow.parquet as pq

    try:
        size = source.path.stat().st_size
        with source.path.open("rb") as fh:
            head = fh.read(4)
            fh.seek(max(0, size - 4))
            tail = fh.read(4)
    except OSError as exc:
        raise IngestError(f"{source.display}: cannot read file: {exc.strerror or exc}", file=source.display) from exc
    if size == 0:
        raise source.error("empty file (0 bytes)")
    if head != b"PAR1" or tail != b"PAR1" or size < 12:
        raise source.error("not a readable Parquet file (no PAR1 magic at start and end: truncated or not Parquet)")
    try:
        names = pq.read_schema(source.path).names
    except Exception as exc:  # pyarrow raises several types for corrupt footers
        raise source.error(f"not a readable Parquet file (corrupt footer?): {exc}") from exc
    for name in roles:
        if names.count(name) > 1:
            raise source.error(f"the schema names this column {names.count(name)} times", column=name)
    missing = _missing_columns(source, names, roles)
    if missing is not None:
        raise missing
    try:
        frame = pl.read_parquet(source.path, columns=read).with_row_index(_ROW)
    except Exception as exc:
        raise source.error(f"not a readable Parquet file (corrupt or truncated data): {exc}") from exc
    if frame.height == 0:
        raise source.error("no data rows")
    return frame


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
    return row[_ROW], row, bad.height


def _more(count: int) -> str:
    return f" (and {count - 1} more row{'s' if count > 2 else ''})" if count > 1 else ""


def _timestamps(frame: pl.DataFrame, source: _Source, ingestion: IngestionSettings, device: pl.Expr) -> pl.Series:
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
        _ROW,
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
        frame = frame.join(passes.select(_ROW, "__2nd"), on=_ROW, how="left", maintain_order="left")
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


def _canonical(frame: pl.DataFrame, source: _Source, ingestion: IngestionSettings, device: str | None,
               keys_only: bool) -> pl.DataFrame:
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
                f"device id {str(value)!r} is not allowed (ids match {ID_PATTERN.pattern})")
            raise source.error(f"{what}{_more(bad[2])}", bad[0], col)

    ts = _timestamps(frame, source, ingestion, device_expr)
    frame = frame.with_columns(ts.alias("__ts"))
    if keys_only:
        return frame.select(pl.col("__ts").dt.date().alias("day"), device_expr.alias("device_id")).unique()

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


def _source(path: Path, ingestion: IngestionSettings, root: Path) -> _Source:
    path = Path(path)
    if not path.is_absolute():
        path = Path(root) / path
    kind = _kind(path)
    display = _relative(path, Path(root))
    if kind is None:
        raise IngestError(f"{display}: unsupported file type {path.suffix!r} (CSV: {', '.join(CSV_SUFFIXES)}; "
                          f"Parquet: {', '.join(PARQUET_SUFFIXES)})", file=display)
    return _Source(path=path, display=display, kind=kind, delimiter=ingestion.delimiter)


def _read(path: Path, ingestion: IngestionSettings, root: Path, *, keys_only: bool = False,
          device: str | None = None) -> pl.DataFrame:
    _check_mapping(ingestion)
    source = _source(path, ingestion, root)
    if ingestion.device_from_path is not None and device is None:
        device = device_from_path(source.path, ingestion, root)
    roles = _roles(ingestion)
    read = list(_roles(ingestion, keys_only=True) if keys_only else roles)
    if source.kind == "csv":
        frame = _read_csv(source, ingestion, roles, read)
    else:
        frame = _read_parquet(source, roles, read)
    return _canonical(frame, source, ingestion, device, keys_only)


def read_file(path: Path, ingestion: IngestionSettings, root: Path) -> pl.DataFrame:
    """The canonical raw frame for one file (path absolute, or relative to root), sorted by (device_id, ts)."""
    frame = _read(path, ingestion, root)
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


def read_telemetry(
    ingestion: IngestionSettings,
    root: Path,
    *,
    days: Collection[date] | None = None,
    devices: Collection[str] | None = None,
) -> pl.DataFrame:
    """Everything the glob(s) match as one canonical frame sorted by (device_id, ts), optionally only some
    (UTC) days and devices. fault_id runs are computed before filtering, so they do not depend on the filter."""
    root = Path(root)
    files = discover_files(ingestion, root)
    wanted = set(devices) if devices is not None else None
    frames = []
    for path in files:
        device = device_from_path(path, ingestion, root) if ingestion.device_from_path is not None else None
        if wanted is not None and device is not None and device not in wanted:
            continue
        frames.append(_read(path, ingestion, root, device=device))
    if not frames:
        return _empty(ingestion, any(_kind(f) == "csv" for f in files))
    frame = _concat(frames, list(ingestion.columns.values())).sort("device_id", "ts", maintain_order=True)
    frame = _with_fault_ids(frame)
    if wanted is not None:
        frame = frame.filter(pl.col("device_id").is_in(sorted(wanted)))
    if days is not None:
        frame = frame.filter(pl.col("day").is_in(sorted(set(days))))
    return frame


def available_partitions(ingestion: IngestionSettings, root: Path) -> pl.DataFrame:
    """Distinct (day, device_id) the files hold data for, sorted: the partitions worth materialising."""
    root = Path(root)
    frames = [_read(path, ingestion, root, keys_only=True) for path in discover_files(ingestion, root)]
    if not frames:
        return pl.DataFrame(schema={"day": pl.Date, "device_id": pl.String})
    return pl.concat(frames).unique().sort("day", "device_id")


__all__ = ["IngestError", "available_partitions", "device_from_path", "discover_files", "read_file", "read_telemetry"]
