"""Per-point attribution -> family percentages and top features (what the alert rules and the UI read).

    fam = root_cause_family_map(specs, sensor_families)          # or any {feature: family} dict
    expl = explain_points(det.attribution(X_flagged), names, fam, top_k=5)

``explain_points`` returns one row per attribution row with

* ``top_family``   Utf8 -- the family with the largest share (ties: the family listed first in the mapping order);
* ``family_pct``   Utf8 -- JSON object family -> percent (2 decimals, largest first; sums to 100 +- 0.05);
* ``top_features`` Utf8 -- JSON list of ``[feature, percent]`` for the ``top_k`` largest features (2 decimals).

Each row's attribution is normalised to 100 % over its features and the feature percentages summed per family.
Negative or non-finite attribution values count as 0. **Rows whose total attribution is 0** (nothing to explain,
e.g. a row scored exactly at the baseline median) get NULL in all three columns: a uniform split would invent a
cause; NULL lets the rules' fallback handle them. Features missing from the mapping fall into family ``"Other"``.

Root cause vs. feature family
-----------------------------
The feature registry files sensor-specific data-quality features (missing counts, flat-line runs of one sensor)
under family ``DataQuality``. For *root cause* a dropout of ``temp_c`` is a Temperature problem, so
``root_cause_family_map`` re-files every DataQuality feature that names a sensor under that sensor's family
(``FeatureSpec.sensor`` -> ``sensor_families``); fleet-wide quality features without a sensor stay DataQuality, and
State features stay State. ``feature_family_map`` gives the registry's own families unchanged. Both accept
``FeatureSpec`` objects (duck-typed: ``name``, ``sensor``, ``family``) or plain ``{feature: family}`` dicts, so this
module does not depend on ``core.features``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

OTHER_FAMILY = "Other"
SENSOR_SPECIFIC_FAMILIES = ("DataQuality",)
EXPLAIN_SCHEMA = {"top_family": pl.Utf8, "family_pct": pl.Utf8, "top_features": pl.Utf8}


def _spec_fields(spec: Any) -> tuple[str, str | None, str]:
    if isinstance(spec, Mapping):
        return spec["name"], spec.get("sensor"), spec["family"]
    return spec.name, getattr(spec, "sensor", None), spec.family


def feature_family_map(specs: Iterable[Any] | Mapping[str, str]) -> dict[str, str]:
    """The registry's own feature -> family mapping."""
    if isinstance(specs, Mapping):
        return dict(specs)
    out = {}
    for spec in specs:
        name, _, family = _spec_fields(spec)
        out[name] = family
    return out


def root_cause_family_map(
    specs: Iterable[Any],
    sensor_families: Mapping[str, str] | None = None,
    sensor_specific: Sequence[str] = SENSOR_SPECIFIC_FAMILIES,
) -> dict[str, str]:
    """feature -> family for root cause: sensor-specific DataQuality features take their sensor's family.

    ``sensor_families`` (sensor -> family, e.g. ``settings.sensor_families``) defaults to what the specs imply:
    the family of the sensor's non-DataQuality features.
    """
    rows = [_spec_fields(s) for s in specs]
    implied: dict[str, str] = {}
    for _, sensor, family in rows:
        if sensor and family not in sensor_specific and family != "State":
            implied.setdefault(sensor, family)
    families = {**implied, **(sensor_families or {})}
    out = {}
    for name, sensor, family in rows:
        if family in sensor_specific and sensor and sensor in families:
            out[name] = families[sensor]
        else:
            out[name] = family
    return out


