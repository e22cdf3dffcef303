"""`itap`: operators acknowledge, silence and export incidents from a shell.

    itap ack ALERT_ID --by NAME [--note TEXT]
    itap unack ALERT_ID --by NAME [--note TEXT]
    itap silence ALERT_ID --by NAME --until ISO [--note TEXT]
    itap export alerts [--since ISO] [--until ISO] > alerts.json

The database is ITAP_DB_PATH (default data/itap.duckdb), or --db. An unknown alert id or a bad time is one line
on stderr and exit code 2.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

import click

from itap_assets import feed

DB = click.option("--db", type=click.Path(dir_okay=False), default=None,
                  help="DuckDB file (default: ITAP_DB_PATH or data/itap.duckdb).")
BY = click.option("--by", "by", required=True, help="Who acts (name or handle).")
NOTE = click.option("--note", default=None, help="Free text shown in itap.v_alerts.")


def _run(action: Callable[[], object]) -> object:
    try:
        return action()
    except (feed.UnknownAlert, ValueError) as exc:
        click.echo(f"itap: error: {exc.args[0] if exc.args else exc}", err=True)
        raise SystemExit(2) from None


def _time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    try:
        return None if value is None else feed.as_utc(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO time such as 2026-01-02T08:00 or 2026-01-02T08:00+01:00")


@click.group(help="Act on ITAP incidents: acknowledge, silence, export.")
def main() -> None:
    """Entry point of the `itap` console script."""


def _ack_command(name: str, action: Callable[..., None], done: str, help_text: str) -> click.Command:
    """`itap ack` and `itap unack`: the same arguments, another action."""

    @main.command(name, help=help_text)
    @click.argument("alert_id")
    @BY
    @NOTE
    @DB
    def command(alert_id: str, by: str, note: str | None, db: str | None) -> None:
        _run(lambda: action(alert_id, by, note, db=db))
        click.echo(f"{done} {alert_id} by {by}")

    return command


ack = _ack_command("ack", feed.acknowledge, "acknowledged", "Acknowledge an incident: someone owns it.")
unack = _ack_command("unack", feed.unacknowledge, "unacknowledged", "Withdraw an acknowledgement.")


@main.command(help="Silence an incident until a time: no page for it until then (a resolve is still sent).")
@click.argument("alert_id")
@BY
@click.option("--until", "until", required=True, callback=_time, help="ISO time; without offset it is UTC.")
@NOTE
@DB
def silence(alert_id: str, by: str, until: datetime, note: str | None, db: str | None) -> None:
    _run(lambda: feed.silence(alert_id, by, until, note, db=db))
    click.echo(f"silenced {alert_id} until {until:%Y-%m-%d %H:%M:%S} UTC by {by}")


@main.group(help="Write data as JSON to stdout.")
def export() -> None:
    """`itap export alerts`."""


@export.command("alerts", help="Active incidents in the predecessor's alerts.json shape.")
@click.option("--since", callback=_time, default=None, help="Incidents that started at or after this ISO time.")
@click.option("--until", callback=_time, default=None, help="Incidents that started before this ISO time.")
@DB
def export_alerts(since: datetime | None, until: datetime | None, db: str | None) -> None:
    rows = _run(lambda: feed.export_alerts(since, until, db=db))
    click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
