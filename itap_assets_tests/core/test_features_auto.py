"""`features.windows: auto`: windows counted in each device's own samples (no Dagster, synthetic data)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from itap_assets.core.features import (
    KIND_DESCRIPTIONS,
    OUTPUT_KEY_COLUMNS,
    device_day_feature_chunks,
    device_day_features,
    feature_registry,
    model_feature_specs,
    parse_feature_name,
)
from itap_assets.core.windows import (
    AUTO_LONG_MIN,
    AutoWindows,
    auto_window_samples,
    feature_windows,
    longest_window_us,
    window_plan,
)
from itap_assets.settings import FeatureSettings, Settings
from itap_assets_tests.core.test_features import SF, assert_frames_close, random_fleet, telemetry

US = 1_000_000
DAY_US = 86_400 * US


def all_null_columns(out: pl.DataFrame) -> dict[str, list[str]]:
    """device -> feature columns that are NULL on all of its rows."""
    names = out.columns[len(OUTPUT_KEY_COLUMNS):]
    nulls = out.group_by("device_id").agg(pl.col(c).is_null().all() for c in names)
    return {r["device_id"]: [c for c in names if r[c]] for r in nulls.iter_rows(named=True) if any(r[c] for c in names)}


def constant_columns(out: pl.DataFrame) -> list[str]:
    """Feature columns with at most one distinct non-NULL value after the warm-up on some device (flat-line is
    data-dependent: the random walks are never flat)."""
    names = [c for c in out.columns[len(OUTPUT_KEY_COLUMNS):] if "flatline" not in c]
    distinct = out.filter(~pl.col("warmup")).group_by("device_id").agg(pl.col(c).drop_nulls().n_unique() for c in names)
    return [c for c in names if distinct[c].min() <= 1]


# --- names and registry ---------------------------------------------------------------------------------------


def test_auto_registry_is_named_by_role_and_the_same_for_any_baseline() -> None:
    reg = feature_registry(SF, "auto")
    names = [f.name for f in reg]
    assert len(reg) == 79 and len(set(names)) == len(names)
    assert {f.window for f in reg} - {None} == {"short", "mid", "long"}
    assert "temp_c__mean_short" in names and "temp_c__std_long" in names and "temp_c__robust_z_mid" in names
    # a one-sample window: its std is undefined and its delta 0, so neither is produced
    assert not any(n.endswith(("__std_short", "__delta_short")) or n == "state__transitions_short" for n in names)
    for f in reg:
        assert parse_feature_name(f.name) == (f.sensor, f.kind, f.window)
        assert f.kind in KIND_DESCRIPTIONS
    for auto in (AutoWindows(max_long_samples=3), AutoWindows(max_long_us=10 * US), AutoWindows()):
        assert feature_registry(SF, auto) == reg  # the columns never depend on the baseline or the data
    assert parse_feature_name("state__transitions_long") == (None, "transitions", "long")
    assert parse_feature_name("x__band_energy_low") == ("x", "band_energy_low", None)


def test_settings_default_is_auto_and_a_list_still_works() -> None:
    assert FeatureSettings().windows == "auto"
    assert FeatureSettings(windows=["1m", "5m", "30m"]).windows == ("1m", "5m", "30m")
    for bad in ("5m", [], ["5 minutes"]):
        with pytest.raises(ValueError):
            FeatureSettings(windows=bad)

    def windows(training: dict, features: dict | None = None):
        return feature_windows(Settings.model_validate({"model": {"training": training}, "features": features or {}}))

    assert windows({"first_samples": 400}) == AutoWindows(max_long_samples=40)
    assert windows({"first_days": 1}) == AutoWindows(max_long_us=DAY_US // 10)
    assert windows({"start": "2026-01-01T00:00:00", "end": "2026-01-01T10:00:00"}) == AutoWindows(
        max_long_us=3600 * US)
    assert windows({"first_days": 1}, {"windows": ["1m", "30m"]}) == ("1m", "30m")
    fixed = Settings.model_validate({"features": {"windows": ["1m", "5m", "30m"]}})
    assert model_feature_specs(fixed) == feature_registry(fixed.sensor_families)
    assert model_feature_specs(Settings()) == feature_registry(Settings().sensor_families, "auto")


# --- the rules -------------------------------------------------------------------------------------------------


def test_auto_window_rules() -> None:
    n = auto_window_samples(1 * US)  # no cap
    assert (n.short, n.mid, n.long, n.robust_block, n.fft_block) == (1, 10, 60, 3, 30)
    n = auto_window_samples(1 * US, AutoWindows(max_long_samples=40))  # 1 Hz rig, 400-sample baseline
    assert (n.mid, n.long, n.fft_block, n.capped) == (10, 40, 20, True)
    n = auto_window_samples(300 * US, AutoWindows(max_long_us=DAY_US // 10))  # 5 min, one baseline day: 288 rows
    assert (n.mid, n.long, n.robust_block, n.fft_block) == (9, 28, 3, 14)
    n = auto_window_samples(180 * US, AutoWindows(max_long_us=DAY_US // 10))  # TEP: 3 min, one baseline day
    assert (n.mid, n.long, n.fft_block) == (10, 48, 24)
    n = auto_window_samples(1 * US, AutoWindows(max_long_samples=5))  # a tiny baseline: the floor holds
    assert (n.mid, n.long, n.robust_block, n.fft_block, n.floored) == (6, AUTO_LONG_MIN, 3, 8, True)
    for dt in (1, 10, 60, 300, 3600):
        for auto in (AutoWindows(), AutoWindows(max_long_samples=25), AutoWindows(max_long_us=DAY_US // 10)):
            n = auto_window_samples(dt * US, auto)
            assert n.short == 1 and 1 <= n.mid <= n.long // 3 and AUTO_LONG_MIN <= n.long <= 60
            assert n.robust_block >= 3 and (5 + 1) * n.robust_block <= n.long  # robust-z look-back within long
            assert n.fft_block % 2 == 0 and 8 <= n.fft_block <= n.long // 2


CASES = [  # (sample interval s, baseline rows, how the baseline is given)
    (1, 400, "samples"),
    (1, 3000, "samples"),
    (10, 600, "samples"),
    (10, 2000, "duration"),
    (60, 300, "samples"),
    (60, 1440, "duration"),
    (300, 288, "duration"),
    (300, 2000, "samples"),
]


@pytest.mark.parametrize(("interval_s", "baseline", "given"), CASES)
def test_auto_features_at_any_rate(interval_s: int, baseline: int, given: str) -> None:
    auto = (AutoWindows(max_long_samples=baseline // 10) if given == "samples"
            else AutoWindows(max_long_us=baseline * interval_s * US // 10))
    n = baseline + 500
    fleet = random_fleet(n_devices=2, n=n, interval_s=float(interval_s), seed=interval_s)
    out = device_day_features(fleet, SF, auto)
    assert out.columns == [*OUTPUT_KEY_COLUMNS, *[f.name for f in feature_registry(SF, auto)]]
    assert all_null_columns(out) == {}
    assert constant_columns(out) == []
    expected = auto_window_samples(interval_s * US, auto)
    assert expected.long <= baseline // 10
    warm = out.group_by("device_id").agg(pl.col("warmup").sum())["warmup"].to_list()
    assert warm == [expected.long] * 2  # the warm-up is the long window: at most a tenth of the baseline
    plan = window_plan(fleet, auto, SF)
    assert plan["interval_s"].to_list() == [interval_s] * 2 and plan["interval_from"].to_list() == ["mode"] * 2
    assert plan.select("short_s", "mid_s", "long_s", "fft_block").unique().rows() == [
        (interval_s, expected.mid * interval_s, expected.long * interval_s, expected.fft_block)]
    # the windows hold exactly 1 / mid / long samples
    dev0 = fleet.filter(pl.col("device_id") == "dev0")["temp_c"].to_numpy()
    got = out.filter(pl.col("device_id") == "dev0")
    r = n - 1
    np.testing.assert_array_equal(got["temp_c__mean_short"].to_numpy(), dev0.astype(np.float32))
    for win, k in (("mid", expected.mid), ("long", expected.long)):
        assert got[f"temp_c__mean_{win}"][r] == pytest.approx(np.nanmean(dev0[r - k + 1: r + 1]), rel=1e-6)
        assert got[f"temp_c__std_{win}"][r] == pytest.approx(np.nanstd(dev0[r - k + 1: r + 1], ddof=1), rel=1e-5)


def test_fixed_windows_degenerate_where_auto_windows_do_not() -> None:
    """The measured failure at 1-minute samples: with 1m/5m/30m, robust_z is all NULL and delta_1m constant (0);
    the plan says so. Auto windows give every column values."""
    fleet = random_fleet(n_devices=1, n=1500, interval_s=60.0)
    fixed = device_day_features(fleet, SF)
    assert all("robust_z" in c for c in all_null_columns(fixed)["dev0"])
    assert "temp_c__delta_1m" in constant_columns(fixed)
    notes = window_plan(fleet, ("1m", "5m", "30m"), SF)["notes"][0]
    assert "delta_1m = 0" in notes and "robust_z NULL" in notes and "spectra NULL on ~53% of rows" in notes
    assert all_null_columns(device_day_features(fleet, SF, "auto")) == {}
    assert window_plan(fleet, "auto", SF)["notes"][0] == ""


# --- devices and fleets ----------------------------------------------------------------------------------------


def test_mixed_fleet_gives_each_device_its_features_alone() -> None:
    fast = random_fleet(n_devices=1, n=2000, interval_s=1.0, seed=1)
    slow = random_fleet(n_devices=1, n=800, interval_s=60.0, seed=2).with_columns(device_id=pl.lit("slow"))
    mid = random_fleet(n_devices=1, n=900, interval_s=10.0, seed=3).with_columns(device_id=pl.lit("mid"))
    fleet = pl.concat([fast, slow, mid, fast.with_columns(device_id=pl.lit("fast2"))])
    auto = AutoWindows(max_long_us=DAY_US // 10)
    together = device_day_features(fleet, SF, auto)
    for device, alone in (("dev0", fast), ("slow", slow), ("mid", mid)):
        assert_frames_close(together.filter(pl.col("device_id") == device), device_day_features(alone, SF, auto))
    assert all_null_columns(together) == {}
    # chunks hold one interval each, and chunking changes nothing
    chunks = list(device_day_feature_chunks(fleet, SF, auto, chunk_rows=10**9))
    assert [c["device_id"].unique(maintain_order=True).to_list() for c in chunks] == [["dev0"], ["slow"], ["mid"],
                                                                                        ["fast2"]]
    assert_frames_close(device_day_features(fleet, SF, auto, chunk_rows=500), together)
    plan = window_plan(fleet, auto, SF)
    assert plan["long_s"].to_list() == [60.0, 3600.0, 600.0, 60.0]
    assert longest_window_us(auto, fleet) == 3600 * US
    assert longest_window_us(("1m", "30m")) == 1800 * US


def test_one_sensor_devices() -> None:
    rng = np.random.default_rng(5)
    states = np.array(["RUN", "IDLE"])[(np.arange(700) // 50) % 2]  # state changes and dropouts: their features vary
    for family in ("Temperature", "Vibration"):
        x = rng.normal(size=700).cumsum()
        x[rng.random(700) < 0.03] = np.nan
        df = telemetry({"x": x}, interval_s=30.0, state=states)
        out = device_day_features(df, {"x": family}, "auto")
        assert out.columns == [*OUTPUT_KEY_COLUMNS, *[f.name for f in feature_registry({"x": family}, "auto")]]
        assert all_null_columns(out) == {} and constant_columns(out) == []


def test_irregular_sampling_with_gaps() -> None:
    rng = np.random.default_rng(9)
    base = random_fleet(n_devices=1, n=3000, interval_s=10.0, seed=9)
    # a fifth of the samples lost at random, two long outages, and sub-second jitter on every timestamp
    keep = (rng.random(base.height) > 0.2) & ~pl.Series(np.arange(base.height)).is_between(800, 1100).to_numpy()
    keep &= ~((np.arange(base.height) >= 2000) & (np.arange(base.height) < 2030))
    gappy = base.filter(pl.Series(keep))
    plan = window_plan(gappy, "auto", SF)
    assert plan["interval_s"][0] == 10.0 and plan["interval_from"][0] == "mode"
    out = device_day_features(gappy, SF, "auto")
    assert all_null_columns(out) == {} and constant_columns(out) == []
    # every interval different (jitter): the most common one means nothing, the median is used
    shift = pl.Series(rng.integers(0, 500_000, gappy.height))
    jitter = gappy.with_columns(pl.col("ts") + pl.duration(microseconds=shift))
    plan = window_plan(jitter, "auto", SF)
    assert plan["interval_from"][0] == "median" and 9.0 < plan["interval_s"][0] < 11.0
    out = device_day_features(jitter, SF, "auto")
    assert all_null_columns(out) == {} and constant_columns(out) == []
    # a device of one row: no interval, only the instantaneous features have values, and nothing fails
    one = device_day_features(base.head(1), SF, "auto")
    assert one.height == 1 and one["temp_c__mean_short"][0] == pytest.approx(base["temp_c"][0], rel=1e-6)
    assert window_plan(base.head(1), "auto", SF)["interval_from"][0] == "unknown"


def test_auto_continuity_across_midnight_and_causality() -> None:
    per_day = 1440  # 60 s samples
    fleet = random_fleet(n_devices=2, n=3 * per_day, interval_s=60.0, seed=4)
    days = sorted(fleet["day"].unique())
    auto = AutoWindows(max_long_us=DAY_US // 10)
    two = device_day_features(fleet.filter(pl.col("day") >= days[1]), SF, auto)
    three = device_day_features(fleet, SF, auto)
    last = pl.col("day") == days[2]
    assert_frames_close(two.filter(last), three.filter(last))
    cut = datetime.combine(days[1], datetime.min.time()) + timedelta(hours=5)
    head = device_day_features(fleet.filter(pl.col("ts") <= cut), SF, auto)
    assert_frames_close(head, three.filter(pl.col("ts") <= cut))  # float rounding of the sliding sums only


@pytest.mark.parametrize("drop", [0.0, 0.15])
def test_auto_spectrum_of_a_sine_refreshes_within_the_long_window(drop: float) -> None:
    # 1 Hz: long = 60 samples, FFT blocks of 30 samples (bin width 1/30 Hz); 0.1 Hz sits on bin 3
    n = 30 * 40
    rng = np.random.default_rng(2)
    df = telemetry({"vibration_g": 2.0 + np.sin(2 * np.pi * 0.1 * np.arange(n))}, interval_s=1.0)
    df = df.filter(pl.Series(rng.random(n) >= drop) | (pl.int_range(pl.len()) < 2))  # rows that never arrived
    out = device_day_features(df, {"vibration_g": "Vibration"}, "auto")
    dom = out["vibration_g__dom_freq"].to_numpy()
    secs = (out["ts"] - out["ts"][0]).dt.total_seconds().to_numpy()
    assert np.isnan(dom[secs < 22]).all()  # the first block [0, 30) s is usable from its 23rd sample on
    late = secs >= 30
    got = ~np.isnan(dom[late])
    assert got.mean() > (0.99 if drop == 0 else 0.9)  # absent rows are missing samples, not lost blocks
    np.testing.assert_allclose(dom[late][got], 0.1, rtol=1e-6)
