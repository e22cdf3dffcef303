"""End to end, as an operator sees it: `make demo` into a fresh instance, `dagster-webserver` on 127.0.0.1, and the
asset catalog, the lineage graph, the alerts asset (latest materialization, partitions) and the validated asset's
checks rendered by headless Chromium. Every page is saved as a screenshot under the test's tmp dir.

Needs /usr/bin/chromium and /usr/bin/chromedriver (`.ci/install_browser.sh`); without them the tests fail, they are
never skipped. Fixtures are in conftest.py next to this file. Run only these tests with `pytest -m ui`, or leave them
out with `pytest -m "not ui"`.
"""

from __future__ import annotations

import json
import re
import struct
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode

import dagster as dg
import duckdb
import pytest

from itap_assets.core.simulator import device_ids, simulated_days
from itap_assets.settings import load_settings
from itap_assets_tests.ui import conftest as ui
from itap_assets_tests.ui.conftest import LOOPBACK, Browser, Demo, Webserver, is_loopback, listening_addresses

pytestmark = pytest.mark.ui

PIPELINE = ["raw_telemetry", "validated", "features", "model", "scores", "explanations", "alerts"]
BLOCKING_CHECKS = ["structure_and_quarantine_share", "rows_accounted_for", "telemetry_contract"]
ALL_CHECKS = [*BLOCKING_CHECKS, "missing_rate", "range_violations"]
MIN_SCREENSHOT_BYTES = 20_000  # a blank 1600-pixel-wide page compresses to a few kB


def page(webserver: Webserver, path: str, **query: str) -> str:
    return f"{webserver.url}{path}" + (f"?{urlencode(query, quote_via=quote)}" if query else "")


def screenshot(browser: Browser, name: str, settle_s: float = 1.0) -> Path:
    """Let layout and transitions settle, then save the viewport and check it is a real, non-empty PNG."""
    time.sleep(settle_s)
    path = browser.screenshot(f"{name}.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 1200 and height >= 600, f"{path} is only {width}x{height}"
    assert len(data) > MIN_SCREENSHOT_BYTES, f"{path} is only {len(data)} bytes: a blank page?"
    return path


def metadata_values(browser: Browser) -> dict[str, str]:
    """A metadata table as key -> value (first cell -> last non-empty cell of each row)."""
    values = {}
    for cells in browser.table_rows():
        filled = [c for c in cells if c]
        if len(filled) >= 2:
            values[filled[0]] = filled[-1]
    return values


def fleet(demo: Demo) -> tuple[list[str], list[str]]:
    sim = load_settings(demo.config_path).simulation
    return device_ids(sim), [d.isoformat() for d in simulated_days(sim)]


def test_headless_browser_is_installed() -> None:
    """A plain failure (not a skip) on a machine without the browser; the other tests then error in setup."""
    for binary in (ui.CHROMIUM, ui.CHROMEDRIVER):
        assert binary.exists(), f"{binary} is missing: {ui.INSTALL_HINT}"


def test_webserver_listens_on_loopback_only(webserver: Webserver) -> None:
    listening = listening_addresses(webserver.proc.pid)
    assert any(port == webserver.port for _, _, port in listening), (
        f"no socket of the webserver's process group listens on port {webserver.port}: {listening}"
    )
    exposed = [(pid, ip, port) for pid, ip, port in listening if not is_loopback(ip)]
    assert not exposed, f"the webserver (or its code server) listens beyond loopback: {exposed}"
    assert webserver.url.startswith(f"http://{LOOPBACK}:")


def test_catalog_lists_the_pipeline_assets(browser: Browser, webserver: Webserver) -> None:
    browser.get(page(webserver, "/assets"))
    # "- partitions" is the catalog's placeholder while materialization status loads.
    text = browser.wait_for_text("Asset name", *PIPELINE, absent=("Loading...", "- partitions"), name="catalog")
    for asset in PIPELINE:
        assert re.search(rf"^{asset}$", text, re.M), f"catalog has no row for {asset}"
    screenshot(browser, "catalog")


def test_lineage_graph_shows_the_chain_to_alerts(browser: Browser, webserver: Webserver) -> None:
    browser.get(page(webserver, "/assets/alerts", view="lineage", lineageScope="upstream", lineageDepth="10"))
    text = browser.wait_for_text("Upstream", *PIPELINE, name="lineage")
    for group in ("ingest", "model", "detect", "report"):
        assert re.search(rf"^{group}$", text, re.M), f"asset group {group} not drawn in the graph"
    screenshot(browser, "lineage", settle_s=2.0)  # the graph animates its fit-to-view


def test_alerts_latest_materialization_metadata(browser: Browser, webserver: Webserver, demo: Demo) -> None:
    devices, days = fleet(demo)
    browser.get(page(webserver, "/assets/alerts"))
    browser.wait_for_text("Latest materialization", "Metadata", "partitions_written", name="alerts_overview")
    meta = metadata_values(browser)
    with dg.DagsterInstance.from_config(demo.env["DAGSTER_HOME"]) as instance:
        [record] = instance.fetch_materializations(dg.AssetKey("alerts"), limit=1).records
    day, device = record.asset_materialization.partition.split("|")
    with duckdb.connect(str(demo.db_path), read_only=True) as con:
        total, active, critical = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE suppressed_by IS NULL),"
            " count(*) FILTER (WHERE suppressed_by IS NULL AND severity = 'CRITICAL') FROM main.alerts"
            " WHERE day = ? AND device_id = ?", [day, device]).fetchone()
    # What the UI reports for the latest partition is that device-day's, as the warehouse holds it (not the run's).
    assert meta.get("alerts") == str(total), meta
    assert meta.get("active") == str(active), meta
    assert meta.get("critical") == str(critical), meta
    assert meta.get("partitions_written") == str(len(devices) * len(days)), meta
    assert meta.get("table", "").endswith(".alerts"), meta
    assert "feed" in meta, meta
    screenshot(browser, "alerts_overview")


