"""Calibration maps a statistic to -log10 P_baseline(S >= s): monotone, unbounded, and 0 at the baseline's most
common value."""

import numpy as np

from itap_assets.core.calibration import TailCalibrator


def test_a_value_most_baseline_rows_share_scores_zero_not_the_share_above_it():
    """A statistic that is 0 on nearly every baseline row (PCA's residual when it keeps every feature it sees) has
    P(S >= 0) = 1: it used to score -log10(0.02) = 1.7 on every row, a floor under every device's score."""
    rng = np.random.default_rng(0)
    cal = TailCalibrator.fit(np.r_[np.zeros(990), rng.exponential(1.0, 10)])
    assert cal(np.array([0.0]))[0] == 0.0
    above = cal(np.array([1e-9, 0.5, 2.0, 10.0, 100.0]))
    assert above[0] >= 1.69 and np.all(np.diff(above) > 0)


def test_a_continuous_statistic_maps_monotonically_and_without_bound():
    rng = np.random.default_rng(1)
    cal = TailCalibrator.fit(rng.normal(size=2000) ** 2)
    grid = np.linspace(0.0, 400.0, 2001)
    scores = cal(grid)
    assert np.all(np.diff(scores) > 0) and scores[-1] > 10
    inside = rng.choice(np.linspace(0.01, 3.0, 300), 50)  # inside the body: -log10 of the empirical tail share
    assert np.all(scores[0] <= cal(inside))
