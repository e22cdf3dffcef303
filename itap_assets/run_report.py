"""What a finished run says to the person who launched it from the command line, read from its event log: the
checks and steps that failed it (check, partitions, numbers), and the partitions a data-quality check excluded
from downstream steps while the rest of the run went on. The UI (`make ui`) holds the full record."""

from __future__ import annotations

import dagster as dg

EXCLUDED_KEY = "partitions_excluded"  # check metadata: how many partitions were kept out of downstream steps


def _checks(result: dg.ExecutionResult) -> list[dg.AssetCheckEvaluation]:
    return [e for e in result.get_asset_check_evaluations() if not e.passed]


def _name(evaluation: dg.AssetCheckEvaluation) -> str:
    return f"check {evaluation.asset_key.to_user_string()}:{evaluation.check_name}"


def _innermost_error(event: dg.DagsterEvent):
    """The user's exception of a failed step, not Dagster's wrapper around it."""
    error = event.step_failure_data.error
    while error.cause is not None:
        error = error.cause
    return error


def _first_line(error) -> str:
    """The error's first line without its `module.Class: ` prefix."""
    text = error.message.strip() or error.cls_name or "error"
    head, _, rest = text.partition(": ")
    return (rest if rest and error.cls_name and head.endswith(error.cls_name) else text).splitlines()[0]


def run_problems(result: dg.ExecutionResult) -> list[str]:
    """One line per check that failed with severity ERROR and per failed step (a step failed by its blocking
    check is that check's line)."""
    lines = [f"{_name(e)} failed: {e.description or 'see its metadata'}"
             for e in _checks(result) if e.severity == dg.AssetCheckSeverity.ERROR]
    errors = [(event.step_key, _innermost_error(event)) for event in result.get_step_failure_events()]
    lines += [f"step {step} failed: {_first_line(error)}" for step, error in errors
              if error.cls_name != "DagsterAssetCheckFailedError"]
    return lines


def run_notes(result: dg.ExecutionResult) -> list[str]:
    """One line per failed check that excluded partitions and let the rest of the run go on."""
    return [f"{_name(e)}: {e.description}" for e in _checks(result)
            if e.severity == dg.AssetCheckSeverity.WARN and (e.metadata.get(EXCLUDED_KEY) or dg.IntMetadataValue(0))
            .value]


def failure_message(job_name: str, result: dg.ExecutionResult) -> str:
    """`run of telemetry_job failed (run 1a2b3c4d): check validated:…: 1 of 1 partition(s) …; see `make ui``."""
    problems = "; ".join(run_problems(result)) or "no failed check or step in its event log"
    return f"run of {job_name} failed (run {result.run_id[:8]}): {problems}; see `make ui`"
