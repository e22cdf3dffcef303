"""Closed-form and property tests of the pure feature module (no Dagster)."""

from __future__ import annotations

import importlib.util
import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from itap_assets.core.features import (
    DATA_QUALITY_FAMILY,
    KIND_DESCRIPTIONS,
    OUTPUT_KEY_COLUMNS,
    STATE_FAMILY,
    FeatureSpec,
    device_day_features,
    feature_registry,
    parse_feature_name,
)

SF = {"temp_c": "Temperature", "vibration_g": "Vibration", "voltage_v": "Voltage", "current_a": "Current", "rpm": "RPM"}
START = datetime(2026, 1, 1)
ROOT = Path(__file__).resolve().parents[2]


def telemetry(
    values: dict[str, np.ndarray],
    *,
    interval_s: float = 10.0,
    start: datetime = START,
    device: str = "dev0",
    state: np.ndarray | str = "RUN",
) -> pl.DataFrame:
    """A validated-telemetry frame for one device; NaN in ``values`` become NULL samples."""
    n = len(next(iter(values.values())))
    ts = np.datetime64(start, "us") + (np.arange(n) * interval_s * 1e6).astype("int64").astype("timedelta64[us]")
    states = np.full(n, state) if isinstance(state, str) else np.asarray(state)
    df = pl.DataFrame({"ts": ts, "device_id": [device] * n, "state": states, **values})
    return df.select(
        pl.col("ts").cast(pl.Datetime("us")),
        pl.col("ts").dt.date().alias("day"),
        "device_id",
        "state",
        *[pl.col(s).cast(pl.Float64).fill_nan(None) for s in values],
    )


