"""Deterministic fleet simulator: realistic multi-sensor telemetry with labelled fault episodes.

Each device gets its own random stream (seeded by `(seed, device index)`), so a device's telemetry does not depend
on which other devices or days are requested: any partition can be regenerated alone and is byte-identical.
A device's whole timeline is generated and then sliced into days, so states, thermal lag and fault episodes run
continuously across midnight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
from scipy.signal import lfilter

from itap_assets.core.metrics import FaultTags
from itap_assets.core.parallel import ordered_map
from itap_assets.core.schemas import canonical_schema
from itap_assets.settings import SimulationSettings

SENSORS = ("temp_c", "vibration_g", "voltage_v", "current_a", "rpm")
STATES = ("RUN", "IDLE", "MAINT")
RUN, IDLE, MAINT = 0, 1, 2
FAULT_TYPES = ("bearing_wear", "overheat_drift", "power_spike", "sensor_dropout")
FAULT_WEIGHTS = (0.27, 0.25, 0.28, 0.20)
# What the simulator's labels mean, for evaluation (a files source says it in its config's `evaluation:`).
SIMULATOR_FAULT_TAGS = FaultTags(
    critical=("bearing_wear", "overheat_drift", "power_spike"),
    families={"bearing_wear": ("Vibration",), "overheat_drift": ("Temperature",), "power_spike": ("Voltage", "Current"),
              "sensor_dropout": ("DataQuality",)},
    routes={"bearing_wear": "maintenance", "overheat_drift": "maintenance", "power_spike": "electrical",
            "sensor_dropout": "instrumentation"},
)
# Episode duration ranges in seconds.
FAULT_DURATION_S = {
    "bearing_wear": (2 * 3600, 6 * 3600),
    "overheat_drift": (3600, 3 * 3600),
    "power_spike": (4 * 60, 12 * 60),
    "sensor_dropout": (20 * 60, 60 * 60),
}
SPORADIC_MISSING_RATE = 0.0005

TELEMETRY_SCHEMA = canonical_schema(SENSORS)


class SimulationError(ValueError):
    """A request the simulated fleet cannot answer (unknown device, day outside the simulated range)."""


def device_ids(sim: SimulationSettings) -> list[str]:
    return [f"DEV-{i:04d}" for i in range(1, sim.devices + 1)]


def simulated_days(sim: SimulationSettings) -> list[date]:
    return [sim.start + timedelta(days=d) for d in range(sim.days)]


@dataclass(frozen=True)
class DeviceProfile:
    """Per-device nominal levels: no two machines are identical."""

    ambient_c: float
    temp_rise_c: float
    thermal_tau_s: float
    vib_base_g: float
    volt_nom_v: float
    current_full_a: float
    rpm_nom: float
    load_phase_h: float
    noise_scale: float

    @staticmethod
    def draw(rng: np.random.Generator) -> DeviceProfile:
        return DeviceProfile(
            ambient_c=rng.uniform(18, 28),
            temp_rise_c=rng.uniform(25, 40),
            thermal_tau_s=rng.uniform(900, 1800),
            vib_base_g=rng.uniform(0.15, 0.35),
            volt_nom_v=rng.uniform(225, 235),
            current_full_a=rng.uniform(15, 30),
            rpm_nom=rng.uniform(1450, 1800),
            load_phase_h=rng.uniform(-1.5, 1.5),
            noise_scale=rng.uniform(0.8, 1.2),
        )


def _states(rng: np.random.Generator, n: int, dt: float) -> np.ndarray:
    """Semi-Markov operating states with realistic dwell times: long RUN stretches, short IDLE, rare MAINT."""
    codes, lengths, total, state = [], [], 0, RUN
    while total < n:
        if state == RUN:
            dwell = 1800 + rng.exponential(3 * 3600)
        elif state == IDLE:
            dwell = 300 + rng.exponential(30 * 60)
        else:
            dwell = rng.uniform(30 * 60, 90 * 60)
        k = max(1, int(dwell / dt))
        codes.append(state)
        lengths.append(k)
        total += k
        if state == RUN:
            state = MAINT if rng.random() < 0.06 else IDLE
        else:
            state = RUN
    return np.repeat(np.array(codes, dtype=np.int8), lengths)[:n]


def _smooth_noise(rng: np.random.Generator, n: int, dt: float, tau_s: float) -> np.ndarray:
    """Unit-variance AR(1) noise with correlation time tau_s (slow load wander)."""
    a = float(np.exp(-dt / tau_s))
    return lfilter([np.sqrt(1 - a * a)], [1, -a], rng.standard_normal(n))


def _first_order_lag(x: np.ndarray, dt: float, tau_s: float, x0: float) -> np.ndarray:
    a = float(np.exp(-dt / tau_s))
    y, _ = lfilter([1 - a], [1, -a], x, zi=[a * x0])
    return y


@dataclass(frozen=True)
class FaultEpisode:
    fault_id: str
    fault_tag: str
    start: int  # sample index, inclusive
    end: int  # sample index, exclusive (includes any recovery tail)
    sensor: str | None = None  # the dropped sensor for sensor_dropout
    active: int = 0  # intended samples of the active phase (even when the simulation ends before it does)
    recovery: int = 0  # samples after the active phase in which the effect decays (labelled: it is still abnormal)


def _draw_episodes(
    rng: np.random.Generator,
    device_id: str,
    states: np.ndarray,
    dt: float,
    first_faulty: int,
    fault_rate: float,
    recovery_s: dict[str, float],
) -> list[FaultEpisode]:
    n = len(states)
    faulty_days = (n - first_faulty) * dt / 86400
    if faulty_days <= 0 or fault_rate <= 0:
        return []
    count = rng.poisson(fault_rate * faulty_days)
    run_idx = np.flatnonzero(states[first_faulty:] == RUN) + first_faulty
    if count == 0 or len(run_idx) == 0:
        return []
    kinds = rng.choice(len(FAULT_TYPES), size=count, p=FAULT_WEIGHTS)
    starts = np.sort(rng.choice(run_idx, size=count, replace=False))
    episodes: list[FaultEpisode] = []
    busy_until = first_faulty
    for start, kind_idx in zip(starts, kinds):
        tag = FAULT_TYPES[kind_idx]
        lo, hi = FAULT_DURATION_S[tag]
        recovery = int(recovery_s.get(tag, 0.0) / dt)
        active = max(2, int(rng.uniform(lo, hi) / dt))
        length = active + recovery
        sensor = SENSORS[rng.integers(len(SENSORS))] if tag == "sensor_dropout" else None
        # Episodes of one device never overlap (each label names exactly one cause), and a fault's active phase
        # ends inside the simulated period (a fault cut off after a few samples has no signature to judge).
        if start < busy_until or start + active > n:
            continue
        end = min(n, int(start) + length)
        episodes.append(FaultEpisode(f"{device_id}-F{len(episodes) + 1:03d}", tag, int(start), end, sensor, active,
                                     recovery))
        busy_until = end + int(1800 / dt)
    return episodes


def _device_timeline(sim: SimulationSettings, index: int) -> pl.DataFrame:
    """The whole simulated period for one device (1-based index)."""
    rng = np.random.default_rng([sim.seed, index])
    device_id = f"DEV-{index:04d}"
    dt = sim.sample_interval_s
    n = int(round(sim.days * 86400 / dt))
    t = np.arange(n) * dt
    p = DeviceProfile.draw(rng)
    states = _states(rng, n, dt)
    run, idle, maint = states == RUN, states == IDLE, states == MAINT

    hour = t / 3600.0
    daily = 0.65 + 0.22 * np.sin(2 * np.pi * (hour - 9 + p.load_phase_h) / 24)
    load = np.clip(daily + 0.08 * _smooth_noise(rng, n, dt, 600), 0.2, 1.0)
    load = np.where(run, load, np.where(idle, 0.05, 0.0))
    ns = p.noise_scale

    speed = np.where(run, 0.85 + 0.15 * load, np.where(idle, 0.3, 0.0))
    rpm = p.rpm_nom * speed + np.where(maint, 0.0, 4 * ns * rng.standard_normal(n))
    current = p.current_full_a * np.where(maint, 0.01, 0.1 + 0.9 * load) + 0.25 * ns * rng.standard_normal(n)
    heat = np.where(run, load, np.where(idle, 0.1, 0.0))
    temp = p.ambient_c + p.temp_rise_c * _first_order_lag(heat, dt, p.thermal_tau_s, heat[0])
    temp = temp + 0.15 * ns * rng.standard_normal(n)
    vib = p.vib_base_g * (0.25 + 0.75 * speed**2) * (1 + 0.06 * ns * rng.standard_normal(n))
    vib = np.where(maint, 0.01 + 0.002 * np.abs(rng.standard_normal(n)), vib)
    volt = p.volt_nom_v - 3.0 * load + 0.6 * ns * rng.standard_normal(n)

    values = {"temp_c": temp, "vibration_g": vib, "voltage_v": volt, "current_a": current, "rpm": rpm}
    episode = np.zeros(n, dtype=np.int32)  # 0 = fault-free, k = k-th episode
    first_faulty = int(round(sim.healthy_days * 86400 / dt))
    # An overheated machine cools down with its own thermal time constant: the label covers the cool-down while
    # the excess is still clear (two time constants, down to ~13 %); the rest fades unlabelled.
    recovery_s = {"overheat_drift": 2 * p.thermal_tau_s}
    episodes = _draw_episodes(rng, device_id, states, dt, first_faulty, sim.fault_rate, recovery_s)
    for k, ep in enumerate(episodes, start=1):
        _inject(ep, values, p, speed, t, rng)
        episode[ep.start : ep.end] = k

    for name in SENSORS:
        values[name] = np.maximum(values[name], 0.0) if name != "temp_c" else values[name]
        values[name][rng.random(n) < SPORADIC_MISSING_RATE] = np.nan

    start = np.datetime64(datetime.combine(sim.start, datetime.min.time()), "us")
    ts = start + (t * 1e6).astype("timedelta64[us]")
    frame = pl.DataFrame(
        {
            "ts": ts,
            "state_code": states,
            **{name: values[name] for name in SENSORS},
            "episode": episode,
        },
        nan_to_null=True,
    )
    tags = {k: ep.fault_tag for k, ep in enumerate(episodes, start=1)}
    ids = {k: ep.fault_id for k, ep in enumerate(episodes, start=1)}
    return frame.with_columns(
        pl.col("ts").dt.date().alias("day"),
        pl.lit(device_id, dtype=pl.String).alias("device_id"),
        pl.col("state_code").replace_strict(dict(enumerate(STATES)), return_dtype=pl.String).alias("state"),
        pl.col("episode").replace_strict(tags, default=None, return_dtype=pl.String).alias("fault_tag"),
        pl.col("episode").replace_strict(ids, default=None, return_dtype=pl.String).alias("fault_id"),
    ).select(list(TELEMETRY_SCHEMA))


def _inject(
    ep: FaultEpisode,
    values: dict[str, np.ndarray],
    p: DeviceProfile,
    speed: np.ndarray,
    t: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Apply one fault's physical signature to the sensor arrays in place."""
    s, e = ep.start, ep.end
    m = e - s
    progress = np.linspace(0.0, 1.0, m)
    if ep.fault_tag == "bearing_wear":
        # Defect vibration grows over hours (with a bearing-defect tone) and friction heats the housing.
        rotating = speed[s:e] > 0
        tone = np.sin(2 * np.pi * 0.03 * t[s:e])
        values["vibration_g"][s:e] += rotating * p.vib_base_g * (0.8 + 2.5 * progress**1.5) * (1 + 0.3 * tone)
        values["temp_c"][s:e] += 3.0 + 8.0 * progress
    elif ep.fault_tag == "overheat_drift":
        # Thermal runaway, then (once the cause is removed) an exponential cool-down, never an instant drop.
        # The runaway keeps its own pace when the simulation ends before the episode would.
        span = min(len(t), s + m + 2 * ep.recovery) - s  # cooling continues (unlabelled) after the label ends
        drift = ep.active
        k = np.arange(span)
        runaway = (np.exp(2.5 * np.minimum(k, drift - 1) / (drift - 1)) - 1) / (np.exp(2.5) - 1)
        cooled = np.exp(-np.maximum(k - (drift - 1), 0) * (t[1] - t[0]) / p.thermal_tau_s)
        values["temp_c"][s : s + span] += (4.0 + 25.0 * runaway) * cooled
    elif ep.fault_tag == "power_spike":
        spikes = rng.random(m) < 0.5
        sign = rng.choice([-1.0, 1.0], size=m)
        values["voltage_v"][s:e] += 6.0 + spikes * sign * rng.uniform(25, 60, m)
        values["current_a"][s:e] += spikes * p.current_full_a * rng.uniform(0.2, 0.6, m)
    elif ep.fault_tag == "sensor_dropout":
        # The first part of the episode is missing samples, the rest a flat-line at the last good value.
        col = values[ep.sensor]
        gap = max(1, int(0.6 * m))
        last_good = col[s - 1] if s > 0 else col[s]
        col[s : s + gap] = np.nan
        col[s + gap : e] = last_good


