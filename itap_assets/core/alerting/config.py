"""Alert rule configuration: the pydantic models of ``configs/alert_rules.yaml`` (loading and error text live in
``alerting.loading``). Every model forbids unknown keys and is frozen."""

from __future__ import annotations

import difflib
import fnmatch
import functools
import math
import re
from collections.abc import Collection
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

import re2
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from itap_assets.core.receivers import Receiver
from itap_assets.settings import checked_id

SEVERITIES = ("INFO", "WARNING", "CRITICAL")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
DEFAULT_FAMILIES = ("Temperature", "Vibration", "Voltage", "Current", "RPM", "State", "DataQuality")

# The range of every number and size in a rule file (docs/reliability.md, configs/examples/alert_rules_annotated.yaml)
# so that a file the loader accepts cannot overflow or stall the alerts step. A year of minutes keeps durations
# within int64 microseconds; a burst window under a second holds no more than one point; counts beyond a million
# and priorities beyond int32 mean nothing for one device's incidents. Evaluation costs points x rules, hence the
# bounds on rules, silences and the lists inside a rule.
MAX_MINUTES = 525_600
MIN_WINDOW_MINUTES = 1 / 60
MAX_COUNT = 1_000_000
PRIORITY_RANGE = (-(2**31), 2**31 - 1)
MAX_RULES = 1_000
MAX_SILENCES = 1_000
MAX_LIST_ITEMS = 1_000
MAX_PATTERN_CHARS = 256
MAX_TEXT_CHARS = 1_000  # operator texts, routes and tags: every alert row carries its rule's
MAX_FILE_BYTES = 1_000_000


class AlertRulesError(ValueError):
    """An alert rule file that cannot be used; the message names the file, the rule and the field."""


# ----------------------------------------------------------------------------------------------------------------
# Helpers shared by config and engine
# ----------------------------------------------------------------------------------------------------------------

_TAG_SEPARATORS = re.compile(r"[\s\-_]+")


def normalise_tag(tag: str | None) -> str | None:
    """``'Bearing-Wear'``, ``' bearing  wear '`` and ``'BEARING_WEAR'`` become ``'bearing_wear'``; blank → None."""
    if tag is None:
        return None
    out = _TAG_SEPARATORS.sub("_", str(tag).strip().lower()).strip("_")
    return out or None


def to_naive_utc(value: datetime) -> datetime:
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


def _within_a_year(value: float | None) -> float | None:
    if value is not None and not value <= MAX_MINUTES:  # NaN and infinity fail the comparison too
        raise ValueError(f"must be a finite number of minutes, at most {MAX_MINUTES:,} (one year)")
    return value


def _share(value: float) -> float:
    if not 0 < value <= 1:
        raise ValueError("must be greater than 0 and at most 1")
    return value


def _within_a_day(value: float) -> float:
    # The alerts step reads the day before a run's first day as context: a deadband longer than that would make a
    # daily run's incidents differ from a backfill's.
    if not value <= 24 * 60:
        raise ValueError("must be a finite number of minutes, at most 1,440 (one day)")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _whole_number_within(low: int | None, high: int, note: str = "") -> Any:
    """A check before int parsing, so ``1e20`` is named as out of range rather than as an unparseable integer
    (``low=None``: the field's own validator words the lower bound)."""

    def check(value: Any) -> Any:
        number = value
        if isinstance(value, str):  # YAML reads an unsigned exponent (1e20) as text
            try:
                number = float(value)
            except ValueError:
                return value
        if isinstance(number, (int, float)) and not isinstance(number, bool) and (
                number > high or (low is not None and number < low)):
            raise ValueError(f"must be at most {high:,}{note}" if low is None
                             else f"must be between {low:,} and {high:,}{note}")
        return value

    return check