def test_alerts_partitions_are_materialized(browser: Browser, webserver: Webserver, demo: Demo) -> None:
    devices, days = fleet(demo)
    materialized = len(devices) * len(days)
    browser.get(page(webserver, "/assets/alerts", view="partitions"))
    text = browser.wait_for_text(f"Materialized ({materialized})", "Failed (0)", *devices, name="alerts_partitions")
    assert "Materializing (0)" in text
    screenshot(browser, "alerts_partitions")

    # One day × device partition, as an operator opens it from the partition list.
    key = f"{days[-1]}|{devices[0]}"
    browser.get(page(webserver, "/assets/alerts", view="partitions", partition=key))
    text = browser.wait_for_text(key, "Latest materialization", "partitions_written", name="alerts_partition")
    assert re.search(rf"^{re.escape(key)}\n+Materialized$", text, re.M), f"partition {key} not shown materialized"
    meta = metadata_values(browser)
    assert meta.get("partitions_written") == str(materialized), meta
    screenshot(browser, "alerts_partition")


@pytest.mark.parametrize("check", BLOCKING_CHECKS)
def test_validated_check_passed(browser: Browser, webserver: Webserver, demo: Demo, check: str) -> None:
    browser.get(page(webserver, "/assets/validated", view="checks", checkDetail=check))
    text = browser.wait_for_text(f"Checks ({len(ALL_CHECKS)})", *ALL_CHECKS, "Evaluation result",
                                 "This is a blocking asset check.", name=f"check_{check}")
    result = re.search(r"Evaluation result\s+(\S+)", text)
    assert result and result.group(1) == "Passed", f"{check}: {result and result.group(0)!r}\n{text[:2000]}"
    # The selected check's detail panel is the one shown (its name heads it, above Execute).
    assert re.search(rf"^{check}\nExecute$", text, re.M), f"detail panel is not {check}'s"
    # None of the blocking checks is listed as failed on the left.
    for name in BLOCKING_CHECKS:
        assert not re.search(rf"^{name}\n{name}\n(Failed|Execution failed)$", text, re.M), text[:2000]
    if check == "rows_accounted_for":
        meta = {k: v for k, v in re.findall(r"^(raw_rows|validated_rows|quarantined_rows)\n(\d+)$", text, re.M)}
        with duckdb.connect(str(demo.db_path), read_only=True) as con:
            raw = con.execute("SELECT count(*) FROM main.raw_telemetry").fetchone()[0]
        assert meta.get("raw_rows") == str(raw), meta
        assert int(meta["validated_rows"]) + int(meta["quarantined_rows"]) == raw, meta
    screenshot(browser, f"check_{check}")


def test_validated_checks_list_shows_succeeded(browser: Browser, webserver: Webserver) -> None:
    browser.get(page(webserver, "/assets/validated", view="checks"))
    text = browser.wait_for_text(*ALL_CHECKS, "Evaluation result", name="checks_list")
    screenshot(browser, "checks_list")
    statuses = dict(re.findall(rf"^({'|'.join(ALL_CHECKS)})\n\1\n(.+)$", text, re.M))
    assert set(statuses) == set(ALL_CHECKS), text[:2000]
    assert all(statuses[c] == "Succeeded" for c in BLOCKING_CHECKS), statuses


def graphql(webserver: Webserver, query: str) -> dict:
    request = urllib.request.Request(f"{webserver.url}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    assert request.full_url.startswith(f"http://{LOOPBACK}:")
    with ui._OPENER.open(request, timeout=30) as response:
        return json.loads(response.read())["data"]


def test_the_demos_runs_are_listed_under_their_jobs_and_on_the_timeline(webserver: Webserver, demo: Demo) -> None:
    """The job pages filter runs by code location and the timeline groups them by it: a run without the
    workspace's origin appears in neither ("No runs found")."""
    for job in ("telemetry_job", "training_job", "scoring_job", "evaluation_job"):
        data = graphql(webserver, '{ pipelineOrError(params: {pipelineName: "%s", repositoryName: "__repository__", '
                                  'repositoryLocationName: "itap"}) { ... on Pipeline { runs { status } } } }' % job)
        statuses = [r["status"] for r in data["pipelineOrError"]["runs"]]
        assert statuses and set(statuses) == {"SUCCESS"}, (job, statuses)
    runs = graphql(webserver, "{ runsOrError { ... on Runs { results { pipelineName repositoryOrigin { "
                              "repositoryLocationName repositoryName } } } } }")["runsOrError"]["results"]
    assert runs and all(r["repositoryOrigin"] == {"repositoryLocationName": "itap", "repositoryName": "__repository__"}
                        for r in runs), runs
