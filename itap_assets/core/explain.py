"""Per-point attribution -> family percentages and top features (what the alert rules and the UI read).

    fam = feature_family_map(specs)                              # or any {feature: family} dict
    expl = explain_points(det.attribution(X_flagged), names, fam, top_k=5)

``explain_points`` returns one row per attribution row with

* ``top_family``   String -- the family with the largest share (ties: the family listed first in the mapping order);
* ``family_pct``   Struct -- one Float32 field per family (``explained_families``): percent, 2 decimals, summing to
  100 +- 0.05 (in SQL: ``family_pct.Vibration``);
* ``top_features`` List(Struct{feature, pct}) -- the ``top_k`` largest features, largest first, percent with 2
  decimals; features with no share are left out (in SQL: ``unnest(top_features)``).

Native types, not JSON text: the alert rules and summaries read them for every flagged point, and decoding JSON
cost more than computing the attribution.

Each row's attribution is normalised to 100 % over its features and the feature percentages summed per family.
Negative or non-finite attribution values count as 0. **Rows whose total attribution is 0** (nothing to explain,
e.g. a row scored exactly at the baseline median) get NULL in all three columns: a uniform split would invent a
cause; NULL lets the rules' fallback handle them. Features missing from the mapping fall into family ``"Other"``.

Families
--------
The registry's own families: a sensor's missing-data and flat-line features are ``DataQuality`` (a dropout is an
instrumentation problem, routed to instrumentation, never a machine fault), State features are ``State``.
``feature_family_map`` accepts ``FeatureSpec`` objects (duck-typed: ``name``, ``family``) or a plain
``{feature: family}`` dict, so this module does not depend on ``core.features``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from itap_assets.core.rowwise import row_products

OTHER_FAMILY = "Other"
TOP_FEATURE = pl.Struct({"feature": pl.String(), "pct": pl.Float32()})


def feature_family_map(specs: Iterable[Any] | Mapping[str, str]) -> dict[str, str]:
    """The registry's own feature -> family mapping."""
    if isinstance(specs, Mapping):
        return dict(specs)
    return {spec.name: spec.family for spec in specs}


def explained_families(feature_names: Sequence[str], feature_families: Mapping[str, str]) -> list[str]:
    """The fields of ``family_pct``: every family of the mapping, in mapping order (it breaks ties for
    ``top_family``), then ``Other`` when a feature has no family. The same for every device of a configuration, so
    one table holds them all."""
    unmapped = any(f not in feature_families for f in feature_names)
    return list(dict.fromkeys([*feature_families.values(), *([OTHER_FAMILY] if unmapped else [])]))


def explain_schema(families: Sequence[str]) -> dict[str, pl.DataType]:
    return {
        "top_family": pl.String(),
        "family_pct": pl.Struct({f: pl.Float32() for f in families}),
        "top_features": pl.List(TOP_FEATURE),
    }


def explain_points(
    attribution: np.ndarray,
    feature_names: Sequence[str],
    feature_families: Mapping[str, str],
    top_k: int = 5,
    decimals: int = 2,
) -> pl.DataFrame:
    """Family percentages and top features for each row of ``attribution`` (m x p, columns in ``feature_names``)."""
    a = np.asarray(attribution, dtype=np.float32)  # percentages to two decimals: float32 is ample, and half the memory
    if a.ndim != 2 or a.shape[1] != len(feature_names):
        raise ValueError(f"attribution must be (m, {len(feature_names)}), got shape {a.shape}")
    if top_k < 1:
        raise ValueError("top_k must be >= 1")
    families = explained_families(feature_names, feature_families)
    schema = explain_schema(families)
    m, p = a.shape
    if m == 0:
        return pl.DataFrame(schema=schema)
    a = np.where(np.isfinite(a) & (a > 0), a, 0.0)
    total = a.sum(axis=1)
    ok = total > 0
    pct = a * (100.0 / np.where(ok, total, 1.0))[:, None]  # rows without attribution stay all zero

    fidx = np.array([families.index(feature_families.get(f, OTHER_FAMILY)) for f in feature_names], dtype=np.int64)
    onehot = np.zeros((p, len(families)), dtype=np.float32)
    onehot[np.arange(p), fidx] = 1.0
    shares = row_products(pct, onehot)
    top_fam = np.argmax(shares, axis=1)  # first maximum: mapping order breaks ties
    rounded = np.round(shares, decimals).astype(np.float32)
    family_pct = pl.DataFrame({f: rounded[:, j] for j, f in enumerate(families)}).to_struct("family_pct")
    out = pl.DataFrame({
        "top_family": pl.Series(families, dtype=pl.String)[top_fam],
        "family_pct": family_pct,
        "top_features": _top_features(pct, list(feature_names), min(top_k, p), decimals),
    })
    if not ok.all():
        out = out.with_columns(pl.when(pl.Series(ok)).then(pl.all()).otherwise(None))
    return out if out.schema == schema else out.cast(schema)


def _top_features(pct: np.ndarray, names: list[str], k: int, decimals: int) -> pl.Series:
    """Per row, the ``k`` largest positive percentages as ``[{feature, pct}]``, largest first (ties: the feature
    listed first, as a stable sort). ``k`` passes of argmax instead of sorting every row: a day of a large fleet
    has ~10^6 flagged points of ~10^2 features."""
    m = pct.shape[0]
    rows = np.arange(m)
    left = pct.copy()
    top = np.empty((m, k), dtype=np.int64)
    for i in range(k):
        top[:, i] = left.argmax(axis=1)  # the first maximum
        left[rows, top[:, i]] = -np.inf
    values = np.take_along_axis(pct, top, axis=1)
    keep = values > 0
    entries = pl.DataFrame({
        "feature": pl.Series(names, dtype=pl.String)[top[keep]],
        "pct": np.round(values[keep], decimals).astype(np.float32),
    }).to_struct("entry")
    offsets = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int32)
    return pl.Series("top_features", pa.ListArray.from_arrays(pa.array(offsets), entries.to_arrow()))
