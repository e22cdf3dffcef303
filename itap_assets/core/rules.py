"""Alert rule engine: YAML rules → validated config → incidents (not event spam).

Pure logic (Polars in, Polars out, no Dagster import), so it is unit-testable and reusable by any caller.

Config
------
``load_alert_rules(path, known_families)`` / ``parse_alert_rules(mapping, known_families, source=...)`` read a rule
file with ``yaml.safe_load`` (``!!python/object`` and friends are refused) and validate it with pydantic models that
forbid unknown keys. Every problem raises :class:`AlertRulesError` (a ``ValueError``) whose message names the file,
the rule (by name) and the field, e.g. ``configs/alert_rules.yaml: Rule 'bad_rule': min_percent=150 must be
between 0 and 100``. See ``configs/alert_rules.yaml`` for a documented example.

Rule types
----------
* ``burst``            -- a device has >= ``min_anomalies`` flagged points inside ``window_minutes``.
* ``dominant_family``  -- every family in ``families`` holds >= ``min_percent`` of the point's attribution.
* ``tag_route``        -- routing only: maps a normalised tag to a route/team (unknown tags → ``default_route``).
* ``score_level``      -- severity only: bands over the calibrated score (``min_score`` inclusive, highest wins).
* ``fallback``         -- explains flagged points no burst/dominant_family rule explains.

Engine semantics (``evaluate_alerts``)
--------------------------------------
1. **Which rule explains a flagged point.** Candidates are the enabled ``burst`` and ``dominant_family`` rules
   whose condition holds at the point. Precedence: higher ``priority`` → higher declared ``severity`` (a rule
   that derives severity from the score bands ranks as the score_level floor severity, so the choice never
   flickers with each point's score) → higher confidence → earlier position in the file. A point no candidate
   explains goes to the enabled ``fallback`` rule (confidence 0.0: no cause is known); without a fallback rule
   such points produce no alert (documented, deliberate). At most one tag_route, score_level and fallback rule
   may be enabled. ``top_family`` is not used: ``family_pct`` carries the full attribution.

   *Burst boundaries (inclusive).* A burst window ending at ``t`` holds the device's flagged points with
   ``t - window <= ts <= t``. A point belongs to a burst (and so qualifies) when some window of length
   ``window_minutes`` that contains it holds at least ``min_anomalies`` flagged points -- so the first points of
   a burst are part of it, not only the point at which the count is reached. Points exactly ``window_minutes``
   apart share a window; one microsecond more and they do not. Because the caller passes day D-1 as context,
   bursts are continuous across midnight. Bursts count every flagged point of the device, whatever rule
   finally explains them.

   *Dominant family.* ``pct >= min_percent`` (inclusive); NaN, null and missing families count as 0.
   Confidence = mean over the rule's families of ``min(1, pct / min_percent)`` (1.0 at a matching point). Burst
   confidence = ``min(1, count in the best window / min_anomalies)`` which is 1.0 at a qualifying point.

2. **Incidents.** Points of one device and one rule, sorted by time, merge into one incident while the gap
   between consecutive points is <= the effective gap = ``max(merge_gap_minutes, cooldown_minutes)``.
   ``cooldown_minutes`` (rule value, else ``defaults.cooldown_minutes``) *folds*: a new incident of the same
   device+rule starting within the cooldown after the previous one ended is folded into it (same ``alert_id``,
   ``end_ts`` extended, events added), like Alertmanager's repeat interval -- no re-page for a flapping device.
3. **Severity** of an incident: the rule's fixed ``severity``; a rule without ``severity`` takes the
   ``score_level`` band of the incident's ``max_score`` (below all bands: the score_level rule's ``severity``).
4. **Tag and route.** Tag = most frequent (normalised) point ``tag`` in the incident (ties: earliest, then
   alphabetical), else the rule's ``tag``. Route = the ``tag_route`` route of a known tag → the rule's ``route``
   → the ``tag_route`` ``default_route`` when the alert has a (unknown) tag → ``defaults.default_route``.
5. **Inhibition** (per device): an alert suppresses a strictly lower-severity alert that *starts* while it is open
   (``source.start_ts <= target.start_ts <= source.end_ts``; an incident already open when a more severe one begins
   is not retracted, as in Alertmanager), when an ``inhibit`` entry matches both (source/target severity, and
   optionally rule names). Suppressed alerts stay, with ``suppressed_by`` = the inhibitor's ``alert_id`` (highest
   severity, then earliest start, then smallest id). Without an ``inhibit`` key the default is "higher severity
   inhibits lower"; ``inhibit: []`` turns inhibition off. Inhibitors inhibit even when silenced themselves, and
   an inhibitor from the context day may be absent from the returned frame (its own day's run returned it).
6. **Minimum evidence**: an incident with fewer than ``min_events`` flagged points (rule value, else
   ``defaults.min_events``, default 1) is kept with ``suppressed_by = "min_events:<n>"`` and inhibits nothing --
   Alertmanager's ``for:``: a lone flagged point does not page anyone.
6b. **Silences** (maintenance windows ``[start, end)``): alerts of matching devices with ``start_ts < end`` and
   ``end_ts >= start`` are kept with ``suppressed_by = "silence:<name or list index>"``; the first matching
   silence wins and a silence takes precedence over an inhibition in ``suppressed_by``.
7. ``alert_id`` = sha1 of ``device_id|rule_name|start_ts`` (ISO, microseconds), hex[:16]: stable across runs and
   input row order.
8. ``window_start``: alerts are computed over the whole input (context included) and then only those with
   ``end_ts >= window_start`` are returned.
9. ``families``: each point's ``family_pct`` renormalised to 100 over its finite, non-negative values, averaged
   over the incident (JSON object, largest first). ``top_features``: mean percent per feature over the incident's
   points, top 5, as ``[[feature, percent], ...]``.
"""

