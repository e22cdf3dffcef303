"""Reading one CSV export into text columns, with every record accounted for (see `core.ingest_accounting`).

Pure Python and Polars (no Dagster). Polars reads a file whose records the scan of `core.ingest_accounting` found
(one per line without quotes) and must give one row per record; a file with a quote where RFC 4180 allows none is
parsed by the strict pass instead. Either way a record is a row, a counted rejection (no value in any mapped
column) or a blank line, and any other outcome is an `IngestError` naming file and line.
"""

from __future__ import annotations

import time

from dataclasses import dataclass

import polars as pl

from itap_assets.core.ingest_accounting import (
    CsvProblem, Records, header_cells, line_count, line_text, record_starts, snapshot, strict_records,
)
from itap_assets.core.ingest_files import (
    ROW, IncompleteFile, IngestError, Source, check_settled, missing_columns, quoted_cell,
)
from itap_assets.settings import IngestionSettings


def _decode(data: bytes, source: Source, encoding: str) -> str:
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


def read_bytes(source: Source, settle_seconds: float) -> bytes:
    """The whole file, read once; `IncompleteFile` when it changed during the read or is younger than the settle
    time (it may still be being written)."""
    try:
        before = snapshot(source.path)
        data = source.path.read_bytes()
        after = snapshot(source.path)
    except OSError as exc:
        raise IngestError(f"{source.display}: cannot read file: {exc.strerror or exc}", file=source.display) from exc
    check_settled(source, before, after, settle_seconds)
    return data


@dataclass
class CsvRead:
    """A CSV file's rows (mapped columns as text, `ROW` = 0-based data record) and its accounting."""

    frame: pl.DataFrame
    records: int  # data records, blank lines not counted
    rejected: int  # records with no value in any mapped column
    detail: str | None


def read_csv_file(source: Source, ingestion: IngestionSettings, roles: dict[str, str], read: list[str],
                  data: bytes) -> CsvRead:
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
    if "\n" not in text and "\r" in text.strip("\r"):
        raise IngestError(
            f"{source.display}: line 1: lines end in a bare CR (classic Mac OS line ends), which ITAP does not read "
            "as line breaks; re-save the file with LF or CRLF line ends", file=source.display, line=1)
    if not _check_complete(source, text, ingestion.delimiter, ingestion.unterminated_settle_seconds):
        data, text = data + b"\n", text + "\n"  # the last line is taken as written: count and read it as a line
        source.text = text
    source.quoted = '"' in text
    delimiter = ingestion.delimiter
    payload = data.removeprefix(b"\xef\xbb\xbf") if ingestion.encoding == "utf8" else text.encode("utf-8")
    starts = record_starts(payload, delimiter) if source.quoted else None
    try:
        parsed = strict_records(text, delimiter) if source.quoted and starts is None else None
        header_lines = int(starts[1] - 1) if starts is not None and len(starts) > 1 else 1
        raw_header = parsed.header if parsed is not None else header_cells(text, delimiter, header_lines)
    except CsvProblem as problem:
        raise _csv_problem(source, problem, text, delimiter) from None
    header = [c.strip() for c in raw_header]
    for name in roles:
        positions = [i + 1 for i, c in enumerate(header) if c == name]
        if len(positions) > 1:
            raise IngestError(
                f"{source.display}: line 1, column {name!r}: the header names this column {len(positions)} times "
                f"(positions {', '.join(map(str, positions))}); ambiguous which one {roles[name]} means",
                file=source.display, line=1, column=name,
            )
    missing = missing_columns(source, header, roles)
    if missing is not None:
        raise missing
    indices = sorted(header.index(c) for c in read)
    if parsed is not None:
        source.starts = parsed.starts
        frame, blank = _strict_frame(source, parsed, header, indices)
    else:
        if starts is not None:
            source.starts = starts.tolist()
        records = len(starts) - 1 if starts is not None else line_count(payload) - 1
        frame = _fast_frame(source, payload, header, indices, delimiter, records)
        blank = None
    # Empty and whitespace-only cells are missing values; a record with nothing in any mapped column is not a row.
    frame = frame.with_columns(
        pl.when(pl.col(c).str.strip_chars() == "").then(None).otherwise(pl.col(c)).alias(c) for c in read
    )
    has_value = pl.any_horizontal(pl.col(c).is_not_null() for c in read)
    empty_rows = frame.filter(~has_value)[ROW].to_list()
    frame = frame.filter(has_value)
    if blank is None:
        lines = line_text(payload, [source.line(row) for row in empty_rows]) if empty_rows else {}
        blank = {row for row in empty_rows if not lines.get(source.line(row), b"").strip()}
    rejected = [row for row in empty_rows if row not in blank]
    if frame.height == 0:
        raise source.error("no data rows (the file has a header only)")
    detail = None
    if rejected:
        detail = (f"{len(rejected)} record(s) with no value in any mapped column (e.g. ';;;;;') rejected at "
                  f"ingestion, first at line {source.line(rejected[0])}")
    return CsvRead(frame, frame.height + len(rejected), len(rejected), detail)


