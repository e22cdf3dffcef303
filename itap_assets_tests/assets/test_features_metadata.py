"""The `features` materialization's per-device windows table (pure functions, no Dagster run)."""

import polars as pl

from itap_assets.assets.features import all_null_features, windows_table
from itap_assets.core.features import device_day_features
from itap_assets.core.windows import AutoWindows, window_plan
from itap_assets_tests.core.test_features import SF, random_fleet


def test_windows_table_names_each_devices_interval_windows_and_missing_features():
    fleet = pl.concat([random_fleet(n_devices=1, n=600, interval_s=1.0),
                       random_fleet(n_devices=1, n=20, interval_s=60.0).with_columns(device_id=pl.lit("short"))])
    auto = AutoWindows(max_long_us=86_400_000_000 // 10)
    out = device_day_features(fleet, SF, auto)
    nulls = all_null_features(out)
    # 20 rows at 60 s: too few for any 30-sample FFT block, an unavoidable all-NULL spectrum, and listed
    assert list(nulls) == ["short"] and all("dom_freq" in c or "band_energy" in c for c in nulls["short"])
    table = windows_table(window_plan(fleet, auto, SF), nulls, fixed=False)
    assert "| dev0 | 600 | 1 s | 1 s | 10 s | 1 min | 3 s | 30 samples | - |" in table
    assert "| short | 20 | 1 min | 1 min | 10 min | 1 h | 3 min | 30 samples | all NULL here: " in table


def test_fixed_windows_table_says_what_the_rate_breaks():
    fleet = random_fleet(n_devices=1, n=600, interval_s=60.0)
    out = device_day_features(fleet, SF)
    table = windows_table(window_plan(fleet, ("1m", "5m", "30m"), SF), all_null_features(out), fixed=True)
    assert "1m holds 1 sample" in table and "robust_z NULL" in table and "all NULL here: temp_c__robust_z_5m" in table
