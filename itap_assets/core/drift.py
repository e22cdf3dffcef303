"""Feature drift against a device's baseline: population stability index (PSI) per feature.

At training time each feature's baseline is summarised by its decile edges and the share of baseline rows in each
bin (ties make shares uneven, so they are stored, not assumed). A day's rows are binned on the same edges;
PSI = Σ (actual − expected) · ln(actual / expected). Usual reading: < 0.1 stable, 0.1–0.25 moderate, > 0.25 drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

PSI_DRIFT = 0.25
SHARE_FLOOR = 1e-4


def feature_profile(matrix: np.ndarray, names: Sequence[str], bins: int = 10) -> dict[str, dict]:
    """Decile edges and baseline bin shares per feature (NaN ignored). The columns are sorted once: bin counts then
    come from a few binary searches per feature, and the quantiles of all fully finite features from one call."""
    ordered = np.sort(np.asarray(matrix).T, axis=1)  # one feature per row
    probs = np.linspace(0, 1, bins + 1)[1:-1]
    finite = np.isfinite(ordered).all(axis=1)
    quantiles = dict(zip(np.flatnonzero(finite), np.quantile(ordered[finite], probs, axis=1).T))
    profile = {}
    for j, name in enumerate(names):
        column = ordered[j]
        if j not in quantiles:
            column = column[np.isfinite(column)]
        if column.size == 0:
            continue
        edges = np.unique(quantiles[j] if j in quantiles else np.quantile(column, probs))
        # bin k holds edges[k-1] <= v < edges[k]: the values below each edge, differenced
        counts = np.diff(np.searchsorted(column, edges, side="left"), prepend=0, append=column.size)
        profile[name] = {"edges": edges.tolist(), "expected": (counts / column.size).tolist()}
    return profile


def psi(values: np.ndarray, edges: Sequence[float], expected: Sequence[float]) -> float | None:
    """PSI of `values` against a stored profile; None when no finite value is given."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    counts = np.bincount(np.searchsorted(np.asarray(edges), values, side="right"), minlength=len(expected))
    actual = np.maximum(counts / values.size, SHARE_FLOOR)
    base = np.maximum(np.asarray(expected), SHARE_FLOOR)
    return float(np.sum((actual - base) * np.log(actual / base)))


def drifted_features(matrix: np.ndarray, names: Sequence[str], profile: Mapping[str, dict],
                     threshold: float = PSI_DRIFT) -> dict[str, float]:
    """Features whose PSI exceeds `threshold`, largest first."""
    scores = {}
    for j, name in enumerate(names):
        if name in profile:
            value = psi(matrix[:, j], profile[name]["edges"], profile[name]["expected"])
            if value is not None and value > threshold:
                scores[name] = round(value, 3)
    return dict(sorted(scores.items(), key=lambda kv: -kv[1]))
