import math

import numpy as np
import polars as pl
import pytest

from itap_assets.core.thresholds import (
    fit_gpd_tail,
    k_of_n,
    k_of_n_expr,
    k_of_n_statistic,
    pot_threshold,
    pot_threshold_details,
    quantile_threshold,
)


def _brute_k_of_n(flags, k, n):
    return np.array([flags[max(0, i - n + 1) : i + 1].sum() >= k for i in range(len(flags))])


# -- POT ------------------------------------------------------------------------------------------------------------


def test_pot_recovers_exponential_quantile():
    rng = np.random.default_rng(1)
    x = rng.exponential(1.0, 50_000)
    thr = pot_threshold(x, tail_quantile=0.98, risk=1e-4)
    assert thr == pytest.approx(-math.log(1e-4), rel=0.12)
    # extrapolates beyond what an empirical quantile of 5,000 points could give
    small = x[:5_000]
    assert pot_threshold(small, risk=1e-5) > small.max()


def test_pot_recovers_heavy_gpd_tail():
    rng = np.random.default_rng(2)
    xi, sigma = 0.3, 1.0
    x = rng.pareto(1 / xi, 100_000) * sigma / xi  # GPD(xi, sigma) == Lomax
    true = sigma / xi * ((1e-4) ** -xi - 1)
    details = pot_threshold_details(x, tail_quantile=0.95, risk=1e-4)
    assert details["method"] == "gpd"
    assert details["xi"] == pytest.approx(xi, abs=0.1)
    assert details["threshold"] == pytest.approx(true, rel=0.25)


def test_pot_monotone_in_risk_and_never_below_u():
    rng = np.random.default_rng(3)
    x = rng.normal(size=20_000)
    thresholds = [pot_threshold(x, risk=r) for r in (1e-2 / 2, 1e-3, 1e-4, 1e-5)]
    assert thresholds == sorted(thresholds)
    assert thresholds[0] >= np.quantile(x, 0.98)


def test_pot_fallbacks():
    # too few points above the tail quantile -> empirical quantile (the max for tiny risks)
    few = np.arange(30, dtype=float)
    d = pot_threshold_details(few, risk=1e-4)
    assert d["method"] == "empirical" and d["threshold"] == pytest.approx(29.0, abs=0.01)
    # flat tail (all exceedances equal): exponential tail with the mean excess as scale
    flat = np.r_[np.zeros(9_000), np.ones(1_000)]
    d = pot_threshold_details(flat, tail_quantile=0.5, risk=1e-4)
    assert d["method"] == "exponential"
    assert d["threshold"] == pytest.approx(0.0 + 1.0 * math.log(0.1 / 1e-4))
    # risk inside the body -> empirical quantile
    x = np.random.default_rng(4).exponential(size=10_000)
    d = pot_threshold_details(x, tail_quantile=0.98, risk=0.05)
    assert d["method"] == "empirical_body"
    assert d["threshold"] == pytest.approx(np.quantile(x, 0.95))
    # non-finite values are ignored
    assert pot_threshold(np.r_[x, np.nan, np.inf]) == pytest.approx(pot_threshold(x))


def test_threshold_errors():
    with pytest.raises(ValueError):
        pot_threshold(np.array([np.nan, np.nan]))
    with pytest.raises(ValueError):
        pot_threshold(np.arange(100.0), risk=0.0)
    with pytest.raises(ValueError):
        quantile_threshold(np.arange(10.0), 1.5)
    with pytest.raises(ValueError):
        fit_gpd_tail(np.arange(10.0), tail_quantile=1.0)


def test_quantile_threshold():
    x = np.r_[np.arange(101.0), np.nan]
    assert quantile_threshold(x, 0.9) == pytest.approx(90.0)


def test_gpd_tail_sf_is_monotone_and_finite():
    x = np.random.default_rng(5).uniform(size=20_000)  # bounded tail: xi < 0
    tail = fit_gpd_tail(x)
    grid = np.linspace(tail.u, 10.0, 50)
    v = tail.neg_log10_sf(grid)
    assert np.all(np.isfinite(v)) and np.all(np.diff(v) >= 0)


# -- k-of-n ---------------------------------------------------------------------------------------------------------


def test_k_of_n_hand_case():
    f = np.array([1, 0, 1, 0, 0, 1, 1, 0, 0, 0], dtype=bool)
    assert k_of_n(f, 2, 3).tolist() == [False, False, True, False, False, False, True, True, False, False]
    assert k_of_n(f, 1, 1).tolist() == f.tolist()
    assert k_of_n(np.array([], dtype=bool), 2, 3).size == 0


@pytest.mark.parametrize("k,n", [(1, 1), (1, 3), (2, 3), (3, 3), (3, 5), (4, 10)])
def test_k_of_n_matches_brute_force_and_statistic(k, n):
    rng = np.random.default_rng(k * 10 + n)
    s = rng.normal(size=500)
    s[rng.random(500) < 0.05] = np.nan
    for t in (-0.5, 0.5, 1.5):
        flags = s > t
        expected = _brute_k_of_n(flags, k, n)
        assert np.array_equal(k_of_n(flags, k, n), expected)
        assert np.array_equal(k_of_n_statistic(s, k, n) > t, expected)


def test_k_of_n_rejects_bad_parameters():
    with pytest.raises(ValueError):
        k_of_n(np.ones(3, dtype=bool), 3, 2)
    with pytest.raises(ValueError):
        k_of_n_statistic(np.ones(3), 0, 2)




def test_k_of_n_expr_is_per_device():
    rng = np.random.default_rng(2)
    flags = rng.random(60) < 0.4
    frame = pl.DataFrame({"device_id": ["a"] * 30 + ["b"] * 30, "flag": flags})
    got = frame.select(k_of_n_expr("flag", 2, 3).alias("smooth"))["smooth"].to_numpy()
    want = np.concatenate([k_of_n(flags[:30], 2, 3), k_of_n(flags[30:], 2, 3)])  # b restarts: no carry-over from a
    np.testing.assert_array_equal(got, want)
