"""Receivers of incident notifications: the `receivers:` list of `configs/alert_rules.yaml`.

Strict pydantic models (unknown keys are errors). The rule loader (`alerting.loading`) validates each entry with
its own helpers, so a bad receiver fails with the file, the receiver and the field named, as a bad rule does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, HttpUrl, field_validator

from itap_assets.settings import Strict, checked_id


class _ReceiverBase(Strict):
    """What every receiver has: where to post, which incidents it opens, how hard to retry, whether history pages.

    `routes` and `min_severity` decide which incidents a receiver opens; once it has been told about one it hears
    every later change of it (revised, resolved), so a page is always closed where it was opened."""

    name: str
    url: HttpUrl
    routes: tuple[str, ...] = Field((), description="Routes (teams) this receiver opens incidents for; () = all.")
    min_severity: str = "INFO"
    timeout_s: float = Field(10.0, gt=0, le=300)
    max_attempts: int = Field(5, ge=1, le=20, description="Attempts per run on 429, 5xx and connection errors.")
    backoff_s: float = Field(1.0, ge=0, le=600, description="First wait between attempts; doubles each attempt.")
    deliver_backfills: bool = Field(
        False, description="Deliver state changes found by a backfill or older than page_within_hours too.")
    page_within_hours: float | None = Field(
        24.0, gt=0, le=8_760, description="A change whose evidence ended longer ago than this is history, not a "
                                          "page; null = no age limit; at most a year (8,760 h).")

    _name = field_validator("name")(checked_id)

    @field_validator("min_severity", mode="before")
    @classmethod
    def _min_severity(cls, value: Any) -> str:
        # Imported here: alerting.config imports this module for AlertRulesConfig.receivers.
        from itap_assets.core.alerting.config import _severity

        return _severity(value)


class WebhookReceiver(_ReceiverBase):
    """Generic JSON in Prometheus Alertmanager's webhook format (version 4)."""

    type: Literal["webhook"]


class PagerDutyReceiver(_ReceiverBase):
    """PagerDuty Events API v2 (`url` is https://events.pagerduty.com/v2/enqueue in production)."""

    type: Literal["pagerduty"]
    routing_key: str = Field(min_length=1)


Receiver = WebhookReceiver | PagerDutyReceiver
RECEIVER_TYPES: dict[str, type[_ReceiverBase]] = {"webhook": WebhookReceiver, "pagerduty": PagerDutyReceiver}


def parse_receivers(raw: Any, validate: Callable, fail: Callable[[str], None]) -> tuple[Receiver, ...]:
    """The `receivers:` list, each entry checked by the rule loader's `validate(model, raw, label, fail)`."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        fail(f"receivers must be a list, got {type(raw).__name__}")
    out: list[Receiver] = []
    for i, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        label = f"Receiver {name!r}" if name else f"receivers[{i}]"
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in RECEIVER_TYPES:
            fail(f"{label}: type={kind!r} must be one of {', '.join(RECEIVER_TYPES)}")
        receiver = validate(RECEIVER_TYPES[kind], item, label, fail)
        if any(r.name == receiver.name for r in out):
            fail(f"{label}: duplicate receiver name")
        out.append(receiver)
    return tuple(out)
