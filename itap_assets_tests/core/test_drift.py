import numpy as np
import pytest

from itap_assets.core.drift import drifted_features, feature_profile, psi

RNG = np.random.default_rng(0)
BASE = np.column_stack([RNG.normal(0, 1, 5000), RNG.normal(10, 2, 5000), RNG.integers(0, 2, 5000)]).astype(float)
NAMES = ["a", "b", "flag"]


def test_the_baseline_against_itself_is_stable():
    profile = feature_profile(BASE, NAMES)
    for j, name in enumerate(NAMES):
        assert psi(BASE[:, j], **profile[name]) == pytest.approx(0.0, abs=1e-9)


def test_a_fresh_sample_of_the_same_distribution_does_not_drift():
    profile = feature_profile(BASE, NAMES)
    fresh = np.column_stack([RNG.normal(0, 1, 2000), RNG.normal(10, 2, 2000), RNG.integers(0, 2, 2000)])
    assert drifted_features(fresh, NAMES, profile) == {}


def test_a_shifted_feature_is_named_and_the_others_are_not():
    profile = feature_profile(BASE, NAMES)
    shifted = np.column_stack([RNG.normal(1.5, 1, 2000), RNG.normal(10, 2, 2000), RNG.integers(0, 2, 2000)])
    drifted = drifted_features(shifted, NAMES, profile)
    assert list(drifted) == ["a"]
    assert drifted["a"] > 0.25


def test_ties_and_missing_values_are_handled():
    profile = feature_profile(BASE, NAMES)
    assert profile["flag"]["edges"] == [0.0, 1.0]  # a 0/1 feature: few, uneven bins
    assert sum(profile["flag"]["expected"]) == pytest.approx(1.0)
    assert psi(np.array([np.nan, np.nan]), **profile["a"]) is None
    all_ones = np.ones(500)
    assert psi(all_ones, **profile["flag"]) > 0.25
