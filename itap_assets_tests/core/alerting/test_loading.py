"""Alert rule config: loading, normalisation and fail-fast error messages naming file, rule and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from itap_assets.core.alerting import DEFAULT_FAMILIES, AlertRulesError, load_alert_rules, parse_alert_rules
from itap_assets.core.alerting.config import DominantFamilyRule
from itap_assets_tests.core.alerting.builders import SOURCE, bands, burst, config, dominant, fallback, tag_routes

ROOT = Path(__file__).resolve().parents[3]


def error_of(raw: dict, known=DEFAULT_FAMILIES) -> str:
    with pytest.raises(AlertRulesError) as info:
        parse_alert_rules(raw, known, source=SOURCE)
    return str(info.value)


def with_rules(*rules: dict, **top) -> dict:
    return {"defaults": {"default_route": "ops"}, "rules": list(rules), **top}


# --- the shipped files -------------------------------------------------------------------------------------------


def test_default_rule_file_loads_with_the_default_families():
    # given the shipped rule file / when it is loaded
    cfg = load_alert_rules(ROOT / "configs" / "alert_rules.yaml", DEFAULT_FAMILIES)
    # then it has one fallback, one score_level and one tag_route rule, and every alerting rule has a route
    assert cfg.fallback is not None and cfg.score_level is not None and cfg.tag_route is not None
    assert cfg.tag_route.routes["bearing_wear"] == "maintenance"
    assert cfg.defaults.default_route == "operations"
    assert cfg.source.endswith("alert_rules.yaml")


def test_annotated_example_file_loads():
    # given the annotated example / when it is loaded
    cfg = load_alert_rules(ROOT / "configs" / "examples" / "alert_rules_annotated.yaml", DEFAULT_FAMILIES)
    # then its normalised tags, case-insensitive severities and offset-aware silences are converted
    assert cfg.tag_route.routes["hist_alarm_42"] == "electrical"
    assert cfg.score_level.severity == "INFO"
    assert cfg.silences[1].start.tzinfo is None and cfg.silences[1].start.hour == 23


# --- normalisation -----------------------------------------------------------------------------------------------


def test_severity_is_case_insensitive():
    # given severities written in mixed case / when parsed
    cfg = config(dominant("vib", "Vibration", severity="critical"), fallback(severity="Warning"))
    # then they are stored upper case
    assert [r.severity for r in cfg.rules] == ["CRITICAL", "WARNING"]


def test_family_names_are_matched_case_insensitively_and_canonicalised():
    # given a family written in lower case / when parsed
    cfg = config(dominant("vib", ["vibration", "rpm"], severity="WARNING"))
    # then the canonical family names are stored
    rule = cfg.rules[0]
    assert isinstance(rule, DominantFamilyRule) and rule.families == ("Vibration", "RPM")


def test_rule_tags_and_route_keys_are_normalised_at_load():
    # given a rule tag and route keys with case, spaces and hyphens
    cfg = config(dominant("vib", "Vibration", tag="Bearing-Wear"), tag_routes(**{"Over Heating": "maint"}))
    # then both are normalised to lower_snake
    assert cfg.rules[0].tag == "bearing_wear"
    assert cfg.tag_route.routes == {"over_heating": "maint"}


def test_user_added_family_is_valid_when_known():
    # given a family added through the settings / when it is passed as known
    cfg = config(dominant("pressure", "Pressure"), known_families=(*DEFAULT_FAMILIES, "Pressure"))
    # then a rule may use it
    assert cfg.rules[0].families == ("Pressure",)


def test_inhibit_is_an_error_saying_why_it_is_gone():
    message = error_of(with_rules(fallback(severity="INFO"), inhibit=[]))
    assert message.startswith("configs/alert_rules.yaml: inhibit is no longer supported: incidents are grouped per "
                              "device")


def test_disabled_duplicate_singleton_is_allowed():
    # given two fallback rules of which one is disabled / when parsed
    cfg = config(fallback("fb1", severity="INFO"), fallback("fb2", severity="INFO", enabled=False))
    # then the enabled one is the fallback
    assert cfg.fallback.name == "fb1"


# --- error messages ----------------------------------------------------------------------------------------------


def test_min_percent_above_100_names_file_rule_and_field():
    # given a dominant_family rule with min_percent=150 / when parsed
    message = error_of(with_rules(dominant("bad_rule", "Vibration", min_percent=150)))
    # then the message is exactly the documented one
    assert message == "configs/alert_rules.yaml: Rule 'bad_rule': min_percent=150 must be between 0 and 100"


def test_min_percent_zero_is_rejected():
    message = error_of(with_rules(dominant("bad_rule", "Vibration", min_percent=0)))
    assert message.startswith("configs/alert_rules.yaml: Rule 'bad_rule': min_percent=0 must be between 0 and 100")


def test_unknown_family_is_named_with_a_suggestion():
    # given a misspelt family / when parsed
    message = error_of(with_rules(dominant("vib", ["Vibraton"])))
    # then the message names file, rule, field and suggests the closest known family
    assert message.startswith("configs/alert_rules.yaml: Rule 'vib': families: unknown family 'Vibraton'")
    assert "did you mean 'Vibration'?" in message


def test_family_unknown_to_the_settings_is_rejected():
    # given a family that the settings do not define
    message = error_of(with_rules(dominant("p", "Pressure")))
    # then it is an error listing the known families
    assert "Rule 'p': families: unknown family 'Pressure'" in message and "Temperature" in message


def test_unknown_rule_type_suggests_the_closest():
    message = error_of(with_rules({**dominant("r1", "Vibration"), "type": "dominant_familly"}))
    assert message.startswith("configs/alert_rules.yaml: Rule 'r1': unknown rule type 'dominant_familly'")
    assert "did you mean 'dominant_family'?" in message


def test_duplicate_rule_names_are_rejected():
    message = error_of(with_rules(dominant("same", "Vibration"), dominant("same", "Temperature")))
    assert message == "configs/alert_rules.yaml: Rule 'same': duplicate rule name (rules[0] and rules[1])"


@pytest.mark.parametrize("value", [0, -3])
def test_burst_min_anomalies_must_be_positive(value):
    message = error_of(with_rules(burst("b", n=value)))
    assert message == f"configs/alert_rules.yaml: Rule 'b': min_anomalies={value} must be 1 or more"


@pytest.mark.parametrize("value", [0, -5, -0.5])
def test_burst_window_must_be_positive(value):
    message = error_of(with_rules(burst("b", window=value)))
    assert message == f"configs/alert_rules.yaml: Rule 'b': window_minutes={value} must be greater than 0"


def test_merge_gap_must_be_positive():
    raw = {"defaults": {"default_route": "ops", "merge_gap_minutes": 0}, "rules": [fallback(severity="INFO")]}
    message = error_of(raw)
    assert message == "configs/alert_rules.yaml: defaults: merge_gap_minutes=0 must be greater than 0"


def test_negative_cooldown_on_a_rule_is_rejected():
    message = error_of(with_rules(dominant("vib", "Vibration", cooldown_minutes=-1)))
    assert message == "configs/alert_rules.yaml: Rule 'vib': cooldown_minutes=-1 must be 0 or more"


def test_missing_route_without_any_default_route_is_rejected():
    # given no defaults.default_route and a rule without route or tag
    message = error_of({"rules": [dominant("vib", "Vibration")]})
    # then the rule and the missing field are named
    assert message.startswith("configs/alert_rules.yaml: Rule 'vib': route is missing and there is no default route")


def test_rule_with_its_own_route_needs_no_default_route():
    cfg = parse_alert_rules({"rules": [dominant("vib", "Vibration", route="maint")]}, DEFAULT_FAMILIES)
    assert cfg.rules[0].route == "maint"


def test_tagged_rule_routes_through_tag_route_without_default_route():
    # given no defaults.default_route but a tag_route with its own default and a tagged rule
    raw = {"rules": [dominant("vib", "Vibration", tag="bearing_wear"), tag_routes(default_route="triage")]}
    # then the config is valid (every tag, known or not, has a route)
    assert parse_alert_rules(raw, DEFAULT_FAMILIES).tag_route.default_route == "triage"


def test_tag_route_without_any_default_route_is_rejected():
    message = error_of({"rules": [dominant("vib", "Vibration", route="m"), tag_routes(default_route=None)]})
    assert message.startswith("configs/alert_rules.yaml: Rule 'tags': default_route is missing")


def test_misspelt_rule_key_is_named_with_a_suggestion():
    raw = dominant("vib", "Vibration")
    raw["min_percnt"] = raw.pop("min_percent")
    message = error_of(with_rules(raw))
    assert message == "configs/alert_rules.yaml: Rule 'vib': unknown key 'min_percnt'; did you mean 'min_percent'?"


def test_key_of_another_rule_type_is_unknown():
    # given a burst field on a dominant_family rule
    message = error_of(with_rules(dominant("vib", "Vibration", window_minutes=5)))
    assert message.startswith("configs/alert_rules.yaml: Rule 'vib': unknown key 'window_minutes'")


def test_misspelt_top_level_and_defaults_keys_are_named():
    top = error_of({"defalts": {}, "rules": [fallback(severity="INFO")]})
    nested = error_of({"defaults": {"merge_gap": 5, "default_route": "ops"}, "rules": [fallback(severity="INFO")]})
    assert top.startswith("configs/alert_rules.yaml: unknown top-level key 'defalts'") and "'defaults'" in top
    assert nested == "configs/alert_rules.yaml: defaults: unknown key 'merge_gap'; did you mean 'merge_gap_minutes'?"


def test_misspelt_key_inside_a_score_band_is_named():
    message = error_of(with_rules(fallback(), {"name": "lv", "type": "score_level",
                                               "bands": [{"min_scor": 3, "severity": "INFO"}]}))
    assert message.startswith("configs/alert_rules.yaml: Rule 'lv': unknown key 'bands[0].min_scor'")
    assert "did you mean 'min_score'?" in message


def test_bad_severity_is_named():
    message = error_of(with_rules(dominant("vib", "Vibration", severity="urgent")))
    assert message == (
        "configs/alert_rules.yaml: Rule 'vib': severity='urgent' must be one of INFO, WARNING, CRITICAL "
        "(case-insensitive)"
    )


def test_wrong_type_names_the_field():
    message = error_of(with_rules(burst("b", window="five")))
    assert message.startswith("configs/alert_rules.yaml: Rule 'b': window_minutes='five':")


def test_missing_severity_without_score_level_is_rejected():
    message = error_of(with_rules(fallback()))
    assert message.startswith("configs/alert_rules.yaml: Rule 'unexplained': severity is missing")


def test_score_bands_must_not_lower_severity_as_score_rises():
    rule = {"name": "lv", "type": "score_level",
            "bands": [{"min_score": 3, "severity": "INFO"}, {"min_score": 1, "severity": "WARNING"}]}
    message = error_of(with_rules(fallback(), rule))
    assert message.startswith("configs/alert_rules.yaml: Rule 'lv': bands: min_score=3 gives INFO")


def test_two_enabled_fallback_rules_are_rejected():
    message = error_of(with_rules(fallback("fb1", severity="INFO"), fallback("fb2", severity="INFO")))
    assert message == "configs/alert_rules.yaml: Rule 'fb2': only one enabled fallback rule is allowed (also 'fb1')"


def test_tags_colliding_after_normalisation_are_rejected():
    rule = tag_routes(**{"Bearing-Wear": "maint", "bearing wear": "ops"})
    message = error_of(with_rules(fallback(severity="INFO"), rule))
    assert "Rule 'tags': routes: tags 'Bearing-Wear' and 'bearing wear' both normalise to 'bearing_wear'" in message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"defaults": {"default_route": "ops"}, "rules": []}, "configs/alert_rules.yaml: rules is empty"),
        ({"defaults": {"default_route": "ops"}}, "configs/alert_rules.yaml: 'rules' is missing"),
        ({"rules": [{"type": "burst"}]}, "configs/alert_rules.yaml: rules[0]: name is missing"),
        (["not", "a", "mapping"], "configs/alert_rules.yaml: top level must be a mapping"),
    ],
)
def test_structural_errors(raw, expected):
    assert error_of(raw).startswith(expected)


def test_config_without_alerting_rule_is_rejected():
    message = error_of(with_rules(bands(), tag_routes()))
    assert "no alerting rule" in message


def test_silence_ending_before_it_starts_is_rejected():
    silence = {"name": "maint", "device": "DEV-*", "start": "2026-01-02T10:00:00", "end": "2026-01-02T09:00:00"}
    message = error_of(with_rules(fallback(severity="INFO"), silences=[silence]))
    assert message == (
        "configs/alert_rules.yaml: Silence 'maint': end=2026-01-02T09:00:00 must be after start=2026-01-02T10:00:00"
    )


def test_unnamed_silence_is_named_by_index_and_needs_a_device_matcher():
    silence = {"start": "2026-01-02T08:00:00", "end": "2026-01-02T09:00:00"}
    message = error_of(with_rules(fallback(severity="INFO"), silences=[silence]))
    assert message.startswith("configs/alert_rules.yaml: silences[0]: give exactly one of device")


def test_silence_with_invalid_regex_is_rejected():
    silence = {"name": "m", "device_regex": "DEV-(", "start": "2026-01-02T08:00", "end": "2026-01-02T09:00"}
    message = error_of(with_rules(fallback(severity="INFO"), silences=[silence]))
    assert message.startswith("configs/alert_rules.yaml: Silence 'm': device_regex='DEV-(' is not a valid regular")


# --- files -------------------------------------------------------------------------------------------------------


def test_bad_yaml_file_names_the_file(tmp_path):
    # given a file with broken YAML
    path = tmp_path / "alert_rules.yaml"
    path.write_text("rules: [\n  - name: x\n    type: burst\n  bad indent", encoding="utf-8")
    # when it is loaded / then the error names the file
    with pytest.raises(AlertRulesError, match=r"alert_rules\.yaml: not valid YAML"):
        load_alert_rules(path, DEFAULT_FAMILIES)


def test_python_object_tags_are_refused(tmp_path):
    # given a file trying to build a Python object
    path = tmp_path / "evil.yaml"
    path.write_text("rules:\n  - !!python/object/apply:os.system ['echo pwned']\n", encoding="utf-8")
    # when loaded / then safe_load refuses it and nothing runs
    with pytest.raises(AlertRulesError, match=r"evil\.yaml: not valid YAML .*!!python/object"):
        load_alert_rules(path, DEFAULT_FAMILIES)


def test_empty_and_missing_files_are_errors(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(AlertRulesError, match=r"empty\.yaml: file is empty"):
        load_alert_rules(empty, DEFAULT_FAMILIES)
    with pytest.raises(AlertRulesError, match=r"missing\.yaml: cannot read"):
        load_alert_rules(tmp_path / "missing.yaml", DEFAULT_FAMILIES)


def test_errors_from_a_file_name_the_file_path(tmp_path):
    # given a file with an invalid rule
    path = tmp_path / "alert_rules.yaml"
    path.write_text(
        "defaults: {default_route: ops}\nrules:\n  - name: bad_rule\n    type: dominant_family\n"
        "    families: [Vibration]\n    min_percent: 150\n    severity: WARNING\n    cause: c\n    action: a\n",
        encoding="utf-8",
    )
    # when loaded / then the message starts with the path and names rule and field
    with pytest.raises(AlertRulesError) as info:
        load_alert_rules(path, DEFAULT_FAMILIES)
    assert str(info.value) == f"{path}: Rule 'bad_rule': min_percent=150 must be between 0 and 100"
    assert isinstance(info.value, ValueError)


def test_the_deadband_holds_at_most_the_day_of_context_an_alerts_run_reads():
    raw = {"defaults": {"default_route": "ops", "hold_minutes": 2000}, "rules": [fallback(severity="INFO")]}
    assert error_of(raw) == ("configs/alert_rules.yaml: defaults: hold_minutes=2000 must be a finite number of "
                             "minutes, at most 1,440 (one day)")
    raw["defaults"] = {"default_route": "ops", "clear_ratio": 0}
    assert error_of(raw) == "configs/alert_rules.yaml: defaults: clear_ratio=0 must be greater than 0 and at most 1"
