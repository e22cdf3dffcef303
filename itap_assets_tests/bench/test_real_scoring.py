"""bench/real_scoring.py: the NAB scorer port on hand-made windows and detections, and the textbook PCA reference
on synthetic data (pure functions, no data set)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("real_scoring", ROOT / "bench" / "real_scoring.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("real_scoring", mod)  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


rs = _module()
ROWS = 4000  # probationary period: 600 rows
WINDOWS = [(1000, 1199), (3000, 3099)]


def test_probationary_period_is_15_percent_capped_at_750_rows() -> None:
    assert rs.probationary_length(4032) == 604
    assert rs.probationary_length(1127) == 169
    assert rs.probationary_length(18050) == 750


def test_perfect_detector_scores_100_and_null_detector_0() -> None:
    perfect = rs.nab_score(ROWS, WINDOWS, [a for a, _ in WINDOWS])
    assert perfect.raw == pytest.approx(2.0) and perfect.normalised == pytest.approx(100.0)
    assert perfect.detected == 2 and perfect.false_positives == 0
    null = rs.nab_score(ROWS, WINDOWS, [])
    assert null.raw == pytest.approx(-2.0) == null.null  # -A_FN per window
    assert null.normalised == pytest.approx(0.0)


def test_one_false_positive_before_any_window_costs_a_fp() -> None:
    one_fp = rs.nab_score(ROWS, WINDOWS, [800])
    assert one_fp.raw == pytest.approx(-2.0 - 0.11)
    assert one_fp.false_positives == 1
    assert one_fp.normalised == pytest.approx(100 * -0.11 / 4.0)


def test_false_positives_after_a_window_are_weighted_by_distance() -> None:
    near = rs.nab_score(ROWS, WINDOWS, [1200]).raw + 2.0  # the row right after the first window
    far = rs.nab_score(ROWS, WINDOWS, [1199 + 3 * 199 + 1]).raw + 2.0  # beyond 3 window widths: the full cost
    assert -0.11 < near < 0
    assert near == pytest.approx(0.11 * rs.scaled_sigmoid(1 / 199))
    assert far == pytest.approx(-0.11)


def test_only_the_first_detection_in_a_window_counts_and_earlier_is_better() -> None:
    first = rs.nab_score(ROWS, WINDOWS, [1000, 1100, 1199, 3000])
    assert first.raw == pytest.approx(2.0) and first.false_positives == 0
    late = rs.nab_score(ROWS, WINDOWS, [1199, 3000]).raw - 1.0  # the window's last row
    middle = rs.nab_score(ROWS, WINDOWS, [1100, 3000]).raw - 1.0
    assert 0 < late < middle < 1.0
    assert late == pytest.approx(rs.scaled_sigmoid(-1 / 200) / rs.scaled_sigmoid(-1.0))


def test_detections_in_the_probationary_period_are_ignored() -> None:
    assert rs.nab_score(ROWS, WINDOWS, [0, 10, 599]).raw == pytest.approx(-2.0)
    # a window wholly inside the probationary period is not scored (neither reward nor cost)
    early = rs.nab_score(ROWS, [(100, 200), *WINDOWS], [150])
    assert early.raw == pytest.approx(-2.0) and early.null == pytest.approx(-2.0) and early.perfect == 3.0


def test_a_file_without_windows_has_no_normalised_score() -> None:
    s = rs.nab_score(ROWS, [], [700, 900])
    assert s.raw == pytest.approx(-0.22) and s.normalised is None


def test_scaled_sigmoid_matches_nab() -> None:
    assert rs.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert rs.scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert rs.scaled_sigmoid(0.0) == 0.0
    assert rs.scaled_sigmoid(3.5) == -1.0


def test_timestamps_to_rows() -> None:
    ts = np.array(["2014-01-01T00:00", "2014-01-01T00:05", "2014-01-01T00:05", "2014-01-01T00:10",
                   "2014-01-01T00:20"], dtype="datetime64[us]")
    assert rs.window_rows(ts, [(ts[1], ts[3])]) == [(1, 3)]
    assert rs.window_rows(ts, [(ts[0], ts[1])]) == [(0, 1)]  # the first row of a duplicated end timestamp
    events = np.array(["2014-01-01T00:06", "2014-01-01T00:16", "2013-12-31T23:00"], dtype="datetime64[us]")
    assert rs.nearest_rows(ts, events).tolist() == [1, 4, 0]
    assert rs.rising_edges(np.array([True, True, False, True, False, False, True])).tolist() == [0, 3, 6]


# --------------------------------------------------------------------------------------------------- PCA


def _plant(rng: np.random.Generator, n: int) -> np.ndarray:
    """10 correlated variables driven by 3 latent factors plus noise, on different scales."""
    mixing = np.random.default_rng(0).normal(size=(3, 10))
    return (rng.normal(size=(n, 3)) @ mixing + 0.3 * rng.normal(size=(n, 10))) * np.arange(1, 11) + 100


def test_pca_false_alarm_rate_near_one_percent_per_statistic_and_a_shift_is_found() -> None:
    rng = np.random.default_rng(1)
    monitor = rs.fit_pca_monitor(_plant(rng, 3000), components=3)
    normal = _plant(rng, 20000)
    t2, q = monitor.statistics(normal)
    assert 0.005 < np.mean(t2 > monitor.t2_limit) < 0.02
    assert 0.005 < np.mean(q > monitor.q_limit) < 0.02
    faulty = normal[:2000].copy()
    faulty[:, 4] += 3 * normal[:, 4].std()
    assert monitor.flags(faulty).mean() > 0.9


def test_t2_limit_and_jackson_mudholkar() -> None:
    monitor = rs.fit_pca_monitor(np.random.default_rng(2).normal(size=(350, 52)), components=9)
    assert monitor.t2_limit == pytest.approx(22.72, abs=0.01)  # 9 (349)(351) / (350 · 341) · F(9, 341; 0.99)
    # Q = sum of lambda_j · chi²(1) over the discarded components: Jackson-Mudholkar's limit is close to the
    # Monte Carlo 99 % quantile (43 residual components, as for TEP), and to chi²(1) for a single one
    lam = np.linspace(0.1, 1.0, 43)
    mc = np.quantile((np.random.default_rng(3).normal(size=(200000, lam.size)) ** 2) @ lam, 0.99)
    assert rs.jackson_mudholkar(lam, 0.99) == pytest.approx(mc, rel=0.01)
    assert rs.jackson_mudholkar(np.ones(1), 0.99) == pytest.approx(6.635, rel=0.01)
    assert math.isfinite(monitor.q_limit) and monitor.q_limit > 0