def _check_complete(source: Source, text: str, delimiter: str, unterminated_settle_seconds: float) -> bool:
    """A CSV file ends with a line break. Without one its last line may be cut anywhere, even mid-value (`6` of
    `62.5`): while the file is younger than `unterminated_settle_seconds` it may still be being written, and it is
    not read until it is complete. Older, its writer is gone and the last line is what it wrote: published data
    sets end without a line break (7 of the 57 NAB series). True when the file ends with its line break."""
    if text.endswith(("\n", "\r")) or "\n" not in text.rstrip("\r\n"):
        return True
    fields = text[text.rfind("\n") + 1:].count(delimiter) + 1
    header = text[:text.find("\n")].count(delimiter) + 1
    line = text.count("\n") + 1
    if fields == header and time.time() - source.path.stat().st_mtime >= unterminated_settle_seconds:
        return False
    setting = f"ingestion.unterminated_settle_seconds ({unterminated_settle_seconds:g} s)"
    settled = f", or once it is unchanged for {setting}" if fields == header else ""
    raise IncompleteFile(
        f"{source.display}: line {line}: the file ends in the middle of a line ({fields} of {header} "
        "fields, no final line break): it is still being written or was truncated; it is read once it ends with a "
        f"line break{settled}", file=source.display, line=line,
    )


def _csv_problem(source: Source, problem: CsvProblem, text: str, delimiter: str) -> IngestError:
    column = None
    if problem.cell is not None:
        first = text[:text.find("\n")] if "\n" in text else text
        names = [c.strip().strip('"') for c in first.split(delimiter)]
        column = names[problem.cell] if problem.cell < len(names) and problem.line > 1 else f"#{problem.cell + 1}"
    where = f"{source.display}: line {problem.line}" + (f", column {quoted_cell(column)}" if column else "")
    return IngestError(f"{where}: {problem}", file=source.display, line=problem.line, column=column)


def _too_many_fields(source: Source, line: int, fields: int, header: list[str]) -> IngestError:
    return IngestError(
        f"{source.display}: line {line}: {fields} fields but the header has {len(header)} (check delimiter "
        f"{source.delimiter!r} and quoting)", file=source.display, line=line,
    )


def _strict_frame(source: Source, parsed: Records, header: list[str], indices: list[int]
                  ) -> tuple[pl.DataFrame, set[int]]:
    """The mapped columns of the strict pass's records, and the rows that are blank lines."""
    for row, fields in enumerate(parsed.rows):
        if len(fields) > len(header):
            raise _too_many_fields(source, source.line(row), len(fields), header)
    columns = {ROW: pl.Series(ROW, range(len(parsed.rows)), dtype=pl.UInt32)}
    for i in indices:
        columns[header[i]] = pl.Series(header[i], [r[i] if i < len(r) else None for r in parsed.rows],
                                       dtype=pl.String)
    blank = {row for row, fields in enumerate(parsed.rows) if not "".join(fields).strip() and len(fields) <= 1}
    return pl.DataFrame(columns), blank


def _fast_frame(source: Source, payload: bytes, header: list[str], indices: list[int], delimiter: str,
                records: int) -> pl.DataFrame:
    """The file read by Polars; it must give one row per record the scan found, or the read is refused naming
    the first line where the two diverge."""
    try:
        frame = pl.read_csv(
            payload, separator=delimiter, has_header=True, columns=indices, infer_schema=False,
            row_index_name=ROW, quote_char='"' if source.quoted else None, raise_if_empty=False,
        )
    except pl.exceptions.PolarsError as exc:
        raise _fast_parse_error(source, payload, header, delimiter, exc) from None
    frame = frame.rename(dict(zip(frame.columns[1:], [header[i] for i in indices])))
    if frame.height != records:
        raise _divergence(source, payload, frame, header[indices[0]], indices[0], delimiter, records)
    return frame


def _records(source: Source, payload: bytes, delimiter: str) -> list[tuple[int, list[str]]]:
    """(first line, cells) of every data record, for the error paths: the strict parse when the file has quotes,
    else one record per line."""
    if source.quoted:
        parsed = strict_records(source.text or "", delimiter)
        return list(zip(parsed.starts[1:], parsed.rows))
    lines = payload.decode("utf-8", "replace").split("\n")[1:-1]
    return [(n, line.rstrip("\r").split(delimiter)) for n, line in enumerate(lines, start=2)]


def _fast_parse_error(source: Source, payload: bytes, header: list[str], delimiter: str,
                      exc: Exception) -> IngestError:
    for line, cells in _records(source, payload, delimiter):
        if len(cells) > len(header):
            return _too_many_fields(source, line, len(cells), header)
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return IngestError(f"{source.display}: not valid CSV: {reason[:200]}", file=source.display)


def _divergence(source: Source, payload: bytes, frame: pl.DataFrame, name: str, index: int, delimiter: str,
                records: int) -> IngestError:
    """The first record whose first mapped cell is not the reader's row of the same number."""
    read = frame[name].to_list()
    expected = _records(source, payload, delimiter)
    line = expected[-1][0] + 1 if expected else 2
    for k, (start, cells) in enumerate(expected):
        cell = cells[index] if index < len(cells) else None
        if k >= len(read) or (cell or None) != read[k]:
            line = start
            break
    return IngestError(
        f"{source.display}: line {line}: the CSV reader returned {frame.height} rows but the file has {records} "
        "data records; they diverge at this line, so nothing of the file is read", file=source.display, line=line,
    )