def explain_points(
    attribution: np.ndarray,
    feature_names: Sequence[str],
    feature_families: Mapping[str, str],
    top_k: int = 5,
    decimals: int = 2,
) -> pl.DataFrame:
    """Family percentages and top features for each row of ``attribution`` (m x p, columns in ``feature_names``)."""
    a = np.asarray(attribution, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != len(feature_names):
        raise ValueError(f"attribution must be (m, {len(feature_names)}), got shape {a.shape}")
    if top_k < 1:
        raise ValueError("top_k must be >= 1")
    m, p = a.shape
    if m == 0:
        return pl.DataFrame(schema=EXPLAIN_SCHEMA)
    a = np.where(np.isfinite(a) & (a > 0), a, 0.0)
    total = a.sum(axis=1)
    ok = total > 0
    pct = np.zeros_like(a)
    pct[ok] = a[ok] / total[ok, None] * 100.0

    fam_of = [feature_families.get(f, OTHER_FAMILY) for f in feature_names]
    families: list[str] = list(dict.fromkeys([*feature_families.values(), *fam_of]))
    families = [f for f in families if f in set(fam_of)]
    fidx = np.array([families.index(f) for f in fam_of], dtype=np.int64)
    onehot = np.zeros((p, len(families)))
    onehot[np.arange(p), fidx] = 1.0
    fam_pct = pct @ onehot
    top_fam = np.argmax(fam_pct, axis=1)  # first maximum: mapping order breaks ties

    k = min(top_k, p)
    top_feat = np.argsort(-pct, axis=1, kind="stable")[:, :k]
    fam_r = np.round(fam_pct, decimals)
    feat_r = np.round(pct, decimals)
    names = list(feature_names)

    # JSON text built column-wise (no per-row Python: a day of a large fleet has ~10^5 flagged points).
    fam_order = np.argsort(-fam_pct, axis=1, kind="stable")
    rows = np.arange(m)[:, None]
    family_json = _json_items(np.array(families, dtype=object)[fam_order], fam_r[rows, fam_order],
                              fam_pct[rows, fam_order] > 0, pairs=False)
    feature_json = _json_items(np.array(names, dtype=object)[top_feat], feat_r[rows, top_feat],
                               pct[rows, top_feat] > 0, pairs=True)
    return pl.DataFrame({
        "top_family": pl.Series(np.array(families, dtype=object)[top_fam], dtype=pl.Utf8),
        "family_pct": family_json,
        "top_features": feature_json,
    }).with_columns(pl.when(pl.Series(ok)).then(pl.all()).otherwise(None)).cast(EXPLAIN_SCHEMA)


def _json_items(keys: np.ndarray, values: np.ndarray, keep: np.ndarray, *, pairs: bool) -> pl.Series:
    """Per row, `{"k": v, ...}` (pairs=False) or `[["k", v], ...]` (pairs=True) over the kept columns, in order
    (JSON that json.loads reads back to the same values; keys are feature and family names, never quoted)."""
    pieces = []
    for j in range(keys.shape[1]):
        key = pl.lit(pl.Series(keys[:, j], dtype=pl.Utf8))
        value = pl.lit(pl.Series(values[:, j], dtype=pl.Float64).cast(pl.Utf8))
        text = pl.concat_str([pl.lit('["'), key, pl.lit('", '), value, pl.lit("]")]) if pairs else \
            pl.concat_str([pl.lit('"'), key, pl.lit('": '), value])
        pieces.append(pl.when(pl.lit(pl.Series(keep[:, j]))).then(text))
    joined = pl.concat_str(pieces, separator=", ", ignore_nulls=True)
    wrapped = pl.concat_str([pl.lit("[" if pairs else "{"), joined, pl.lit("]" if pairs else "}")])
    return pl.select(wrapped.alias("v")).to_series()


def family_shares(
    attribution: np.ndarray, feature_names: Sequence[str], feature_families: Mapping[str, str]
) -> tuple[list[str], np.ndarray]:
    """(families, m x F percent matrix) -- the numeric form of ``family_pct`` (rows with no attribution: 0)."""
    a = np.asarray(attribution, dtype=np.float64)
    a = np.where(np.isfinite(a) & (a > 0), a, 0.0)
    fam_of = [feature_families.get(f, OTHER_FAMILY) for f in feature_names]
    families = list(dict.fromkeys(fam_of))
    out = np.zeros((a.shape[0], len(families)))
    for j, f in enumerate(fam_of):
        out[:, families.index(f)] += a[:, j]
    tot = out.sum(axis=1, keepdims=True)
    np.divide(out * 100.0, tot, out=out, where=tot > 0)
    return families, out
