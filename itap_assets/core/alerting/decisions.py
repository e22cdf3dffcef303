"""What an incident is, decided from its whole evidence: the rule (cause and action), how sure (confidence), how
bad (severity) and who owns it (tag and route).

Rule. Candidates are the enabled ``dominant_family`` rules whose families each hold >= ``min_percent`` of the
incident's attribution (``families``, averaged over its points) and the ``burst`` rules whose window held
>= ``min_anomalies`` of its points. Precedence: higher ``priority`` → higher declared ``severity`` (a rule that
takes its severity from the score bands ranks as the score_level floor) → higher confidence → earlier in the
file. An incident no candidate explains goes to the ``fallback`` rule; without one it raises no alert.

Confidence (0-1) = how strongly the evidence supports the cause × how much evidence there is:

* a family rule: the share of its families minus the largest share of any other family (0.9 vs 0.05 → 0.85; a
  narrow win over the runner-up → near 0);
* a burst or the fallback ("no dominant family"): 1 - the largest family share, times, for a burst, how far the
  best window exceeds its minimum (capped at 1);
* times ``n / (n + min_events)`` for the incident's ``n`` points: a lone point is a guess, a sustained incident
  is not.

Severity: the rule's ``severity``, else the ``score_level`` band of the incident's largest score (1.0 = the
device's threshold). Tag: the most frequent point tag, else the rule's ``tag``. Route: the ``tag_route`` route of
a known tag → the rule's ``route`` → ``tag_route.default_route`` for an unknown tag → ``defaults.default_route``.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from itap_assets.core.alerting.config import (
    SEVERITY_RANK,
    AlertRulesConfig,
    BurstRule,
    DominantFamilyRule,
    _AlertingRule,
)


def min_events(rule: _AlertingRule, config: AlertRulesConfig) -> int:
    return rule.min_events or config.defaults.min_events


def cooldown_minutes(rule: _AlertingRule, config: AlertRulesConfig) -> float:
    return rule.cooldown_minutes if rule.cooldown_minutes is not None else config.defaults.cooldown_minutes


def _share(family: str, families: list[str]) -> pl.Expr:
    return pl.col(f"_fam:{family}").fill_null(0.0) / 100.0 if family in families else pl.lit(0.0)


def _largest_share(families: list[str], excluded: tuple[str, ...] = ()) -> pl.Expr:
    others = [_share(f, families) for f in families if f not in excluded]
    return pl.max_horizontal(others) if others else pl.lit(0.0)


def _evidence(rule: _AlertingRule, config: AlertRulesConfig) -> pl.Expr:
    n = pl.col("n_events").cast(pl.Float64)
    return n / (n + min_events(rule, config))


def _condition_and_support(rule: DominantFamilyRule | BurstRule, families: list[str]) -> tuple[pl.Expr, pl.Expr]:
    if isinstance(rule, BurstRule):
        best = pl.col(f"_burst:{rule.name}")
        return best >= rule.min_anomalies, (1.0 - _largest_share(families)) * (
            best / rule.min_anomalies).clip(upper_bound=1.0)
    shares = [_share(f, families) for f in rule.families]
    condition = pl.all_horizontal([s * 100.0 >= rule.min_percent for s in shares])
    return condition, (pl.sum_horizontal(shares) - _largest_share(families, rule.families)).clip(0.0, 1.0)


def _precedence_severity(rule: _AlertingRule, config: AlertRulesConfig) -> str:
    """The severity a rule ranks with against other candidates: its declared one, or the score_level floor for a
    rule that takes its severity from the bands (static per rule, so the choice never depends on the score)."""
    if rule.severity is not None:
        return rule.severity
    return config.score_level.severity if config.score_level is not None else "INFO"


def decide(inc: pl.DataFrame, config: AlertRulesConfig, families: list[str]) -> pl.DataFrame:
    """Add ``rule_name`` and ``confidence`` to each incident; incidents no rule explains are dropped."""
    candidates = []
    for order, rule in enumerate(config.matching_rules):
        condition, support = _condition_and_support(rule, families)
        candidates.append(inc.filter(condition).select(
            "_inc",
            pl.lit(rule.name).alias("rule_name"),
            pl.lit(rule.priority, dtype=pl.Int64).alias("_prio"),
            pl.lit(SEVERITY_RANK[_precedence_severity(rule, config)], dtype=pl.Int64).alias("_sev"),
            (support * _evidence(rule, config)).cast(pl.Float64).alias("confidence"),
            pl.lit(order, dtype=pl.Int64).alias("_order"),
        ))
    fallback = config.fallback
    if fallback is not None:
        candidates.append(inc.select(
            "_inc",
            pl.lit(fallback.name).alias("rule_name"),
            pl.lit(-(2**62), dtype=pl.Int64).alias("_prio"),  # only when nothing else explains the incident
            pl.lit(0, dtype=pl.Int64).alias("_sev"),
            ((1.0 - _largest_share(families)) * _evidence(fallback, config)).cast(pl.Float64).alias("confidence"),
            pl.lit(len(candidates), dtype=pl.Int64).alias("_order"),
        ))
    if not candidates:
        return inc.clear().with_columns(rule_name=pl.lit(None, pl.Utf8), confidence=pl.lit(None, pl.Float64))
    best = (
        pl.concat(candidates)
        .sort(["_inc", "_prio", "_sev", "confidence", "_order"], descending=[False, True, True, True, False])
        .unique(subset="_inc", keep="first", maintain_order=True)
        .select("_inc", "rule_name", pl.col("confidence").round(3))
    )
    return inc.join(best, on="_inc", how="inner")


def _band_severity(score: pl.Expr, config: AlertRulesConfig) -> pl.Expr:
    sl = config.score_level
    if sl is None:
        return pl.lit("INFO")
    expr: Any = pl
    for band in sl.bands:  # sorted highest min_score first
        expr = expr.when(score >= band.min_score).then(pl.lit(band.severity))
    return expr.otherwise(pl.lit(sl.severity))


def describe(inc: pl.DataFrame, config: AlertRulesConfig) -> pl.DataFrame:
    """Severity, tag, route, cause and action of each decided incident."""
    rules = {r.name: r for r in config.alerting_rules}

    def lookup(mapping: dict[str, str | None]) -> pl.Expr:
        return pl.col("rule_name").replace_strict(mapping, default=None, return_dtype=pl.Utf8)

    tr = config.tag_route
    default_route = config.defaults.default_route
    route_parts = []
    if tr is not None:
        route_parts.append(pl.col("tag").replace_strict(tr.routes, default=None, return_dtype=pl.Utf8))
    route_parts.append(lookup({n: r.route for n, r in rules.items()}))
    if tr is not None:
        route_parts.append(
            pl.when(pl.col("tag").is_not_null()).then(pl.lit(tr.default_route or default_route, dtype=pl.Utf8))
        )
    route_parts.append(pl.lit(default_route, dtype=pl.Utf8))
    return inc.with_columns(
        severity=pl.coalesce(lookup({n: r.severity for n, r in rules.items()}),
                             _band_severity(pl.col("max_score"), config)),
        tag=pl.coalesce(pl.col("_point_tag"), lookup({n: r.tag for n, r in rules.items()})),
        cause=lookup({n: r.cause for n, r in rules.items()}),
        action=lookup({n: r.action for n, r in rules.items()}),
    ).with_columns(route=pl.coalesce(route_parts))
