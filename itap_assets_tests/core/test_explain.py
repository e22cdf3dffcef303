from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest

from itap_assets.core.explain import (
    explain_points,
    explain_schema,
    explained_families,
    feature_family_map,
)

NAMES = ["temp_mean", "temp_std", "vib_mean", "volt_mean", "cur_mean", "temp_missing"]
FAMILIES = {
    "temp_mean": "Temperature",
    "temp_std": "Temperature",
    "vib_mean": "Vibration",
    "volt_mean": "Voltage",
    "cur_mean": "Current",
    "temp_missing": "DataQuality",
}


@dataclass(frozen=True)
class Spec:
    name: str
    sensor: str | None
    family: str
    kind: str = "mean"
    window: str | None = None


def test_family_percentages_and_top_features():
    a = np.array(
        [
            [3.0, 1.0, 4.0, 0.0, 0.0, 2.0],  # Temperature 40 %, Vibration 40 % (tie -> mapping order), DQ 20 %
            [0.0, 0.0, 1.0, 6.0, 3.0, 0.0],
        ]
    )
    out = explain_points(a, NAMES, FAMILIES, top_k=2)
    families = ["Temperature", "Vibration", "Voltage", "Current", "DataQuality"]  # the mapping's order
    assert explained_families(NAMES, FAMILIES) == families
    assert out.schema == pl.Schema(explain_schema(families))
    assert out["top_family"].to_list() == ["Temperature", "Voltage"]
    assert out["family_pct"][0] == {"Temperature": 40.0, "Vibration": 40.0, "Voltage": 0.0, "Current": 0.0,
                                    "DataQuality": 20.0}
    assert out["family_pct"][1] == {"Temperature": 0.0, "Vibration": 10.0, "Voltage": 60.0, "Current": 30.0,
                                    "DataQuality": 0.0}
    assert out["top_features"][0].to_list() == [{"feature": "vib_mean", "pct": 40.0},
                                                {"feature": "temp_mean", "pct": 30.0}]
    assert out["top_features"][1].to_list() == [{"feature": "volt_mean", "pct": 60.0},
                                                {"feature": "cur_mean", "pct": 30.0}]


def test_top_features_are_the_largest_first_with_ties_in_feature_order():
    # given rows with ties, fewer positive features than top_k, and no attribution at all
    a = np.array([[1.0, 2.0, 2.0, 0.0, 2.0, 1.0], [0.0, 0.0, 0.0, 3.0, 0.0, 0.0], [5.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    out = explain_points(a, NAMES, FAMILIES, top_k=3)
    names = [[e["feature"] for e in row] for row in out["top_features"].to_list()]
    # then the order is a stable sort by share, and features with no share are left out
    assert names == [["temp_std", "vib_mean", "cur_mean"], ["volt_mean"], ["temp_mean", "temp_std", "vib_mean"]]


def test_percentages_sum_to_100_on_random_rows():
    rng = np.random.default_rng(0)
    a = rng.exponential(size=(200, len(NAMES))) ** 3
    out = explain_points(a, NAMES, FAMILIES)
    shares = out["family_pct"].struct.unnest()
    assert shares.select(pl.sum_horizontal(pl.all())).to_series().to_list() == pytest.approx([100.0] * 200, abs=0.1)
    assert out["top_features"].list.len().to_list() == [5] * 200
    # the top family is the largest share, and so the family of the largest feature sums
    families = explained_families(NAMES, FAMILIES)
    per_family = np.stack([a[:, [i for i, n in enumerate(NAMES) if FAMILIES[n] == f]].sum(axis=1) for f in families])
    assert out["top_family"].to_list() == [families[i] for i in per_family.argmax(axis=0)]


def test_zero_negative_and_nonfinite_attribution():
    a = np.array(
        [
            [0.0] * 6,
            [np.nan, -5.0, 0.0, 0.0, 0.0, 0.0],
            [np.inf, 1.0, 0.0, 0.0, 0.0, 0.0],
            [-1.0, 0.0, 2.0, 0.0, 0.0, 0.0],
        ]
    )
    out = explain_points(a, NAMES, FAMILIES)
    assert out["top_family"].to_list() == [None, None, "Temperature", "Vibration"]
    assert out["family_pct"][0] is None and out["top_features"][1] is None
    assert out["family_pct"][3]["Vibration"] == 100.0 and sum(out["family_pct"][3].values()) == 100.0


def test_unknown_features_and_empty_input():
    out = explain_points(np.array([[1.0, 3.0]]), ["x", "temp_mean"], {"temp_mean": "Temperature"})
    assert out["family_pct"][0] == {"Temperature": 75.0, "Other": 25.0}
    empty = explain_points(np.zeros((0, len(NAMES))), NAMES, FAMILIES)
    assert empty.height == 0 and empty.schema == pl.Schema(explain_schema(explained_families(NAMES, FAMILIES)))
    with pytest.raises(ValueError):
        explain_points(np.zeros((2, 3)), NAMES, FAMILIES)


def test_data_quality_features_keep_their_family():
    """A dropout is an instrumentation problem: its features explain as DataQuality, not as the sensor's family."""
    specs = [
        Spec("temp_c__mean_5m", "temp_c", "Temperature"),
        Spec("temp_c__missing_streak", "temp_c", "DataQuality"),
        Spec("state__transitions_5m", None, "State"),
    ]
    assert feature_family_map(specs) == {"temp_c__mean_5m": "Temperature", "temp_c__missing_streak": "DataQuality",
                                         "state__transitions_5m": "State"}
    assert feature_family_map({"a": "X"}) == {"a": "X"}
