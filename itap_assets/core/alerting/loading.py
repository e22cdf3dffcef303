"""Reading an alert rule file: ``yaml.safe_load`` only, then the strict models of ``alerting.config``. Every problem
is one :class:`AlertRulesError` line naming the file, the rule (by name) and the field, e.g.
``configs/alert_rules.yaml: Rule 'bad_rule': min_percent=150 must be between 0 and 100``."""

from __future__ import annotations

import reprlib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from itap_assets.core.receivers import parse_receivers

from itap_assets.core.alerting.config import (
    MAX_FILE_BYTES,
    MAX_RULES,
    MAX_SILENCES,
    RULE_TYPES,
    AlertRulesConfig,
    AlertRulesError,
    Defaults,
    ScoreBand,
    ScoreLevelRule,
    Silence,
    TagRouteRule,
    _AlertingRule,
    _RuleBase,
    _suggest,
)

_TOP_KEYS = ("defaults", "rules", "silences", "receivers")


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
        if key == "inhibit":
            fail("inhibit is no longer supported: incidents are grouped per device, so overlapping evidence of one "
                 "device is one incident whose cause is decided from all of it; delete the inhibit section")
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
    if len(rules_raw) > MAX_RULES:
        fail(f"rules: {len(rules_raw):,} rules, at most {MAX_RULES:,} are allowed (evaluation costs points x rules)")

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


    silences_raw = raw.get("silences") or []
    if not isinstance(silences_raw, list):
        fail(f"silences must be a list, got {type(silences_raw).__name__}")
    if len(silences_raw) > MAX_SILENCES:
        fail(f"silences: {len(silences_raw):,} silences, at most {MAX_SILENCES:,} are allowed")
    silences = []
    for i, item in enumerate(silences_raw):
        label = f"Silence {item['name']!r}" if isinstance(item, Mapping) and item.get("name") else f"silences[{i}]"
        silences.append(_validate(Silence, item, label, fail))

    return AlertRulesConfig(
        source=source,
        known_families=known,
        defaults=defaults,
        rules=tuple(rules),
        silences=tuple(silences),
        receivers=parse_receivers(raw.get("receivers"), _validate, fail),
    )


def load_alert_rules(path: Path | str, known_families: Collection[str]) -> AlertRulesConfig:
    """Read (``yaml.safe_load`` only, at most :data:`MAX_FILE_BYTES`) and validate a rule file."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise AlertRulesError(f"{path}: cannot read alert rules: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise AlertRulesError(f"{path}: larger than {MAX_FILE_BYTES:,} bytes (1 MB), the most a rule file may hold")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AlertRulesError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AlertRulesError(
            f"{path}: not valid YAML (only plain YAML is accepted; tags such as !!python/object are refused): {exc}"
        ) from exc
    except RecursionError:  # PyYAML composes nested collections recursively
        raise AlertRulesError(f"{path}: nested too deeply to be a rule file") from None
    if raw is None:
        raise AlertRulesError(f"{path}: file is empty: list at least one rule under 'rules'")
    return parse_alert_rules(raw, known_families, source=str(path))

