"""Alerting: YAML rules → validated config → incidents an operator can act on (pure logic, no Dagster import).

* ``config``    -- the rule file's models (rule types: ``dominant_family``, ``burst``, ``fallback``, ``tag_route``,
  ``score_level``; ``defaults``, ``silences``);
* ``loading``   -- reading a rule file, with one-line errors naming the file, the rule and the field;
* ``incidents`` -- flagged points → one incident per device and stretch of evidence (bridged across a lull by the
  deadband), with its evidence;
* ``decisions`` -- cause, confidence, severity and route of an incident, from all its evidence;
* ``engine``    -- ``evaluate_alerts``: the above in order, plus folding, suppression and status.

See ``configs/alert_rules.yaml`` for a documented rule file.
"""

from itap_assets.core.alerting.config import DEFAULT_FAMILIES, SEVERITIES, AlertRulesConfig, AlertRulesError, \
    Defaults, normalise_tag
from itap_assets.core.alerting.engine import ALERT_SCHEMA, alert_id, empty_alerts, evaluate_alerts, \
    grouping_reach_minutes
from itap_assets.core.alerting.incidents import deadband_states
from itap_assets.core.alerting.loading import load_alert_rules, parse_alert_rules

__all__ = [
    "ALERT_SCHEMA", "DEFAULT_FAMILIES", "SEVERITIES", "AlertRulesConfig", "AlertRulesError", "Defaults", "alert_id",
    "deadband_states", "empty_alerts", "evaluate_alerts", "grouping_reach_minutes", "load_alert_rules",
    "normalise_tag", "parse_alert_rules",
]
