"""Builders shared by the alerting tests: points, frames and rule configs in a few words."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import polars as pl

from itap_assets.core.alerting import DEFAULT_FAMILIES, AlertRulesConfig, evaluate_alerts, parse_alert_rules

DAY = datetime(2026, 1, 2)  # output day D; day D-1 is context
SOURCE = "configs/alert_rules.yaml"

# family shares of a point blamed mostly on one family
VIB = {"Vibration": 70.0, "RPM": 30.0}
TEMP = {"Temperature": 80.0, "Current": 20.0}

POINT_SCHEMA = {
    "ts": pl.Datetime("us"),
    "device_id": pl.Utf8,
    "score": pl.Float64,
    "is_anomaly": pl.Boolean,
    "top_family": pl.Utf8,
    "top_features": pl.List(pl.Struct({"feature": pl.Utf8, "pct": pl.Float64})),
    "tag": pl.Utf8,
}

_UNSET: Any = object()


def at(minutes: float = 0.0, *, seconds: float = 0.0, microseconds: int = 0, base: datetime = DAY) -> datetime:
    """A timestamp ``minutes`` after midnight of day D (negative: day D-1)."""
    return base + timedelta(minutes=minutes, seconds=seconds, microseconds=microseconds)


def point(
    minute: float | datetime = 0.0,
    device: str = "DEV-001",
    *,
    score: float | None = 2.0,
    families: dict[str, float] | None = None,
    features: list[list[Any]] | None = _UNSET,
    tag: str | None = None,
    flagged: bool = True,
) -> dict[str, Any]:
    """One telemetry point; ``families`` become the ``family_pct`` struct and ``features`` ([feature, pct] pairs)
    the ``top_features`` list, as the explanations table stores them."""
    ts = minute if isinstance(minute, datetime) else at(minute)
    finite = {k: v for k, v in (families or {}).items() if v == v}
    top_family = max(finite, key=finite.__getitem__) if finite else None
    if features is _UNSET:
        features = [[f"{top_family.lower()}_z", 60.0]] if top_family else None
    return {
        "ts": ts,
        "device_id": device,
        "score": score,
        "is_anomaly": flagged,
        "top_family": top_family if flagged else None,
        "family_pct": families if flagged else None,
        "top_features": [{"feature": f, "pct": p} for f, p in features] if features is not None and flagged else None,
        "tag": tag,
    }


def frame(*points: dict[str, Any]) -> pl.DataFrame:
    """The points as a frame; ``family_pct`` has a field for every family any point names (missing: null)."""
    families = dict.fromkeys(f for p in points for f in (p["family_pct"] or {}))
    return pl.DataFrame(list(points), schema={**POINT_SCHEMA, "family_pct": pl.Struct(dict.fromkeys(families, pl.Float64))})


def burst(name: str = "storm", n: int = 3, window: float = 5, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "burst", "min_anomalies": n, "window_minutes": window,
            "severity": kw.pop("severity", "CRITICAL"), "cause": f"{name} cause", "action": f"{name} action", **kw}


def dominant(name: str, families: list[str] | str, min_percent: float = 50, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "dominant_family", "families": families, "min_percent": min_percent,
            "severity": kw.pop("severity", "WARNING"), "cause": f"{name} cause", "action": f"{name} action", **kw}


def fallback(name: str = "unexplained", **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "fallback", "cause": "no rule explains it", "action": "review trends", **kw}


def bands(name: str = "levels", floor: str = "INFO") -> dict[str, Any]:
    return {"name": name, "type": "score_level", "severity": floor,
            "bands": [{"min_score": 3, "severity": "CRITICAL"}, {"min_score": 1.5, "severity": "WARNING"}]}


def tag_routes(default_route: str | None = "triage", **routes: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": "tags", "type": "tag_route",
                            "routes": routes or {"bearing_wear": "maintenance"}}
    if default_route is not None:
        rule["default_route"] = default_route
    return rule


def config(
    *rules: dict[str, Any],
    merge_gap: float = 10,
    cooldown: float = 0,
    default_route: str | None = "ops",
    inhibit: Any = _UNSET,
    silences: list[dict[str, Any]] | None = None,
    known_families: tuple[str, ...] = DEFAULT_FAMILIES,
    deadband: dict[str, float] | None = None,
) -> AlertRulesConfig:
    defaults: dict[str, Any] = {"merge_gap_minutes": merge_gap, "cooldown_minutes": cooldown, **(deadband or {})}
    if default_route is not None:
        defaults["default_route"] = default_route
    raw: dict[str, Any] = {"defaults": defaults, "rules": list(rules)}
    if inhibit is not _UNSET:
        raw["inhibit"] = inhibit
    if silences is not None:
        raw["silences"] = silences
    return parse_alert_rules(raw, known_families, source=SOURCE)


def run(cfg: AlertRulesConfig, *points: dict[str, Any], **kw: Any) -> pl.DataFrame:
    return evaluate_alerts(frame(*points), cfg, **kw)


def rows(alerts: pl.DataFrame) -> list[dict[str, Any]]:
    return alerts.to_dicts()