from __future__ import annotations

import difflib
import reprlib
import fnmatch
import hashlib
import json
import re
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import polars as pl
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from itap_assets.core.frames import sorted_by

__all__ = [
    "ALERT_SCHEMA",
    "DEFAULT_FAMILIES",
    "SEVERITIES",
    "AlertRulesConfig",
    "AlertRulesError",
    "BurstRule",
    "Defaults",
    "DominantFamilyRule",
    "FallbackRule",
    "InhibitRule",
    "ScoreBand",
    "ScoreLevelRule",
    "Silence",
    "TagRouteRule",
    "alert_id",
    "empty_alerts",
    "evaluate_alerts",
    "load_alert_rules",
    "normalise_tag",
    "parse_alert_rules",
]

SEVERITIES = ("INFO", "WARNING", "CRITICAL")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
DEFAULT_FAMILIES = ("Temperature", "Vibration", "Voltage", "Current", "RPM", "State", "DataQuality")
TOP_FEATURES_PER_ALERT = 5

ALERT_SCHEMA: dict[str, pl.DataType] = {
    "alert_id": pl.Utf8(),
    "device_id": pl.Utf8(),
    "start_ts": pl.Datetime("us"),
    "end_ts": pl.Datetime("us"),
    "severity": pl.Utf8(),
    "rule_name": pl.Utf8(),
    "cause": pl.Utf8(),
    "route": pl.Utf8(),
    "confidence": pl.Float64(),
    "max_score": pl.Float64(),
    "n_events": pl.Int64(),
    "families": pl.Utf8(),
    "top_features": pl.Utf8(),
    "action": pl.Utf8(),
    "suppressed_by": pl.Utf8(),
    "tag": pl.Utf8(),
}


class AlertRulesError(ValueError):
    """An alert rule file that cannot be used; the message names the file, the rule and the field."""


# ----------------------------------------------------------------------------------------------------------------
# Helpers shared by config and engine
# ----------------------------------------------------------------------------------------------------------------

_TAG_SEPARATORS = re.compile(r"[\s\-_]+")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def normalise_tag(tag: str | None) -> str | None:
    """``'Bearing-Wear'``, ``' bearing  wear '`` and ``'BEARING_WEAR'`` become ``'bearing_wear'``; blank → None."""
    if tag is None:
        return None
    out = _TAG_SEPARATORS.sub("_", str(tag).strip().lower()).strip("_")
    return out or None


def _normalise_tag_expr(expr: pl.Expr) -> pl.Expr:
    """Vectorised :func:`normalise_tag`."""
    out = (
        expr.cast(pl.Utf8)
        .str.strip_chars()
        .str.to_lowercase()
        .str.replace_all(r"[\s\-_]+", "_")
        .str.strip_chars("_")
    )
    return pl.when(out.str.len_chars() > 0).then(out).otherwise(None)


def alert_id(device_id: str, rule_name: str, start_ts: datetime) -> str:
    """Deterministic incident id: sha1 of ``device_id|rule_name|start_ts`` (ISO, microseconds), first 16 hex chars."""
    key = f"{device_id}|{rule_name}|{start_ts.strftime('%Y-%m-%dT%H:%M:%S.%f')}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def _to_naive_utc(value: datetime) -> datetime:
    if value.tzinfo is not None:
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _suggest(word: str, options: Collection[str]) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _severity(value: Any) -> str:
    if isinstance(value, str) and value.strip().upper() in SEVERITIES:
        return value.strip().upper()
    raise ValueError("must be one of INFO, WARNING, CRITICAL (case-insensitive)")


Severity = Annotated[str, BeforeValidator(_severity)]


def _severity_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


# ----------------------------------------------------------------------------------------------------------------
# Config models
# ----------------------------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _positive(value: float) -> float:
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


def _non_negative(value: float | None) -> float | None:
    if value is not None and value < 0:
        raise ValueError("must be 0 or more")
    return value