def simulate_fleet(
    sim: SimulationSettings,
    devices: Sequence[str] | None = None,
    days: Sequence[date] | None = None,
) -> pl.DataFrame:
    """Telemetry for the requested devices and days (default: the whole fleet and period), sorted by device, ts."""
    known = device_ids(sim)
    wanted_devices = list(devices) if devices is not None else known
    unknown = sorted(set(wanted_devices) - set(known))
    if unknown:
        raise SimulationError(
            f"device(s) {unknown} are not in the simulated fleet ({known[0]}…{known[-1]}, simulation.devices="
            f"{sim.devices}); register only simulated devices or switch to `source: files`"
        )
    all_days = simulated_days(sim)
    wanted_days = sorted(set(days)) if days is not None else all_days
    outside = [d.isoformat() for d in wanted_days if d not in set(all_days)]
    if outside:
        raise SimulationError(
            f"day(s) {outside} are outside the simulated period {all_days[0]}…{all_days[-1]} "
            f"(simulation.start={sim.start}, simulation.days={sim.days})"
        )
    def timeline(device: str) -> pl.DataFrame:
        frame = _device_timeline(sim, known.index(device) + 1)
        return frame.filter(pl.col("day").is_in(wanted_days)) if len(wanted_days) != len(all_days) else frame

    # Devices are independent (each has its own seeded generator) and numpy releases the GIL: both cores.
    frames = list(ordered_map(timeline, sorted(set(wanted_devices)), workers=2))
    if not frames:
        return pl.DataFrame(schema=TELEMETRY_SCHEMA)
    return pl.concat(frames, rechunk=True)
