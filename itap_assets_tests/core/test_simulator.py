from datetime import date

import polars as pl
import pytest

from itap_assets.core.simulator import (
    FAULT_TYPES,
    SENSORS,
    SimulationError,
    device_ids,
    simulate_fleet,
)
from itap_assets.settings import SimulationSettings

FLEET = SimulationSettings(devices=6, days=3, sample_interval_s=10, seed=11, healthy_days=1, fault_rate=4.0)


@pytest.fixture(scope="module")
def fleet() -> pl.DataFrame:
    return simulate_fleet(FLEET)


def test_same_config_gives_identical_tables(fleet):
    again = simulate_fleet(FLEET)
    assert fleet.equals(again)
    assert fleet.hash_rows().sum() == again.hash_rows().sum()


def test_another_seed_gives_other_data(fleet):
    other = simulate_fleet(FLEET.model_copy(update={"seed": 12}))
    assert not fleet.equals(other)


def test_a_partition_is_the_same_alone_as_in_the_whole_fleet(fleet):
    alone = simulate_fleet(FLEET, devices=["DEV-0003"], days=[date(2026, 1, 2)])
    within = fleet.filter((pl.col("device_id") == "DEV-0003") & (pl.col("day") == date(2026, 1, 2)))
    assert alone.equals(within)
    assert alone.height == 8640


def test_schema_and_ids(fleet):
    assert fleet.columns == ["ts", "day", "device_id", "state", *SENSORS, "fault_tag", "fault_id"]
    assert fleet.schema["ts"] == pl.Datetime("us")
    assert fleet.schema["day"] == pl.Date
    assert sorted(fleet["device_id"].unique()) == device_ids(FLEET) == [f"DEV-000{i}" for i in range(1, 7)]
    assert set(fleet["state"].unique()) == {"RUN", "IDLE", "MAINT"}
    assert (fleet["ts"].dt.date() == fleet["day"]).all()


def test_no_two_devices_are_identical(fleet):
    healthy_run = fleet.filter((pl.col("state") == "RUN") & pl.col("fault_tag").is_null())
    levels = healthy_run.group_by("device_id").agg(pl.col(s).median() for s in SENSORS)
    for sensor in SENSORS:
        assert levels[sensor].n_unique() == FLEET.devices
    assert levels["current_a"].max() / levels["current_a"].min() > 1.1
    assert levels["rpm"].max() - levels["rpm"].min() > 20


def test_load_drives_current_rpm_and_temperature_together(fleet):
    dev = fleet.filter((pl.col("device_id") == "DEV-0001") & (pl.col("state") == "RUN") & pl.col("fault_tag").is_null())
    corr = dev.select(pl.corr("current_a", "rpm"), pl.corr("current_a", "temp_c").alias("ct")).row(0)
    assert corr[0] > 0.5
    assert corr[1] > 0.2


def test_states_shape_the_signals(fleet):
    by_state = fleet.group_by("state").agg(pl.col("rpm").mean(), pl.col("current_a").mean())
    rpm = dict(zip(by_state["state"], by_state["rpm"]))
    assert rpm["RUN"] > rpm["IDLE"] > rpm["MAINT"]
    assert rpm["MAINT"] < 50


def test_healthy_days_have_no_faults(fleet):
    assert fleet.filter(pl.col("day") == FLEET.start)["fault_tag"].null_count() == 8640 * FLEET.devices


def test_every_fault_type_is_labelled_by_episode(fleet):
    faults = fleet.filter(pl.col("fault_tag").is_not_null())
    assert set(faults["fault_tag"].unique()) == set(FAULT_TYPES)
    per_episode = faults.group_by("fault_id").agg(pl.col("fault_tag").n_unique(), pl.col("device_id").n_unique())
    assert (per_episode["fault_tag"] == 1).all() and (per_episode["device_id"] == 1).all()
    assert fleet.select((pl.col("fault_tag").is_null() == pl.col("fault_id").is_null()).all()).item()