def random_fleet(n_devices: int = 2, n: int = 1500, interval_s: float = 10.0, seed: int = 0) -> pl.DataFrame:
    """Random walks + noise + NULLs + state segments + a tone, sorted by (device_id, ts)."""
    rng = np.random.default_rng(seed)
    frames = []
    for d in range(n_devices):
        t = np.arange(n) * interval_s
        vals = {}
        for i, s in enumerate(SF):
            v = 10.0 * (i + 1) + np.cumsum(rng.normal(size=n)) + rng.normal(size=n) + np.sin(2 * np.pi * t / 80.0)
            v[rng.random(n) < 0.05] = np.nan
            vals[s] = v
        states = np.array(["RUN", "IDLE", "MAINT"])[(np.arange(n) // 97 + d) % 3]
        frames.append(telemetry(vals, interval_s=interval_s, device=f"dev{d}", state=states))
    return pl.concat(frames)


def assert_frames_close(a: pl.DataFrame, b: pl.DataFrame, *, exact: bool = False) -> None:
    assert a.columns == b.columns
    assert a.select(OUTPUT_KEY_COLUMNS).equals(b.select(OUTPUT_KEY_COLUMNS))
    for c in a.columns[len(OUTPUT_KEY_COLUMNS) :]:
        x, y = a[c].to_numpy().astype(float), b[c].to_numpy().astype(float)
        if exact:
            assert np.array_equal(x, y, equal_nan=True), c
        else:
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=c)


@pytest.fixture(scope="module")
def fleet() -> pl.DataFrame:
    return random_fleet()


@pytest.fixture(scope="module")
def fleet_features(fleet: pl.DataFrame) -> pl.DataFrame:
    return device_day_features(fleet, SF)


# --- registry and output contract ----------------------------------------------------------------------


def test_registry_contract(fleet_features: pl.DataFrame) -> None:
    reg = feature_registry(SF)
    names = [f.name for f in reg]
    assert len(reg) >= 60
    assert len(set(names)) == len(names)
    assert all(isinstance(f, FeatureSpec) and f.family for f in reg)
    assert fleet_features.columns == [*OUTPUT_KEY_COLUMNS, *names]
    assert fleet_features.schema["warmup"] == pl.Boolean
    assert all(fleet_features.schema[n] == pl.Float32 for n in names)
    for f in reg:
        assert f.kind in KIND_DESCRIPTIONS
        assert parse_feature_name(f.name) == (f.sensor, f.kind, f.window)
        if f.family == STATE_FAMILY:
            assert f.sensor is None and f.name.startswith("state__")
        elif f.family == DATA_QUALITY_FAMILY:
            assert f.sensor in SF
        else:
            assert f.family == SF[f.sensor]
    spectral = {f.sensor for f in reg if f.kind == "dom_freq"}
    assert spectral == {"vibration_g", "current_a"}
    assert {f.kind for f in reg} == set(KIND_DESCRIPTIONS)


def test_any_sensor_set_and_windows() -> None:
    fams = {"p_in": "Pressure", "shaft_vib": "Vibration"}
    reg = feature_registry(fams, windows=("2m", "30s"))
    assert {f.window for f in reg} - {None} == {"30s", "2m"}
    rng = np.random.default_rng(1)
    df = telemetry({"p_in": rng.normal(size=200), "shaft_vib": rng.normal(size=200)}, interval_s=1.0)
    out = device_day_features(df, fams, windows=("2m", "30s"))
    assert out.columns == [*OUTPUT_KEY_COLUMNS, *[f.name for f in reg]]
    with pytest.raises(ValueError):
        feature_registry({"state": "Temperature"})
    with pytest.raises(ValueError):
        feature_registry(SF, windows=("5 minutes",))


def test_lazy_and_unsorted_input(fleet: pl.DataFrame, fleet_features: pl.DataFrame) -> None:
    assert_frames_close(device_day_features(fleet.lazy(), SF), fleet_features, exact=True)
    perm = np.random.default_rng(3).permutation(fleet.height)
    shuffled = fleet[perm]
    assert_frames_close(device_day_features(shuffled, SF), fleet_features[perm])


def test_empty_input() -> None:
    empty = telemetry({s: np.zeros(0) for s in SF})
    out = device_day_features(empty, SF)
    assert out.height == 0 and out.columns == [*OUTPUT_KEY_COLUMNS, *[f.name for f in feature_registry(SF)]]


# --- closed-form answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("interval_s", [1.0, 10.0])
def test_slope_of_linear_ramp_is_its_rate(interval_s: float) -> None:
    rate = 0.75  # units per minute, on a large offset over two days: a precision trap for raw sums
    n = int(2 * 86_400 / interval_s)
    t_min = np.arange(n) * interval_s / 60.0
    df = telemetry({"rpm": 3000.0 + rate * t_min}, interval_s=interval_s)
    out = device_day_features(df, {"rpm": "RPM"})
    slope = out["rpm__slope_30m"].to_numpy()
    assert math.isnan(slope[0])  # one sample: no trend
    np.testing.assert_allclose(slope[1:], rate, rtol=1e-6)
    np.testing.assert_allclose(out["rpm__roc"].to_numpy()[1:], rate, rtol=1e-6)


def test_slope_ignores_missing_samples() -> None:
    n = 400
    x = 5.0 - 2.0 * np.arange(n) * 10 / 60.0  # -2 per minute
    x[::3] = np.nan
    out = device_day_features(telemetry({"temp_c": x}), {"temp_c": "Temperature"})
    np.testing.assert_allclose(out["temp_c__slope_30m"].to_numpy()[5:], -2.0, rtol=1e-6)


@pytest.mark.parametrize(("interval_s", "freq"), [(1.0, 0.0625), (1.0, 0.3125), (10.0, 0.00625)])
def test_dominant_frequency_of_sine(interval_s: float, freq: float) -> None:
    n = 64 * 20  # START is a multiple of 64 s and of 640 s: blocks line up with row 0
    t = np.arange(n) * interval_s
    df = telemetry({"vibration_g": 2.0 + np.sin(2 * np.pi * freq * t)}, interval_s=interval_s)
    out = device_day_features(df, {"vibration_g": "Vibration"})
    dom = out["vibration_g__dom_freq"].to_numpy()
    assert np.isnan(dom[:63]).all()  # no complete block yet
    np.testing.assert_allclose(dom[63:], freq, rtol=1e-6)  # Float32 output
    share_of_nyquist = freq / (0.5 / interval_s)
    low = out["vibration_g__band_energy_low"].to_numpy()[63:]
    high = out["vibration_g__band_energy_high"].to_numpy()[63:]
    if share_of_nyquist <= 0.25:
        assert (low > 0.99).all() and (high < 0.01).all()
    else:
        assert (low < 0.01).all() and (high > 0.99).all()


def test_dominant_frequency_off_bin_within_resolution() -> None:
    n, freq = 64 * 10, 0.2
    df = telemetry({"current_a": np.sin(2 * np.pi * freq * np.arange(n))}, interval_s=1.0)
    dom = device_day_features(df, {"current_a": "Current"})["current_a__dom_freq"].to_numpy()[63:]
    assert np.all(np.abs(dom - freq) <= 1.0 / 64 / 2 + 1e-12)  # half a bin


@pytest.mark.parametrize("offset_s", [0, 10])
def test_spectrum_comes_from_the_last_complete_block(offset_s: int) -> None:
    # 1 Hz; blocks of 64 samples aligned to the epoch; the tone changes at t = 192 s after START
    n = 64 * 6
    t = np.arange(n) + offset_s
    x = np.where(t < 192, np.sin(2 * np.pi * 0.125 * t), np.sin(2 * np.pi * 0.25 * t))
    df = telemetry({"vibration_g": x}, interval_s=1.0, start=START + timedelta(seconds=offset_s))
    dom = device_day_features(df, {"vibration_g": "Vibration"})["vibration_g__dom_freq"].to_numpy()
    first_end = 63 if offset_s == 0 else 127  # a partial first block [0, 64) s gives no spectrum
    assert np.isnan(dom[t < first_end]).all()
    # the block [192, 256) s completes at t = 255: only from that row on is the new tone visible
    np.testing.assert_array_equal(dom[(t >= first_end) & (t < 255)], 0.125)
    np.testing.assert_array_equal(dom[t >= 255], 0.25)


def test_step_change_delta_from_rolling_mean() -> None:
    n, step_at = 400, 200  # 10 s samples, level 10 -> 20 at row 200
    x = np.where(np.arange(n) < step_at, 10.0, 20.0)
    out = device_day_features(telemetry({"temp_c": x}), {"temp_c": "Temperature"})
    d1, d30 = out["temp_c__delta_1m"].to_numpy(), out["temp_c__delta_30m"].to_numpy()
    for j in range(8):  # j samples after the step; the 1 m window holds 6 samples, the 30 m one 180
        r = step_at + j
        new = min(j + 1, 6)
        assert d1[r] == pytest.approx(20.0 - (20.0 * new + 10.0 * (6 - new)) / 6, abs=1e-5)
        assert d30[r] == pytest.approx(20.0 - (20.0 * (j + 1) + 10.0 * (180 - j - 1)) / 180, abs=1e-5)
    assert d1[step_at - 1] == 0.0 and d1[step_at + 6] == 0.0
    z = out["temp_c__robust_z_5m"].to_numpy()
    assert z[step_at] == 50.0  # a step out of a flat baseline is extreme but clipped, never inf
    assert not np.isinf(out.select(pl.exclude(OUTPUT_KEY_COLUMNS)).to_numpy()).any()


def test_rolling_stats_closed_form() -> None:
    x = np.arange(200, dtype=float)  # 10 s samples
    out = device_day_features(telemetry({"rpm": x}), {"rpm": "RPM"})
    r = 50
    assert out["rpm__mean_1m"][r] == pytest.approx(np.mean(x[r - 5 : r + 1]))
    assert out["rpm__mean_5m"][r] == pytest.approx(np.mean(x[r - 29 : r + 1]))
    assert out["rpm__std_5m"][r] == pytest.approx(np.std(x[r - 29 : r + 1], ddof=1), rel=1e-6)
    assert out["rpm__min_5m"][r] == x[r - 29] and out["rpm__max_5m"][r] == x[r]
    assert out["rpm__mean_30m"][199] == pytest.approx(np.mean(x[20:200]))  # 180 samples in (t - 30 m, t]
    assert out["warmup"].to_list() == [i < 180 for i in range(200)]  # history shorter than 30 m


# --- time semantics --------------------------------------------------------------------------------------


def test_future_samples_change_no_past_feature(fleet: pl.DataFrame, fleet_features: pl.DataFrame) -> None:
    rng = np.random.default_rng(11)
    cut = 900  # rows of dev0 up to and including this one must not move
    future = pl.int_range(pl.len()) > cut
    noise = pl.Series(rng.normal(size=fleet.height))
    perturbed = fleet.with_columns(
        *[pl.when(future).then(pl.col(s) * 3.0 + noise).otherwise(pl.col(s)).alias(s) for s in SF],
        pl.when(future & (pl.int_range(pl.len()) % 7 == 0)).then(pl.lit("MAINT")).otherwise("state").alias("state"),
    ).with_columns(
        pl.when(future & (pl.int_range(pl.len()) % 5 == 0)).then(None).otherwise(pl.col("rpm")).alias("rpm")
    )
    out = device_day_features(perturbed, SF)
    assert_frames_close(out.head(cut + 1), fleet_features.head(cut + 1), exact=True)
    assert not out.slice(cut + 1).equals(fleet_features.slice(cut + 1))
    # dropping the future entirely changes nothing either
    assert_frames_close(device_day_features(fleet.head(cut + 1), SF), fleet_features.head(cut + 1), exact=True)


def test_continuity_across_midnight() -> None:
    per_day = 8640  # 10 s samples
    fleet = random_fleet(n_devices=2, n=3 * per_day, seed=4)
    days = sorted(fleet["day"].unique())
    d_prev, d = days[1], days[2]
    two_days = device_day_features(fleet.filter(pl.col("day") >= d_prev), SF)
    three_days = device_day_features(fleet, SF)
    day_d = pl.col("day") == d
    assert_frames_close(two_days.filter(day_d), three_days.filter(day_d))
    at = pl.col("ts") == datetime.combine(d, datetime.min.time()) + timedelta(seconds=10)
    assert two_days.filter(at).height == 2
    assert_frames_close(two_days.filter(at), three_days.filter(at))
    # warm-up: the first 30 min of each device's first day only
    warm = two_days.filter("warmup")
    assert warm["day"].unique().to_list() == [d_prev]
    assert warm.group_by("device_id").len()["len"].sort().to_list() == [180, 180]
    assert not two_days.filter(day_d)["warmup"].any()


def test_devices_never_mix(fleet: pl.DataFrame, fleet_features: pl.DataFrame) -> None:
    for dev in ("dev0", "dev1"):
        alone = device_day_features(fleet.filter(pl.col("device_id") == dev), SF)
        assert_frames_close(alone, fleet_features.filter(pl.col("device_id") == dev))
    # the same samples under two device ids give the same features twice
    dev0 = fleet.filter(pl.col("device_id") == "dev0")
    out = device_day_features(pl.concat([dev0, dev0.with_columns(device_id=pl.lit("dev9"))]), SF)
    a = out.filter(pl.col("device_id") == "dev0").drop(OUTPUT_KEY_COLUMNS).to_numpy()
    b = out.filter(pl.col("device_id") == "dev9").drop(OUTPUT_KEY_COLUMNS).to_numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_chunking_changes_nothing(fleet: pl.DataFrame, fleet_features: pl.DataFrame) -> None:
    assert_frames_close(device_day_features(fleet, SF, chunk_rows=100), fleet_features)


def test_gap_longer_than_windows() -> None:
    x = np.arange(400, dtype=float)
    df = telemetry({"temp_c": x})
    gappy = df.filter((pl.col("ts") < datetime(2026, 1, 1, 0, 20)) | (pl.col("ts") >= datetime(2026, 1, 1, 1, 0)))
    out = device_day_features(gappy, {"temp_c": "Temperature"})
    after = out.filter(pl.col("ts") == datetime(2026, 1, 1, 1, 0)).row(0, named=True)
    assert after["temp_c__mean_30m"] == 360.0  # only the sample after the gap is in any window
    assert after["temp_c__std_5m"] is None and after["temp_c__slope_30m"] is None
    assert after["temp_c__roc"] is None  # previous valid sample is older than the 30 m horizon
    assert after["temp_c__time_since_dropout"] == 1800.0 and after["warmup"] is False


def test_no_nan_or_inf(fleet_features: pl.DataFrame) -> None:
    feats = fleet_features.drop(OUTPUT_KEY_COLUMNS)
    assert feats.select(pl.all().is_nan().any() | pl.all().is_infinite().any()).row(0) == (False,) * feats.width


# --- missing values and events ----------------------------------------------------------------------------


def test_missing_streak_and_dropout() -> None:
    x = np.ones(60)
    x[10:13] = np.nan
    x[20] = np.nan
    x[35:] = np.nan  # dead sensor: 25 samples, windows run empty after 1 m
    out = device_day_features(telemetry({"temp_c": x + np.arange(60)}), {"temp_c": "Temperature"})
    streak = out["temp_c__missing_streak"].to_list()
    assert streak[9:15] == [0, 1, 2, 3, 0, 0]
    assert streak[20] == 1 and streak[21] == 0
    assert streak[35:] == list(range(1, 26))
    since = out["temp_c__time_since_dropout"].to_list()
    assert since[:10] == [10.0 * i for i in range(10)]  # since the start of history
    assert since[10:13] == [0.0, 0.0, 0.0] and since[13:16] == [10.0, 20.0, 30.0]
    mean_1m = out["temp_c__mean_1m"]
    assert mean_1m[39] is not None and mean_1m[40] is None  # 6 samples per minute, then empty
    assert out["temp_c__std_30m"][59] is not None  # the 30 m window still holds samples
    assert out["temp_c__roc"][35] is None and out["temp_c__delta_1m"][35] is None


def test_flatline_only_while_running() -> None:
    n = 120  # 10 s samples, 20 min
    x = np.where(np.arange(n) < 60, np.random.default_rng(0).normal(size=n), 7.0)
    states = np.where(np.arange(n) < 100, "RUN", "IDLE")
    out = device_day_features(telemetry({"rpm": x}, state=states), {"rpm": "RPM"})
    flat = out["rpm__flatline_5m"].to_numpy()
    assert np.isnan(flat[0])  # one sample: undecidable
    assert (flat[1:89] == 0).all()  # the 5 m window (30 samples) still sees the noisy part up to row 89
    assert (flat[89:100] == 1).all()  # flat for a full window while RUN
    assert (flat[100:] == 0).all()  # still flat, but IDLE


def test_state_transitions_and_time_since_change() -> None:
    states = np.array(["RUN"] * 30 + ["IDLE"] * 6 + ["RUN"] * 300)
    out = device_day_features(telemetry({"rpm": np.ones(states.size)}, state=states), {"rpm": "RPM"})
    tr5, tr30 = out["state__transitions_5m"].to_list(), out["state__transitions_30m"].to_list()
    since = out["state__time_since_change"].to_list()
    assert tr5[29] == 0 and tr5[30] == 1 and tr5[36] == 2 and tr5[36 + 29] == 1 and tr5[36 + 30] == 0
    assert tr30[36 + 179] == 1 and tr30[30 + 180] == 1 and tr30[36 + 180] == 0
    assert since[:30] == [10.0 * i for i in range(30)] and since[30] == 0.0 and since[35] == 50.0
    assert since[36] == 0.0 and since[36 + 179] == 1790.0 and since[36 + 250] == 1800.0  # capped at 30 m


# --- the pandas reference agrees (test oracle) ----------------------------------------------------------


def _reference():
    """The pandas reference of bench/ (pandas is a dev dependency) as an independent oracle."""
    path = ROOT / "bench" / "pandas_reference.py"
    spec = importlib.util.spec_from_file_location("pandas_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.reference_features


@pytest.mark.parametrize("jitter", [False, True])
def test_matches_pandas_reference(fleet: pl.DataFrame, jitter: bool) -> None:
    reference_features = _reference()
    df = fleet.filter(  # a gap longer than every window, and one shorter than the robust-z window
        ~pl.col("ts").is_between(datetime(2026, 1, 1, 1), datetime(2026, 1, 1, 1, 40)),
        ~pl.col("ts").is_between(datetime(2026, 1, 1, 2), datetime(2026, 1, 1, 2, 2, 30)),
    )
    if jitter:  # off-grid timestamps take the general rolling_*_by path
        df = df.with_columns(pl.col("ts") + pl.duration(microseconds=pl.int_range(pl.len()) * 7919 % 1000))
    out = device_day_features(df, SF)
    ref = reference_features(df.to_pandas(), SF)
    assert list(ref.columns) == out.columns
    assert (ref["warmup"].to_numpy() == out["warmup"].to_numpy()).all()
    for c in out.columns[len(OUTPUT_KEY_COLUMNS) :]:
        np.testing.assert_allclose(
            out[c].to_numpy().astype(float), ref[c].to_numpy().astype(float), rtol=1e-5, atol=1e-5, err_msg=c
        )


def test_robust_z_needs_a_spread() -> None:
    # 10 s samples with 2 of every 3 missing: 1 m blocks hold 2 samples, too few for a spread
    x = np.arange(200, dtype=float)
    x[np.arange(200) % 3 != 0] = np.nan
    out = device_day_features(telemetry({"temp_c": x}), {"temp_c": "Temperature"})
    assert out["temp_c__robust_z_5m"].null_count() == 200
    assert out["temp_c__mean_5m"].null_count() == 0
