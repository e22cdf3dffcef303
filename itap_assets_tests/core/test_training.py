"""Training windows, baseline status and model pins: the pure rules behind the model lifecycle."""

from datetime import date, datetime

import polars as pl
import pytest
import yaml

from itap_assets.core.scoring import pinned_version
from itap_assets.core.training import HISTORY_SCHEMA, baseline_status, training_bounds
from itap_assets.settings import SettingsError, TrainingWindow, load_settings

HISTORY = pl.DataFrame(
    {"device_id": ["OLD", "NEW"], "first_day": [date(2026, 1, 1), date(2026, 1, 9)],
     "last_day": [date(2026, 1, 10), date(2026, 1, 10)], "first_ts": [datetime(2026, 1, 1), datetime(2026, 1, 9)],
     "samples": [14_400, 2_880], "nth_ts": [None, None]}, schema=HISTORY_SCHEMA)


def test_last_days_ends_with_the_newest_day_or_as_of_and_waits_for_a_full_window():
    bounds = training_bounds(HISTORY, TrainingWindow(last_days=3))
    assert bounds.rows() == [("OLD", datetime(2026, 1, 8), datetime(2026, 1, 11), True, "3 of 3 days"),
                             ("NEW", datetime(2026, 1, 8), datetime(2026, 1, 11), False, "2 of 3 days")]
    as_of = training_bounds(HISTORY, TrainingWindow(last_days=3), as_of=date(2026, 1, 5))
    assert as_of.row(0)[1:3] == (datetime(2026, 1, 3), datetime(2026, 1, 6))


def test_first_days_is_each_devices_own_first_days():
    bounds = training_bounds(HISTORY, TrainingWindow(first_days=2))
    assert bounds.select("device_id", "start", "complete").rows() == [("OLD", datetime(2026, 1, 1), True),
                                                                      ("NEW", datetime(2026, 1, 9), True)]


def test_status_is_ready_accumulating_or_too_short():
    bounds = training_bounds(HISTORY, TrainingWindow(last_days=3))
    rows = pl.DataFrame({"device_id": ["OLD", "NEW"], "baseline_rows": [150, 2_000]})
    status = baseline_status(["OLD", "NEW", "NONE"], bounds, rows, min_rows=200)
    assert status.select("device_id", "status", "baseline_rows", "progress").rows() == [
        ("OLD", "too_short", 150, "3 of 3 days"), ("NEW", "accumulating", 2_000, "2 of 3 days"),
        ("NONE", "accumulating", 0, "no features yet")]


def test_the_first_matching_pin_in_file_order_wins():
    pins = {"DEV-0001": 5, "DEV-00*": 3}
    assert pinned_version("DEV-0001", pins) == ("DEV-0001", 5)
    assert pinned_version("DEV-0002", pins) == ("DEV-00*", 3)
    assert pinned_version("PUMP-1", pins) is None


@pytest.mark.parametrize("model, message", [
    ({"pins": {"DEV 1": 2}}, "pin pattern 'DEV 1' must be a device id or a glob"),
    ({"pins": {"DEV-*": 0}}, "version 0 must be a whole number from 1"),
    ({"training": {"last_days": 7, "first_days": 1}}, "exactly one of first_days, first_samples, last_days"),
])
def test_bad_training_and_pin_settings_name_the_key(tmp_path, model, message):
    path = tmp_path / "itap.yaml"
    path.write_text(yaml.safe_dump({"model": model}), encoding="utf-8")
    with pytest.raises(SettingsError, match="model.") as err:
        load_settings(path)
    assert message in str(err.value)