@pytest.fixture(scope="module")
def injected(fleet) -> pl.DataFrame:
    """Per faulty row, sensor value minus the same device's value without faults: the fault's own signature."""
    clean = simulate_fleet(FLEET.model_copy(update={"fault_rate": 0.0}))
    joined = fleet.join(clean, on=["device_id", "ts"], suffix="_clean")
    return joined.filter(pl.col("fault_tag").is_not_null()).select(
        "device_id", "ts", "state", "fault_tag", "fault_id",
        *[(pl.col(s) - pl.col(f"{s}_clean")).alias(s) for s in SENSORS],
    )


def _late(injected: pl.DataFrame, tag: str) -> pl.DataFrame:
    """Mean injected change per episode over its last quarter."""
    rows = injected.filter(pl.col("fault_tag") == tag).with_columns(
        ((pl.col("ts") - pl.col("ts").min().over("fault_id")) / (pl.col("ts").max() - pl.col("ts").min()).over(
            "fault_id")).alias("progress")
    )
    return rows.filter(pl.col("progress") >= 0.75).group_by("fault_id").agg(pl.col(s).mean() for s in SENSORS)


def test_bearing_wear_raises_vibration_and_temperature_over_hours(injected):
    late = _late(injected, "bearing_wear")
    assert late.height >= 1
    assert (late["vibration_g"] > 0.3).all()
    assert (late["temp_c"] > 8).all()
    assert (late["voltage_v"].abs() < 1e-9).all()


def test_overheat_drift_is_a_thermal_runaway_then_a_smooth_cool_down(injected):
    eps = injected.filter(pl.col("fault_tag") == "overheat_drift").sort("ts").group_by("fault_id").agg(
        pl.col("temp_c").first().alias("first"), pl.col("temp_c").max().alias("peak"),
        pl.col("temp_c").last().alias("last"), pl.col("temp_c").diff().abs().max().alias("largest_step"),
    )
    assert eps.height >= 1
    assert (eps["first"] < 6).all() and (eps["peak"] > 25).all()
    assert (eps["last"] < eps["peak"] / 2).all()  # labelled until it has cooled down
    assert (eps["largest_step"] < 2).all()  # no instant jump or drop


def test_power_spike_is_short_voltage_and_current_transients(fleet, injected):
    spans = fleet.filter(pl.col("fault_tag") == "power_spike").group_by("fault_id").agg(
        (pl.col("ts").max() - pl.col("ts").min()).dt.total_seconds().alias("span_s")
    )
    assert (spans["span_s"] <= 12 * 60).all()
    spikes = injected.filter(pl.col("fault_tag") == "power_spike").group_by("fault_id").agg(
        pl.col("voltage_v").abs().max(), pl.col("current_a").max()
    )
    assert (spikes["voltage_v"] > 25).all() and (spikes["current_a"] > 2).all()


def test_sensor_dropout_is_missing_then_flat_on_one_sensor(fleet):
    for fid in fleet.filter(pl.col("fault_tag") == "sensor_dropout")["fault_id"].unique():
        ep = fleet.filter(pl.col("fault_id") == fid)
        nulls = {s: ep[s].null_count() for s in SENSORS}
        dropped = max(nulls, key=nulls.get)
        assert nulls[dropped] >= 0.5 * ep.height
        tail = ep[dropped].drop_nulls()
        assert tail.n_unique() == 1  # flat-line at the last good value
        others = [s for s in SENSORS if s != dropped]
        assert all(nulls[s] <= 2 for s in others)


def test_unknown_device_is_a_clear_error():
    with pytest.raises(SimulationError, match=r"DEV-0099.*not in the simulated fleet"):
        simulate_fleet(FLEET, devices=["DEV-0099"])


def test_day_outside_the_simulation_is_a_clear_error():
    with pytest.raises(SimulationError, match=r"2026-02-01.*outside the simulated period"):
        simulate_fleet(FLEET, days=[date(2026, 2, 1)])
