"""SIGTERM and SIGINT stop a run that waits for a pool slot.

Inside `dagster.execute_job` Dagster takes over both signals and only records them; the in-process executor acts on
the record when a step's code next starts. A run waiting for a slot in `itap_duckdb` starts no step, so it would
ignore the signal and spin forever. While a run executes in this process a watcher thread looks at that record: when
it has stood unanswered for `GRACE_S` (no step picked it up), the run is waiting, so the watcher marks this
process's runs canceled, frees their slots and ends the process. A signal that arrives during a step still
interrupts that step as Dagster does (the step fails, the run fails).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from dagster._utils.interrupts import check_captured_interrupt  # the record Dagster keeps of a signal

from itap_assets.run_recovery import free_slots, own_runs

GRACE_S = 2.0
POLL_S = 0.2
EXIT_CODE = 130  # the shell's code for a process stopped by SIGINT


def cancel_own_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark canceled the unfinished runs this process launched and free their pool slots."""
    canceled = []
    for run in own_runs(instance):
        instance.report_run_canceled(run, f"Canceled: process {os.getpid()} received SIGTERM or SIGINT while "
                                          "the run waited for a pool slot; its slots are freed.")
        free_slots(instance, run.run_id)
        canceled.append(run.run_id)
    return canceled


def _watch(instance: dg.DagsterInstance, stop: threading.Event, console: int) -> None:
    since = None
    while not stop.wait(POLL_S):
        if not check_captured_interrupt():
            since = None
            continue
        since = since or time.monotonic()
        if time.monotonic() - since >= GRACE_S:
            try:
                for run_id in cancel_own_runs(instance):
                    os.write(console, f"stopped: run {run_id} canceled while it waited for a pool slot\n".encode())
            finally:  # even if the instance could not be updated: the next launch then cleans the dead run
                os._exit(EXIT_CODE)  # the main thread is inside Dagster's wait loop, which never returns


@contextmanager
def stop_waiting_runs_on_signal(instance: dg.DagsterInstance) -> Iterator[None]:
    """Around `dagster.execute_job` in this process's main thread: a signal while the run waits ends it."""
    stop = threading.Event()
    console = os.dup(sys.stderr.fileno())  # during the run Dagster sends fds 1 and 2 to its compute log files
    watcher = threading.Thread(target=_watch, args=(instance, stop, console), name="itap-signal-watcher",
                               daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        os.close(console)
