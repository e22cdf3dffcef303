"""A device-day's features come from that day and the day before only, so they are identical bit for bit in a run
of that day alone and in a backfill of many days; and a spectrum is served only once its block has ended."""

from __future__ import annotations

from datetime import date

import polars as pl

from itap_assets.core.feature_days import features_by_day
from itap_assets.core.features import device_day_features
from itap_assets.core.windows import AutoWindows
from itap_assets_tests.core.test_features import SF, random_fleet

AUTO = AutoWindows()
PER_DAY = 1440  # 60 s samples


def keys(fleet: pl.DataFrame, *days: date) -> pl.DataFrame:
    return fleet.select("day", "device_id").unique().filter(pl.col("day").is_in(days) if days else True) \
        .sort("device_id", "day")


def test_a_day_has_the_same_features_in_a_backfill_and_in_a_run_of_that_day_alone():
    fleet = random_fleet(n_devices=2, n=5 * PER_DAY, interval_s=60.0, seed=3)
    for windows in (AUTO, ("5m", "30m", "2h")):
        backfill = pl.concat(features_by_day(fleet, SF, windows, keys(fleet)))
        third = date(2026, 1, 3)
        alone_input = fleet.filter(pl.col("day").is_between(date(2026, 1, 2), third))
        alone = pl.concat(features_by_day(alone_input, SF, windows, keys(fleet, third)))
        assert alone.height == 2 * PER_DAY
        assert alone.equals(backfill.filter(pl.col("day") == third)), windows  # exact, not approximately


def test_the_previous_day_is_context_only_and_a_missing_one_is_no_error():
    fleet = random_fleet(n_devices=1, n=2 * PER_DAY, interval_s=60.0, seed=4)
    second = date(2026, 1, 2)
    out = pl.concat(features_by_day(fleet, SF, AUTO, keys(fleet, second)))
    assert out["day"].unique().to_list() == [second] and out["device_id"].unique().to_list() == ["dev0"]
    assert not out["warmup"].any()  # day 1 was its history
    alone = pl.concat(features_by_day(fleet.filter(pl.col("day") == second), SF, AUTO, keys(fleet, second)))
    assert alone.height == PER_DAY and alone["warmup"].any()


def test_an_auto_spectrum_is_served_only_after_its_block_ended():
    """A block cut short by the end of the data must not serve rows a later, complete read gives another block."""
    fleet = random_fleet(n_devices=1, n=3000, interval_s=60.0, seed=5)
    full = device_day_features(fleet, SF, AUTO)
    spectral = [c for c in full.columns if c.endswith(("__dom_freq", "__band_energy_low", "__band_energy_high"))]
    assert spectral
    for cut in (2038, 2039):  # the last block misses its last sample or two (30-sample blocks)
        head = device_day_features(fleet.head(cut), SF, AUTO)
        assert head.select(spectral).equals(full.head(cut).select(spectral)), cut


def test_warm_up_marks_the_start_of_a_devices_history_not_every_day_after_an_empty_one():
    """A series with a weekend gap (NAB's ad exchange series) must not lose the first horizon of every Monday to
    warm-up: those are the rows a short baseline needs to fit its model."""
    fleet = random_fleet(n_devices=1, n=3 * PER_DAY, interval_s=60.0, seed=6)
    gapped = fleet.filter(pl.col("day") != date(2026, 1, 2))
    third = date(2026, 1, 3)
    starts = gapped.group_by("device_id").agg(first_ts=pl.col("ts").min())
    for windows in (AUTO, ("5m", "30m", "2h")):
        cold = pl.concat(features_by_day(gapped, SF, windows, keys(gapped, third)))
        assert cold["warmup"].any()  # without the device's history start the day after the gap starts cold
        warm = pl.concat(features_by_day(gapped, SF, windows, keys(gapped, third), starts))
        assert not warm["warmup"].any(), windows
        assert warm.drop("warmup").equals(cold.drop("warmup"))  # only the flag changes, not a feature
        first = pl.concat(features_by_day(gapped, SF, windows, keys(gapped, date(2026, 1, 1)), starts))
        assert first["warmup"].any()  # the device's first day still warms up
