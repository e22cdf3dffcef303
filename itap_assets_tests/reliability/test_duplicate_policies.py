"""validation.duplicates (issue 20): conflicting versions of one (device_id, ts) are all quarantined
(`quarantine_both`, the default, tested in test_accounting_properties.py), or the version read first / last is kept
(`keep_first` / `keep_last`) and the others are quarantined as harmless `duplicate_not_kept`. Exact copies always
keep one row. Frames arrive in several chunks, as a multi-file read gives them."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest
from hypothesis import example, given, settings, strategies as st

from itap_assets.core.validation import split_telemetry
from itap_assets.settings import Settings, SettingsError, load_settings
from itap_assets_tests.reliability.test_accounting_properties import SENSORS, STATES, frame


def chunked(rows: list[tuple[int, float | None]], size: int) -> pl.DataFrame:
    return pl.concat([frame(rows[i:i + size]) for i in range(0, len(rows), size)], rechunk=False)


def seconds(result) -> list[tuple[int, float | None]]:
    return [(int((t - datetime(2026, 1, 1)).total_seconds()), v)
            for t, v in result.validated.select("ts", "temp_c").iter_rows()]


@pytest.mark.parametrize("policy", ["keep_first", "keep_last"])
@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 5), st.sampled_from([20.0, 21.0, None])), min_size=1, max_size=10),
       size=st.integers(1, 4))
@example(rows=[(0, 20.0), (1, 20.0), (1, 20.0), (1, 21.0)], size=2)
@example(rows=[(0, None), (0, 20.0), (0, None)], size=1)
def test_a_keep_policy_keeps_the_version_read_first_or_last_and_loses_no_sample(policy, rows, size):
    result = split_telemetry(chunked(rows, size), SENSORS, STATES, policy)
    expected_valid, expected_reasons = [], {}
    for second in sorted({s for s, _ in rows}):
        versions = [v for s, v in rows if s == second]
        chosen = versions[0] if policy == "keep_first" else versions[-1]
        expected_valid.append((second, chosen))
        others = list(versions)
        others.remove(chosen)
        for v in others:
            reason = "duplicate_exact" if v == chosen else "duplicate_not_kept"
            expected_reasons[reason] = expected_reasons.get(reason, 0) + 1
    assert seconds(result) == expected_valid
    assert result.reason_counts == dict(sorted(expected_reasons.items()))
    assert result.validated.height + result.quarantine.height == len(rows)
    assert result.rejected_share == 0.0  # a kept version means no lost sample


def test_each_policy_on_a_replayed_timestamp_says_what_it_kept():
    raw = chunked([(0, 20.0), (60, 30.0), (60, 31.0), (60, 30.0)], 2)
    both = split_telemetry(raw, SENSORS, STATES)
    assert seconds(both) == [(0, 20.0)]
    assert both.quarantine["reason"].to_list() == ["duplicate_conflict"] * 3
    assert both.rejected_share == 1 / 4  # the lost sample counts once

    first = split_telemetry(raw, SENSORS, STATES, "keep_first")
    assert seconds(first) == [(0, 20.0), (60, 30.0)]
    assert sorted(first.quarantine["reason"]) == ["duplicate_exact", "duplicate_not_kept"]
    assert first.quarantine.filter(pl.col("reason") == "duplicate_not_kept")["detail"].item() == (
        "3 rows share device_id=D1 ts=2026-01-01 00:01:00.000000; kept the first version "
        "(validation.duplicates: keep_first)")

    last = split_telemetry(raw, SENSORS, STATES, "keep_last")
    assert seconds(last) == [(0, 20.0), (60, 30.0)]  # the last row read is a copy of the first version
    last_two = split_telemetry(chunked([(60, 30.0), (60, 31.0)], 1), SENSORS, STATES, "keep_last")
    assert seconds(last_two) == [(60, 31.0)]
    assert last_two.quarantine["temp_c"].to_list() == [30.0]


def test_the_default_policy_is_quarantine_both_and_an_unknown_one_is_refused_naming_the_key(tmp_path):
    assert Settings().validation.duplicates == "quarantine_both"
    path = tmp_path / "itap.yaml"
    path.write_text("validation:\n  duplicates: keep_newest\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"validation\.duplicates"):
        load_settings(path)