def _non_blank(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("must not be blank")
    return value.strip() if value is not None else None


class Defaults(_Strict):
    """File-wide defaults. ``resolve_after_minutes``: an incident without new evidence for that long (measured
    against the device's latest scored reading) is ``resolved``; until then it is ``firing``. ``clear_ratio`` and
    ``hold_minutes``: the deadband (ISA-18.2) of an incident: flagged points more than the merge gap apart still
    belong to one incident while every score between them stayed at or above ``clear_ratio`` × the threshold,
    for at most ``hold_minutes`` (a lull of the fault, not a recovery; 1 or 0 = no deadband)."""

    cooldown_minutes: float = 0.0
    merge_gap_minutes: float = 15.0
    default_route: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    min_events: int = 1
    resolve_after_minutes: float = 30.0
    clear_ratio: float = 0.5
    hold_minutes: float = 240.0

    @field_validator("min_events")
    @classmethod
    def _min_events(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    _cooldown = field_validator("cooldown_minutes", "hold_minutes")(_non_negative)
    _hold_bound = field_validator("hold_minutes")(_within_a_day)
    _clear = field_validator("clear_ratio")(_share)
    _gap = field_validator("merge_gap_minutes", "resolve_after_minutes")(_positive)
    _minutes_bound = field_validator("cooldown_minutes", "merge_gap_minutes", "resolve_after_minutes")(
        _within_a_year)
    _min_events_bound = field_validator("min_events", mode="before")(_whole_number_within(None, MAX_COUNT))
    _route = field_validator("default_route")(_non_blank)


class _RuleBase(_Strict):
    name: str
    enabled: bool = True
    description: str = Field("", max_length=MAX_TEXT_CHARS)

    _name = field_validator("name")(checked_id)


class _AlertingRule(_RuleBase):
    """A rule whose incidents become alerts: carries severity, route, operator texts and cooldown."""

    severity: Severity | None = None
    route: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    cause: str = Field(max_length=MAX_TEXT_CHARS)
    action: str = Field(max_length=MAX_TEXT_CHARS)
    tag: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    cooldown_minutes: float | None = None
    min_events: int | None = None

    _route = field_validator("route")(_non_blank)
    _cooldown = field_validator("cooldown_minutes")(_non_negative)
    _cooldown_bound = field_validator("cooldown_minutes")(_within_a_year)
    _min_events_bound = field_validator("min_events", mode="before")(_whole_number_within(None, MAX_COUNT))

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

    _priority_bound = field_validator("priority", mode="before")(_whole_number_within(*PRIORITY_RANGE, " (int32)"))


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

    _anomalies_bound = field_validator("min_anomalies", mode="before")(_whole_number_within(None, MAX_COUNT))
    _window = field_validator("window_minutes")(_positive)
    _window_bound = field_validator("window_minutes")(_within_a_year)

    @field_validator("window_minutes")
    @classmethod
    def _at_least_a_second(cls, value: float) -> float:
        if value < MIN_WINDOW_MINUTES:
            raise ValueError("must be at least 1/60 minute (one second)")
        return value


class DominantFamilyRule(_MatchingRule):
    type: Literal["dominant_family"]
    families: tuple[str, ...] = Field(max_length=MAX_LIST_ITEMS)
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
    routes: dict[str, str] = Field(max_length=MAX_LIST_ITEMS)
    default_route: str | None = Field(None, max_length=MAX_TEXT_CHARS)

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
            if max(len(raw), len(route)) > MAX_TEXT_CHARS:
                raise ValueError(f"tag {raw[:40]!r}: tags and routes hold at most {MAX_TEXT_CHARS:,} characters")
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
    _min_finite = field_validator("min_score")(_finite)


class ScoreLevelRule(_RuleBase):
    type: Literal["score_level"]
    bands: tuple[ScoreBand, ...] = Field(max_length=MAX_LIST_ITEMS)
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


@functools.lru_cache(maxsize=MAX_SILENCES)
def _device_pattern(regex: str) -> Any:
    """RE2 (linear time in the id's length, whatever the pattern): Python's ``re`` backtracks, and a pattern such
    as ``(a+)+b`` would spin for hours on one device id. Patterns RE2 cannot run in linear time (backreferences,
    lookaround) are rejected at load."""
    options = re2.Options()
    options.log_errors = False
    return re2.compile(regex, options=options)


class Silence(_Strict):
    """A maintenance window ``[start, end)`` for devices matching ``device`` (glob) or ``device_regex`` (full match,
    RE2 syntax)."""

    name: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    device: str | None = Field(None, max_length=MAX_PATTERN_CHARS)
    device_regex: str | None = Field(None, max_length=MAX_PATTERN_CHARS)
    start: datetime
    end: datetime
    comment: str = Field("", max_length=MAX_TEXT_CHARS)

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return to_naive_utc(value)

    @field_validator("device_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                _device_pattern(value)
            except re2.error as exc:
                reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
                raise ValueError(
                    f"is not a valid regular expression in RE2 syntax (linear-time matching): {reason}") from None
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
        return _device_pattern(self.device_regex or "").fullmatch(device_id) is not None



class AlertRulesConfig(_Strict):
    """A validated rule set. Build it with :func:`parse_alert_rules` or :func:`load_alert_rules`."""

    source: str = "<alert rules>"
    known_families: tuple[str, ...] = DEFAULT_FAMILIES
    defaults: Defaults = Defaults()
    rules: tuple[AnyRule, ...]
    silences: tuple[Silence, ...] = ()
    receivers: tuple[Receiver, ...] = ()

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

