"""Property-based accounting (issue 19): hundreds of generated files and frames — any order, gaps, duplicated
timestamps (identical or conflicting), bad cells, quotes, delimiter-only and blank lines — through the pure
ingestion and validation functions. Every record of every file ends as a validated row, a quarantined row (a
duplicate copy included) or a counted rejection at ingestion, or the file is refused naming its line; nothing
crashes, nothing is invented."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import polars as pl
import yaml
from hypothesis import example, given, settings, strategies as st

from itap_assets.core.ingest import IngestError, read_accounted
from itap_assets.core.validation import split_telemetry
from itap_assets.settings import PROJECT_ROOT, Settings

FILES = Settings.model_validate({
    **yaml.safe_load((PROJECT_ROOT / "configs/examples/files.yaml").read_text(encoding="utf-8")),
})
HEADER = "Zeit;Temperatur;Schwingung;Strom;Zustand;Stoerung;Kommentar"
START = datetime(2026, 4, 10, 10, 0)  # local CEST (UTC+2), far from a DST switch
TEMPERATURES = ["36,5", "12", "-3,25", "abc", "", '"36,5"', "1e999", "NaN", '36"5', "999"]
COMMENTS = ["ok", "", '"a;b"', 'Tuer "offen', '"zitiert ""x"""', "a,b"]
BROKEN = '"offen'  # an opening quote never closed: the file is refused at this line

data_row = st.tuples(st.integers(0, 30), st.sampled_from(TEMPERATURES), st.sampled_from(["RUN", "IDLE", "BOGUS"]),
                     st.sampled_from(COMMENTS))
record = st.one_of(data_row, data_row, data_row, st.just(";;;;;;"), st.just(""), st.just(("broken",)))


def line_of(item) -> str:
    if isinstance(item, str):
        return item
    if item == ("broken",):
        return f"{START:%d.%m.%Y %H:%M:%S};1;1;1;RUN;0;{BROKEN}"
    minute, temp, state, comment = item
    return f"{START + timedelta(minutes=minute):%d.%m.%Y %H:%M:%S};{temp};0,2;14;{state};0;{comment}"


@settings(max_examples=500, deadline=None)
@given(st.lists(record, min_size=1, max_size=12))
@example([(0, "36,5", "RUN", "ok"), (1, "36,5", "RUN", "ok"), (1, "36,5", "RUN", "ok")])
@example([(0, "36,5", "RUN", "ok"), (1, "36,5", "RUN", "ok"), (1, "37", "RUN", "ok")])
def test_every_record_of_a_generated_file_is_validated_quarantined_or_counted(tmp_path_factory, items):
    root = tmp_path_factory.getbasetemp() / "generated"
    root.mkdir(exist_ok=True)
    (root / "rig_G1.csv").write_text("\n".join([HEADER, *map(line_of, items)]) + "\n", encoding="utf-8")
    ingestion = FILES.ingestion.model_copy(update={"path": str(root / "rig_G1.csv"), "settle_seconds": 0})
    data = [i for i in items if isinstance(i, tuple)]
    try:
        read = read_accounted(ingestion, root)
    except IngestError as exc:
        assert "\n" not in str(exc) and exc.file == "rig_G1.csv", str(exc)
        if ("broken",) in items:
            assert exc.line == items.index(("broken",)) + 2, str(exc)
        else:
            assert not data and "no data rows" in str(exc), str(exc)
        return
    assert ("broken",) not in items and data
    (account,) = read.accounts
    rejected = items.count(";;;;;;")
    assert (account.records, account.ingested, account.rejected) == (len(data) + rejected, len(data), rejected)
    result = split_telemetry(read.frame, FILES.sensors, FILES.validation.states)
    assert result.validated.height + result.quarantine.height == account.ingested
    arrived = sorted(START + timedelta(minutes=m) - timedelta(hours=2) for m, *_ in data)
    assert sorted([*result.validated["ts"], *result.quarantine["ts"]]) == arrived  # nothing lost, nothing invented


# ---------------------------------------------------------------------------------------------- duplicates policy

SENSORS = Settings().sensors
STATES = Settings().validation.states
DAY = date(2026, 1, 1)


def frame(rows: list[tuple[int, float | None]]) -> pl.DataFrame:
    """Rows (second, temp_c) of one device; the other sensors mid-range."""
    return pl.DataFrame({
        "ts": [datetime(2026, 1, 1) + timedelta(seconds=s) for s, _ in rows], "day": [DAY] * len(rows),
        "device_id": ["D1"] * len(rows), "state": ["RUN"] * len(rows), "temp_c": [v for _, v in rows],
        **{name: [(spec.min + spec.max) / 2] * len(rows) for name, spec in SENSORS.items() if name != "temp_c"},
        "fault_tag": [None] * len(rows), "fault_id": [None] * len(rows),
    }, schema_overrides={"temp_c": pl.Float64, "fault_tag": pl.String, "fault_id": pl.String})


@settings(max_examples=200, deadline=None)  # six timestamps, three values: 200 arrangements cover the space well
@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from([20.0, 21.0, None])), min_size=1, max_size=10),
       st.lists(st.integers(1, 4), min_size=1, max_size=4))
@example([(0, 20.0), (1, 20.0), (1, 20.0)], [1, 2])  # one unique row, then two identical ones: the Polars panic
@example([(0, 20.0), (1, 20.0), (1, 21.0)], [1, 2])  # ... or two conflicting ones
def test_every_arrangement_of_duplicated_timestamps_follows_the_documented_policy(rows, chunk_sizes):
    """Exact copies keep one row and quarantine the rest as duplicate_exact; conflicting versions of a timestamp
    are all quarantined as duplicate_conflict. The frame arrives in several chunks, as a multi-file read gives."""
    pieces, start = [], 0
    for size in chunk_sizes * len(rows):
        if start >= len(rows):
            break
        pieces.append(frame(rows[start:start + size]))
        start += size
    raw = pl.concat(pieces, rechunk=False)
    result = split_telemetry(raw, SENSORS, STATES)
    expected_valid, expected_reasons = [], {}
    for second in sorted({s for s, _ in rows}):
        versions = [v for s, v in rows if s == second]
        if len(set(versions)) == 1:
            expected_valid.append((second, versions[0]))
            if len(versions) > 1:
                expected_reasons["duplicate_exact"] = expected_reasons.get("duplicate_exact", 0) + len(versions) - 1
        else:
            expected_reasons["duplicate_conflict"] = expected_reasons.get("duplicate_conflict", 0) + len(versions)
    got = [(int((t - datetime(2026, 1, 1)).total_seconds()), v)
           for t, v in result.validated.select("ts", "temp_c").iter_rows()]
    assert got == expected_valid
    assert result.reason_counts == expected_reasons
    assert result.validated.height + result.quarantine.height == len(rows)