def _non_blank(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("must not be blank")
    return value.strip() if value is not None else None


class Defaults(_Strict):
    """File-wide defaults."""

    cooldown_minutes: float = 0.0
    merge_gap_minutes: float = 15.0
    default_route: str | None = None
    min_events: int = 1

    @field_validator("min_events")
    @classmethod
    def _min_events(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    _cooldown = field_validator("cooldown_minutes")(_non_negative)
    _gap = field_validator("merge_gap_minutes")(_positive)
    _route = field_validator("default_route")(_non_blank)


class _RuleBase(_Strict):
    name: str
    enabled: bool = True
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be 1-64 characters of letters, digits, '_', '.', '-' (starting alphanumeric)")
        return value


class _AlertingRule(_RuleBase):
    """A rule whose incidents become alerts: carries severity, route, operator texts and cooldown."""

    severity: Severity | None = None
    route: str | None = None
    cause: str
    action: str
    tag: str | None = None
    cooldown_minutes: float | None = None
    min_events: int | None = None

    _route = field_validator("route")(_non_blank)
    _cooldown = field_validator("cooldown_minutes")(_non_negative)

    @field_validator("min_events")
    @classmethod
    def _min_events(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("cause", "action")
    @classmethod
    def _text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank: operators read it")
        return value.strip()

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str | None) -> str | None:
        if value is None:
            return None
        tag = normalise_tag(value)
        if tag is None:
            raise ValueError("must not be blank")
        return tag


class _MatchingRule(_AlertingRule):
    """A rule that can explain a flagged point; ``priority`` decides between several matching rules."""

    priority: int = 0


class BurstRule(_MatchingRule):
    type: Literal["burst"]
    min_anomalies: int
    window_minutes: float

    @field_validator("min_anomalies")
    @classmethod
    def _min(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be 1 or more")
        return value

    _window = field_validator("window_minutes")(_positive)


class DominantFamilyRule(_MatchingRule):
    type: Literal["dominant_family"]
    families: tuple[str, ...]
    min_percent: float

    @field_validator("families", mode="before")
    @classmethod
    def _one_family(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("families")
    @classmethod
    def _families(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not value:
            raise ValueError("must list at least one family")
        known = tuple((info.context or {}).get("known_families") or ())
        by_lower = {k.lower(): k for k in known}
        out: list[str] = []
        for fam in value:
            canonical = by_lower.get(fam.strip().lower()) if known else fam.strip()
            if canonical is None:
                raise ValueError(
                    f"unknown family {fam!r} (known: {', '.join(known)}){_suggest(fam, known)}"
                )
            if canonical in out:
                raise ValueError(f"family {canonical!r} is listed twice")
            out.append(canonical)
        return tuple(out)

    @field_validator("min_percent")
    @classmethod
    def _pct(cls, value: float) -> float:
        if not 0 < value <= 100:
            raise ValueError("must be between 0 and 100 (0 excluded)" if value == 0 else "must be between 0 and 100")
        return value


class FallbackRule(_AlertingRule):
    type: Literal["fallback"]


class TagRouteRule(_RuleBase):
    type: Literal["tag_route"]
    routes: dict[str, str]
    default_route: str | None = None

    _default = field_validator("default_route")(_non_blank)

    @field_validator("routes")
    @classmethod
    def _routes(cls, value: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        raw_of: dict[str, str] = {}
        for raw, route in value.items():
            tag = normalise_tag(raw)
            if tag is None:
                raise ValueError(f"tag {raw!r} is blank")
            if not str(route).strip():
                raise ValueError(f"tag {raw!r} has a blank route")
            if tag in out:
                raise ValueError(f"tags {raw_of[tag]!r} and {raw!r} both normalise to {tag!r}")
            out[tag] = str(route).strip()
            raw_of[tag] = raw
        if not out:
            raise ValueError("must map at least one tag to a route")
        return out


class ScoreBand(_Strict):
    min_score: float
    severity: Severity

    _min = field_validator("min_score")(_non_negative)


class ScoreLevelRule(_RuleBase):
    type: Literal["score_level"]
    bands: tuple[ScoreBand, ...]
    severity: Severity = "INFO"

    @field_validator("bands")
    @classmethod
    def _bands(cls, value: tuple[ScoreBand, ...]) -> tuple[ScoreBand, ...]:
        if not value:
            raise ValueError("must list at least one band")
        ordered = tuple(sorted(value, key=lambda b: b.min_score, reverse=True))
        for hi, lo in zip(ordered, ordered[1:]):
            if hi.min_score == lo.min_score:
                raise ValueError(f"two bands share min_score={hi.min_score:g}")
            if SEVERITY_RANK[hi.severity] < SEVERITY_RANK[lo.severity]:
                raise ValueError(
                    f"min_score={hi.min_score:g} gives {hi.severity} but the lower min_score={lo.min_score:g} "
                    f"gives {lo.severity}: severity must not drop as the score rises"
                )
        return ordered

    def severity_for(self, score: float | None) -> str:
        if score is not None and score == score:
            for band in self.bands:
                if score >= band.min_score:
                    return band.severity
        return self.severity


AnyRule = Annotated[
    Union[BurstRule, DominantFamilyRule, TagRouteRule, ScoreLevelRule, FallbackRule], Field(discriminator="type")
]
RULE_TYPES: dict[str, type[_RuleBase]] = {
    "burst": BurstRule,
    "dominant_family": DominantFamilyRule,
    "tag_route": TagRouteRule,
    "score_level": ScoreLevelRule,
    "fallback": FallbackRule,
}


class InhibitRule(_Strict):
    """An alert with a ``source_severity`` suppresses overlapping, strictly lower ``target_severity`` alerts of the
    same device; ``source_rules`` / ``target_rules`` (rule names) narrow it further when given."""

    name: str | None = None
    source_severity: tuple[Severity, ...]
    target_severity: tuple[Severity, ...]
    source_rules: tuple[str, ...] = ()
    target_rules: tuple[str, ...] = ()

    _src = field_validator("source_severity", "target_severity", mode="before")(_severity_list)
    _rules = field_validator("source_rules", "target_rules", mode="before")(_severity_list)

    @model_validator(mode="after")
    def _can_apply(self) -> InhibitRule:
        if not self.source_severity or not self.target_severity:
            raise ValueError("source_severity and target_severity must each list at least one severity")
        if not any(
            SEVERITY_RANK[s] > SEVERITY_RANK[t] for s in self.source_severity for t in self.target_severity
        ):
            raise ValueError(
                f"source_severity={list(self.source_severity)} is never above target_severity="
                f"{list(self.target_severity)}: only a higher severity can inhibit a lower one"
            )
        return self


class Silence(_Strict):
    """A maintenance window ``[start, end)`` for devices matching ``device`` (glob) or ``device_regex`` (full match)."""

    name: str | None = None
    device: str | None = None
    device_regex: str | None = None
    start: datetime
    end: datetime
    comment: str = ""

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _to_naive_utc(value)

    @field_validator("device_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"is not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _check(self) -> Silence:
        if (self.device is None) == (self.device_regex is None):
            raise ValueError("give exactly one of device (glob, e.g. 'DEV-00*') or device_regex")
        if not self.end > self.start:
            raise ValueError(f"end={self.end.isoformat()} must be after start={self.start.isoformat()}")
        return self

    def matches(self, device_id: str) -> bool:
        if self.device is not None:
            return fnmatch.fnmatchcase(device_id, self.device)
        return re.fullmatch(self.device_regex or "", device_id) is not None


DEFAULT_INHIBIT = (
    InhibitRule(name="higher_severity_inhibits_lower", source_severity=("CRITICAL", "WARNING"),
                target_severity=("WARNING", "INFO")),
)


class AlertRulesConfig(_Strict):
    """A validated rule set. Build it with :func:`parse_alert_rules` or :func:`load_alert_rules`."""

    source: str = "<alert rules>"
    known_families: tuple[str, ...] = DEFAULT_FAMILIES
    defaults: Defaults = Defaults()
    rules: tuple[AnyRule, ...]
    inhibit: tuple[InhibitRule, ...] = DEFAULT_INHIBIT
    silences: tuple[Silence, ...] = ()

    @property
    def enabled_rules(self) -> tuple[_RuleBase, ...]:
        return tuple(r for r in self.rules if r.enabled)

    @property
    def matching_rules(self) -> tuple[BurstRule | DominantFamilyRule, ...]:
        return tuple(r for r in self.enabled_rules if isinstance(r, (BurstRule, DominantFamilyRule)))

    @property
    def alerting_rules(self) -> tuple[_AlertingRule, ...]:
        return tuple(r for r in self.enabled_rules if isinstance(r, _AlertingRule))

    def _single(self, kind: type) -> Any:
        return next((r for r in self.enabled_rules if isinstance(r, kind)), None)

    @property
    def fallback(self) -> FallbackRule | None:
        return self._single(FallbackRule)

    @property
    def tag_route(self) -> TagRouteRule | None:
        return self._single(TagRouteRule)

    @property
    def score_level(self) -> ScoreLevelRule | None:
        return self._single(ScoreLevelRule)

    def rule(self, name: str) -> _RuleBase:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)


# ----------------------------------------------------------------------------------------------------------------
# Loading and error messages
# ----------------------------------------------------------------------------------------------------------------

_TOP_KEYS = ("defaults", "rules", "inhibit", "silences")


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _nested_fields(loc: tuple[Any, ...], model: type[BaseModel]) -> Collection[str]:
    """Valid keys at ``loc`` (for 'did you mean'); only one nesting level is modelled (score bands)."""
    if len(loc) >= 3 and loc[0] == "bands":
        return tuple(ScoreBand.model_fields)
    return tuple(model.model_fields)


def _describe(exc: ValidationError, model: type[BaseModel]) -> str:
    messages = []
    # Typos first: a misspelt key usually also shows up as the required key being "missing".
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    for err in errors:
        loc = tuple(err["loc"])
        # Pydantic appends the union tag / function name for some errors; drop non-field parts.
        loc = tuple(p for p in loc if isinstance(p, int) or not str(p).startswith("function-"))
        path = _loc(loc)
        kind = err["type"]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if kind == "extra_forbidden":
            messages.append(f"unknown key {path!r}{_suggest(str(loc[-1]), _nested_fields(loc, model))}")
        elif kind == "missing":
            messages.append(f"{path} is missing (required)")
        elif not path:
            messages.append(msg)
        elif kind == "value_error" and (
            isinstance(err.get("input"), (dict, list, tuple))
            or (isinstance(err.get("input"), str) and repr(err.get("input")) in msg)
        ):
            messages.append(f"{path}: {msg}")
        else:
            value = err.get("input")
            sep = " " if kind == "value_error" else ": "
            messages.append(f"{path}={_show(value)}{sep}{msg}")
    return "; ".join(messages)


def _show(value: Any, limit: int = 200) -> str:
    """A value for an error message, cut short (YAML aliases can make a tiny file hold a huge value)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 3, 6, 6, limit, limit
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _validate(model: type[BaseModel], raw: Any, label: str, fail: Any, context: dict | None = None) -> Any:
    if not isinstance(raw, Mapping):
        fail(f"{label}: must be a mapping, got {type(raw).__name__}")
    unknown = [k for k in raw if k not in model.model_fields]
    if unknown:
        key = unknown[0]
        fail(f"{label}: unknown key {key!r}{_suggest(str(key), tuple(model.model_fields))}")
    try:
        return model.model_validate(dict(raw), context=context)
    except ValidationError as exc:
        fail(f"{label}: {_describe(exc, model)}")


def parse_alert_rules(
    raw: Any, known_families: Collection[str], source: str = "<alert rules>"
) -> AlertRulesConfig:
    """Validate an already-parsed rule mapping. Raises :class:`AlertRulesError` naming ``source``, rule and field."""

    def fail(message: str) -> None:
        raise AlertRulesError(f"{source}: {message}")

    known = tuple(dict.fromkeys(str(f) for f in known_families))
    if not known:
        fail("known_families is empty: pass the sensor families of the settings")
    if not isinstance(raw, Mapping):
        fail(f"top level must be a mapping with a 'rules' list, got {type(raw).__name__}")
    for key in raw:
        if key not in _TOP_KEYS:
            fail(f"unknown top-level key {key!r} (valid: {', '.join(_TOP_KEYS)}){_suggest(str(key), _TOP_KEYS)}")

    defaults = _validate(Defaults, raw.get("defaults") or {}, "defaults", fail)

    rules_raw = raw.get("rules")
    if rules_raw is None:
        fail("'rules' is missing: list at least one rule")
    if not isinstance(rules_raw, list):
        fail(f"rules must be a list, got {type(rules_raw).__name__}")
    if not rules_raw:
        fail("rules is empty: list at least one rule")

    rules: list[_RuleBase] = []
    seen: dict[str, int] = {}
    for i, rule_raw in enumerate(rules_raw):
        if not isinstance(rule_raw, Mapping):
            fail(f"rules[{i}]: must be a mapping, got {type(rule_raw).__name__}")
        name = rule_raw.get("name")
        if not isinstance(name, str) or not name.strip():
            fail(f"rules[{i}]: name is missing (every rule needs a unique name)")
        label = f"Rule {name!r}"
        kind = rule_raw.get("type")
        if kind is None:
            fail(f"{label}: type is missing (one of {', '.join(RULE_TYPES)})")
        if kind not in RULE_TYPES:
            valid = ", ".join(RULE_TYPES)
            fail(f"{label}: unknown rule type {kind!r} (valid: {valid}){_suggest(str(kind), RULE_TYPES)}")
        rule = _validate(RULE_TYPES[kind], rule_raw, label, fail, context={"known_families": known})
        if rule.name in seen:
            fail(f"{label}: duplicate rule name (rules[{seen[rule.name]}] and rules[{i}])")
        seen[rule.name] = i
        rules.append(rule)

    if not any(isinstance(r, _AlertingRule) for r in rules):
        fail("rules: no alerting rule (burst, dominant_family or fallback): nothing could ever raise an alert")
    for kind_name in ("tag_route", "score_level", "fallback"):
        enabled = [r.name for r in rules if r.type == kind_name and r.enabled]
        if len(enabled) > 1:
            fail(f"Rule {enabled[1]!r}: only one enabled {kind_name} rule is allowed (also {enabled[0]!r})")

    tag_route = next((r for r in rules if isinstance(r, TagRouteRule) and r.enabled), None)
    score_level = next((r for r in rules if isinstance(r, ScoreLevelRule) and r.enabled), None)
    if tag_route is not None and tag_route.default_route is None and defaults.default_route is None:
        fail(
            f"Rule {tag_route.name!r}: default_route is missing and defaults.default_route is not set: "
            "unknown tags would have no route"
        )
    for rule in rules:
        if not isinstance(rule, _AlertingRule):
            continue
        if rule.route is None and defaults.default_route is None and not (rule.tag and tag_route is not None):
            fail(
                f"Rule {rule.name!r}: route is missing and there is no default route "
                "(set route on the rule, or defaults.default_route)"
            )
        if rule.severity is None and score_level is None:
            fail(
                f"Rule {rule.name!r}: severity is missing and there is no enabled score_level rule to derive it "
                "from (set severity: INFO, WARNING or CRITICAL)"
            )

    inhibit_raw = raw.get("inhibit", None)
    if inhibit_raw is None and "inhibit" not in raw:
        inhibit: tuple[InhibitRule, ...] = DEFAULT_INHIBIT
    else:
        if not isinstance(inhibit_raw, list | None):
            fail(f"inhibit must be a list, got {type(inhibit_raw).__name__}")
        items = []
        for i, item in enumerate(inhibit_raw or []):
            label = f"Inhibit {item['name']!r}" if isinstance(item, Mapping) and item.get("name") else f"inhibit[{i}]"
            inh = _validate(InhibitRule, item, label, fail)
            for field in ("source_rules", "target_rules"):
                for ref in getattr(inh, field):
                    if ref not in seen:
                        fail(f"{label}: {field}: unknown rule {ref!r}{_suggest(ref, tuple(seen))}")
            items.append(inh)
        inhibit = tuple(items)

    silences_raw = raw.get("silences") or []
    if not isinstance(silences_raw, list):
        fail(f"silences must be a list, got {type(silences_raw).__name__}")
    silences = []
    for i, item in enumerate(silences_raw):
        label = f"Silence {item['name']!r}" if isinstance(item, Mapping) and item.get("name") else f"silences[{i}]"
        silences.append(_validate(Silence, item, label, fail))

    return AlertRulesConfig(
        source=source,
        known_families=known,
        defaults=defaults,
        rules=tuple(rules),
        inhibit=inhibit,
        silences=tuple(silences),
    )


def load_alert_rules(path: Path | str, known_families: Collection[str]) -> AlertRulesConfig:
    """Read (``yaml.safe_load`` only) and validate a rule file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AlertRulesError(f"{path}: cannot read alert rules: {exc.strerror or exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AlertRulesError(
            f"{path}: not valid YAML (only plain YAML is accepted; tags such as !!python/object are refused): {exc}"
        ) from exc
    if raw is None:
        raise AlertRulesError(f"{path}: file is empty: list at least one rule under 'rules'")
    return parse_alert_rules(raw, known_families, source=str(path))


# ----------------------------------------------------------------------------------------------------------------
# Engine
# ----------------------------------------------------------------------------------------------------------------

_REQUIRED = {"ts", "device_id", "score", "is_anomaly"}
_OPTIONAL = ("top_family", "family_pct", "top_features", "tag")


def empty_alerts() -> pl.DataFrame:
    """An empty frame with the alert schema."""
    return pl.DataFrame(schema=ALERT_SCHEMA)


def _us(minutes: float) -> int:
    return int(round(minutes * 60_000_000))


def _prepare(points: pl.DataFrame) -> pl.DataFrame:
    missing = _REQUIRED - set(points.columns)
    if missing:
        raise ValueError(f"points is missing column(s) {sorted(missing)}; got {points.columns}")
    df = points.select(
        *(pl.col(c) for c in ("ts", "device_id", "score", "is_anomaly")),
        *(pl.col(c) if c in points.columns else pl.lit(None).alias(c) for c in _OPTIONAL),
    )
    _check_explanation_types(df.schema)
    ts_dtype = df.schema["ts"]
    ts = pl.col("ts")
    if isinstance(ts_dtype, pl.Datetime) and ts_dtype.time_zone is not None:
        ts = ts.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    df = df.with_columns(
        ts.cast(pl.Datetime("us")),
        pl.col("device_id").cast(pl.Utf8),
        pl.col("score").cast(pl.Float64).fill_nan(None),
        pl.col("is_anomaly").cast(pl.Boolean).fill_null(False),
        _normalise_tag_expr(pl.col("tag")).alias("tag"),
    ).filter(pl.col("is_anomaly") & pl.col("ts").is_not_null() & pl.col("device_id").is_not_null())
    keys = ["device_id", "ts"]
    if df.select(pl.struct(keys).is_duplicated().any()).item():
        # One event per device and timestamp; the sort makes the survivor independent of the input row order.
        df = df.sort(
            [*keys, "score", "tag", "family_pct", "top_features"],
            descending=[False, False, True, False, False, False],
            nulls_last=True,
        ).unique(subset=keys, keep="first", maintain_order=True)
    else:  # the usual case, and sorting by the nested columns costs more than the rest of the engine
        df = sorted_by(df, keys)
    return df.with_row_index("_i")


def _check_explanation_types(schema: pl.Schema) -> None:
    """``family_pct`` and ``top_features`` as ``explain_points`` writes them (or absent / all NULL)."""
    families, features = schema["family_pct"], schema["top_features"]
    if not isinstance(families, (pl.Struct, pl.Null)):
        raise ValueError(f"family_pct must be a struct of family → percent (as explanations stores it), got {families}")
    entry = features.inner if isinstance(features, pl.List) else None
    if not isinstance(features, pl.Null) and not (
        isinstance(entry, pl.Struct) and {"feature", "pct"} <= {f.name for f in entry.fields}
    ):
        raise ValueError(f"top_features must be a list of {{feature, pct}} (as explanations stores it), got {features}")


def _family_columns(df: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """One Float64 column per field of ``family_pct`` (``_fam:<name>``); NaN → null."""
    if not isinstance(df.schema["family_pct"], pl.Struct) or df["family_pct"].null_count() == df.height:
        return df, []
    fields = [f.name for f in df.schema["family_pct"].fields]
    out = df.with_columns(
        pl.col("family_pct").struct.field(name).cast(pl.Float64).fill_nan(None).alias(f"_fam:{name}")
        for name in fields
    )
    return out, fields


def _family_pct(name: str, families: list[str]) -> pl.Expr:
    """Attribution percent of one family at each point: NaN, null and missing count as 0."""
    if name not in families:
        return pl.lit(0.0)
    return pl.col(f"_fam:{name}").fill_null(0.0)


def _band_rank(score: pl.Expr, config: AlertRulesConfig) -> pl.Expr:
    sl = config.score_level
    if sl is None:
        return pl.lit(0, dtype=pl.Int64)
    expr: Any = pl
    for band in sl.bands:  # sorted highest min_score first
        expr = expr.when(score >= band.min_score).then(pl.lit(SEVERITY_RANK[band.severity], dtype=pl.Int64))
    return expr.otherwise(pl.lit(SEVERITY_RANK[sl.severity], dtype=pl.Int64))


def _precedence_severity(rule: _AlertingRule, config: AlertRulesConfig) -> str:
    """Severity a rule ranks with when several rules explain a point: its declared severity, or for a rule that
    derives severity from the score bands, the score_level floor. Static per rule, so the choice between rules
    does not flicker with the score of each point (which would split one incident into many)."""
    if rule.severity is not None:
        return rule.severity
    return config.score_level.severity if config.score_level is not None else "INFO"


def _assign(df: pl.DataFrame, config: AlertRulesConfig, families: list[str]) -> pl.DataFrame:
    """Add ``_rule`` and ``_conf``: the rule that explains each flagged point (by precedence) and its confidence."""
    candidates: list[pl.DataFrame] = []
    for order, rule in enumerate(config.matching_rules):
        if isinstance(rule, BurstRule):
            window = timedelta(microseconds=_us(rule.window_minutes))
            count = (
                pl.col("ts").is_not_null().cast(pl.Int64)
                .rolling_sum_by("ts", window, closed="both")
                .over("device_id")
            )
            # A point belongs to a burst when a qualifying window (one whose end holds >= min_anomalies points in
            # [end - window, end]) ends at or after it and starts at or before it.
            cand = df.with_columns(_count=count).with_columns(
                _end=pl.when(pl.col("_count") >= rule.min_anomalies).then(pl.col("ts")),
                _best=pl.when(pl.col("_count") >= rule.min_anomalies).then(pl.col("_count")),
            ).with_columns(
                _next_end=pl.col("_end").backward_fill().over("device_id"),
                _next_best=pl.col("_best").backward_fill().over("device_id"),
            ).filter(
                (pl.col("_next_end") - pl.col("ts")) <= window
            ).with_columns(
                _conf=(pl.col("_next_best") / rule.min_anomalies).clip(upper_bound=1.0).cast(pl.Float64)
            )
        else:
            pcts = [_family_pct(f, families) for f in rule.families]
            match = pl.all_horizontal([p >= rule.min_percent for p in pcts])
            conf = pl.mean_horizontal([(p / rule.min_percent).clip(upper_bound=1.0) for p in pcts])
            cand = df.filter(match).with_columns(_conf=conf.cast(pl.Float64))
        sev = pl.lit(SEVERITY_RANK[_precedence_severity(rule, config)], dtype=pl.Int64)
        candidates.append(
            cand.select(
                "_i",
                pl.lit(rule.name).alias("_rule"),
                pl.lit(rule.priority, dtype=pl.Int64).alias("_prio"),
                sev.alias("_sev"),
                pl.col("_conf"),
                pl.lit(order, dtype=pl.Int64).alias("_order"),
            )
        )
    if candidates:
        best = (
            pl.concat(candidates)
            .sort(["_i", "_prio", "_sev", "_conf", "_order"], descending=[False, True, True, True, False])
            .unique(subset="_i", keep="first", maintain_order=True)
            .select("_i", "_rule", "_conf")
        )
    else:
        best = pl.DataFrame(schema={"_i": pl.UInt32, "_rule": pl.Utf8, "_conf": pl.Float64})
    out = df.join(best, on="_i", how="left")
    fallback = config.fallback
    if fallback is None:
        return out.filter(pl.col("_rule").is_not_null())
    unexplained = pl.col("_rule").is_null()
    return out.with_columns(
        _rule=pl.when(unexplained).then(pl.lit(fallback.name)).otherwise(pl.col("_rule")),
        _conf=pl.when(unexplained).then(pl.lit(0.0)).otherwise(pl.col("_conf")),
    )


def _incidents(df: pl.DataFrame, config: AlertRulesConfig, families: list[str],
               top_features: pl.DataFrame) -> pl.DataFrame:
    """Merge points of one device+rule into incidents and aggregate them (one row per incident); `top_features`
    holds the points' ``top_features`` by row index ``_i``."""
    gaps = {
        r.name: _us(max(config.defaults.merge_gap_minutes,
                        r.cooldown_minutes if r.cooldown_minutes is not None else config.defaults.cooldown_minutes))
        for r in config.alerting_rules
    }
    df = df.sort(["device_id", "_rule", "ts"])
    prev = pl.col("ts").shift(1).over(["device_id", "_rule"])
    gap = pl.col("_rule").replace_strict(gaps, return_dtype=pl.Int64)
    df = df.with_columns(
        _inc=(prev.is_null() | ((pl.col("ts") - prev).dt.total_microseconds() > gap)).cast(pl.Int64).cum_sum()
    )
    inc = df.group_by("_inc").agg(
        pl.col("device_id").first(),
        pl.col("_rule").first().alias("rule_name"),
        pl.col("ts").min().alias("start_ts"),
        pl.col("ts").max().alias("end_ts"),
        pl.len().cast(pl.Int64).alias("n_events"),
        pl.col("score").max().alias("max_score"),
        pl.col("_conf").mean().alias("confidence"),
    )

    # Tag: the most frequent point tag (ties: earliest, then alphabetical).
    tags = (
        df.filter(pl.col("tag").is_not_null())
        .group_by(["_inc", "tag"])
        .agg(pl.len().alias("_n"), pl.col("ts").min().alias("_first"))
        .sort(["_inc", "_n", "_first", "tag"], descending=[False, True, False, False])
        .unique(subset="_inc", keep="first", maintain_order=True)
        .select("_inc", pl.col("tag").alias("_point_tag"))
    )
    inc = inc.join(tags, on="_inc", how="left")

    # Families: each point's attribution renormalised to 100 (NaN/negative → 0), averaged over the incident.
    if families:
        values = [pl.col(f"_fam:{f}").fill_null(0.0).clip(lower_bound=0.0) for f in families]
        total = pl.sum_horizontal(values)
        norm = df.select(
            "_inc",
            *(pl.when(total > 0).then(v * 100.0 / total).alias(f"_fam:{f}") for v, f in zip(values, families)),
        )
        means = norm.group_by("_inc").agg(pl.col(f"_fam:{f}").mean() for f in families)
        inc = inc.join(means, on="_inc", how="left")

    # Top features: mean percent per feature over the incident's points that carry a list, top N. The lists are
    # flattened where they lie and each entry finds its incident by row index (moving a million lists into
    # incident order cost more than all the rest).
    incident_of = df.select("_i", "_inc")
    n_with = incident_of.join(top_features.select("_i"), on="_i", how="semi").group_by("_inc").agg(
        pl.len().alias("_n"))
    feature_lists: dict[int, list[list[Any]]] = {}
    if n_with.height:
        ranked = (
            top_features.explode("top_features", empty_as_null=False)
            .select(
                "_i",
                pl.col("top_features").struct.field("feature").alias("_feature"),
                pl.col("top_features").struct.field("pct").cast(pl.Float64).fill_nan(None).fill_null(0.0)
                .alias("_pct"),
            )
            .filter(pl.col("_feature").is_not_null())
            .join(incident_of, on="_i")
            .group_by(["_inc", "_feature"])
            .agg(pl.col("_pct").sum())
            .join(n_with, on="_inc")
            .with_columns(_pct=pl.col("_pct") / pl.col("_n"))
            .sort(["_inc", "_pct", "_feature"], descending=[False, True, False])
            .with_columns(_rank=pl.int_range(pl.len()).over("_inc"))
            .filter(pl.col("_rank") < TOP_FEATURES_PER_ALERT)
        )
        for key, feature, pct in ranked.select("_inc", "_feature", "_pct").iter_rows():
            feature_lists.setdefault(key, []).append([feature, round(pct, 2)])

    # JSON texts: one small loop over incidents (not points).
    fam_texts, feat_texts = [], []
    fam_cols = [f"_fam:{f}" for f in families]
    for row in inc.select("_inc", *fam_cols).iter_rows():
        key, vals = row[0], row[1:]
        pairs = sorted(
            ((f, v) for f, v in zip(families, vals) if v is not None and v > 0), key=lambda p: (-p[1], p[0])
        )
        fam_texts.append(json.dumps({f: round(v, 2) for f, v in pairs}))
        feat_texts.append(json.dumps(feature_lists.get(key, [])))
    return inc.drop(fam_cols).with_columns(
        pl.Series("families", fam_texts, dtype=pl.Utf8), pl.Series("top_features", feat_texts, dtype=pl.Utf8)
    )


def _finalise(inc: pl.DataFrame, config: AlertRulesConfig) -> pl.DataFrame:
    """Severity, tag, route, texts and ids per incident."""
    rules = {r.name: r for r in config.alerting_rules}
    fixed = {n: r.severity for n, r in rules.items() if r.severity is not None}
    band_sev = _band_rank(pl.col("max_score"), config).replace_strict(
        {i: s for s, i in SEVERITY_RANK.items()}, return_dtype=pl.Utf8
    )
    rule_col = pl.col("rule_name")

    def lookup(mapping: dict[str, str | None]) -> pl.Expr:
        return rule_col.replace_strict(mapping, default=None, return_dtype=pl.Utf8)

    tag = pl.coalesce(pl.col("_point_tag"), lookup({n: r.tag for n, r in rules.items()}))
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

    out = inc.with_columns(
        severity=pl.coalesce(lookup(fixed), band_sev) if fixed else band_sev,
        tag=tag,
        cause=lookup({n: r.cause for n, r in rules.items()}),
        action=lookup({n: r.action for n, r in rules.items()}),
    ).with_columns(route=pl.coalesce(route_parts))
    ids = [alert_id(d, r, s) for d, r, s in out.select("device_id", "rule_name", "start_ts").iter_rows()]
    return out.with_columns(pl.Series("alert_id", ids, dtype=pl.Utf8))


def _inhibit(alerts: pl.DataFrame, config: AlertRulesConfig) -> pl.DataFrame:
    """Return (alert_id, _inhibited_by) for alerts suppressed by a higher-severity overlapping alert."""
    empty = pl.DataFrame(schema={"alert_id": pl.Utf8, "_inhibited_by": pl.Utf8})
    if not config.inhibit or alerts.height < 2:
        return empty
    a = alerts.select(
        "alert_id", "device_id", "start_ts", "end_ts", "rule_name",
        pl.col("severity").replace_strict(SEVERITY_RANK, return_dtype=pl.Int64).alias("_rank"), "severity",
    )
    # Like Alertmanager, inhibition mutes what starts while the source is firing: an incident that was already open
    # (and paged) when a more severe one began is not retracted.
    pairs = a.join(a, on="device_id", suffix="_src").filter(
        (pl.col("alert_id") != pl.col("alert_id_src"))
        & (pl.col("_rank_src") > pl.col("_rank"))
        & (pl.col("start_ts_src") <= pl.col("start_ts"))
        & (pl.col("start_ts") <= pl.col("end_ts_src"))
    )
    conditions = []
    for inh in config.inhibit:
        cond = pl.col("severity_src").is_in(list(inh.source_severity)) & pl.col("severity").is_in(
            list(inh.target_severity)
        )
        if inh.source_rules:
            cond = cond & pl.col("rule_name_src").is_in(list(inh.source_rules))
        if inh.target_rules:
            cond = cond & pl.col("rule_name").is_in(list(inh.target_rules))
        conditions.append(cond)
    return (
        pairs.filter(pl.any_horizontal(conditions))
        .sort(["alert_id", "_rank_src", "start_ts_src", "alert_id_src"], descending=[False, True, False, False])
        .unique(subset="alert_id", keep="first", maintain_order=True)
        .select("alert_id", pl.col("alert_id_src").alias("_inhibited_by"))
    )


def _silence_expr(alerts: pl.DataFrame, config: AlertRulesConfig) -> pl.Expr:
    devices = alerts["device_id"].unique().to_list()
    expr: Any = pl
    any_silence = False
    for i, silence in enumerate(config.silences):
        matched = [d for d in devices if silence.matches(d)]
        if not matched:
            continue
        any_silence = True
        label = f"silence:{silence.name if silence.name else i}"
        expr = expr.when(
            pl.col("device_id").is_in(matched)
            & (pl.col("start_ts") < silence.end)
            & (pl.col("end_ts") >= silence.start)
        ).then(pl.lit(label))
    if not any_silence:
        return pl.lit(None, dtype=pl.Utf8)
    return expr.otherwise(pl.lit(None, dtype=pl.Utf8))


def evaluate_alerts(
    points: pl.DataFrame, config: AlertRulesConfig, *, window_start: datetime | None = None
) -> pl.DataFrame:
    """Turn scored, explained telemetry points into routed incidents (see the module docstring for semantics).

    ``points``: ts, device_id, score, is_anomaly (required), top_family, family_pct, top_features, tag (optional);
    ``family_pct`` (struct of family → percent) and ``top_features`` (list of ``{feature, pct}``) as the
    explanations table stores them (``core.explain``).
    Only ``is_anomaly`` rows are used. Returns exactly :data:`ALERT_SCHEMA`, sorted by start_ts, device_id,
    rule_name, alert_id.
    """
    df = _prepare(points)
    if df.height == 0:
        return empty_alerts()
    df, families = _family_columns(df)
    # The nested columns stay out of the sorts and joins below: only each incident's top features need them.
    top_features = df.select("_i", "top_features").filter(pl.col("top_features").is_not_null())
    df = _assign(df.drop("family_pct", "top_features"), config, families)
    if df.height == 0:
        return empty_alerts()
    alerts = _finalise(_incidents(df, config, families, top_features), config)
    # Like Alertmanager's `for:`, an incident pages only once it holds min_events flagged points; smaller ones are
    # kept, marked, and do not inhibit others (an incident still growing at the end of a day can reach the
    # minimum when the next day is evaluated).
    needed = {r.name: r.min_events or config.defaults.min_events for r in config.alerting_rules}
    needed_expr = pl.col("rule_name").replace_strict(needed, return_dtype=pl.Int64)
    too_small = pl.col("n_events") < needed_expr
    inhibited = _inhibit(alerts.filter(~too_small), config)
    alerts = alerts.join(inhibited, on="alert_id", how="left").with_columns(
        suppressed_by=pl.coalesce(
            _silence_expr(alerts, config),
            pl.when(too_small).then(pl.format("min_events:{}", needed_expr)),
            pl.col("_inhibited_by"),
        )
    )
    if window_start is not None:
        alerts = alerts.filter(pl.col("end_ts") >= _to_naive_utc(window_start))
    return (
        alerts.sort(["start_ts", "device_id", "rule_name", "alert_id"])
        .select(pl.col(name).cast(dtype) for name, dtype in ALERT_SCHEMA.items())
    )
