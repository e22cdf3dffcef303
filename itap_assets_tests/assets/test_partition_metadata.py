"""A device-day's materialization in the UI describes that device-day: its own row, flagged and alert counts, not
the whole run's."""

import dagster as dg

from itap_assets_tests.conftest import run_graph

FLEET = {"simulation": {"devices": 2, "days": 3, "sample_interval_s": 60, "healthy_days": 1, "fault_rate": 3.0}}
DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]


def latest_metadata(p, asset: str) -> dict[str, dict]:
    records = p.instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
    out = {}
    for record in records:  # newest first
        event = record.asset_materialization
        out.setdefault(event.partition, {k: v.value for k, v in event.metadata.items()})
    return out


def test_each_partition_shows_its_own_figures(make_pipeline):
    p = make_pipeline(FLEET)
    run_graph(p, ["DEV-0001", "DEV-0002"], DAYS, until="scoring_job")
    counts = {
        "raw_telemetry": "SELECT day, device_id, count(*) FROM itap.raw_telemetry GROUP BY ALL",
        "validated": "SELECT day, device_id, count(*) FROM itap.validated GROUP BY ALL",
        "features": "SELECT day, device_id, count(*), count(*) FILTER (warmup) FROM itap.features GROUP BY ALL",
        "scores": "SELECT day, device_id, count(*), sum(is_anomaly::INT) FROM itap.scores GROUP BY ALL",
        "alerts": "SELECT day, device_id, count(*), count(*) FILTER (severity = 'CRITICAL' AND suppressed_by IS NULL) "
                  "FROM itap.alerts GROUP BY ALL",
    }
    names = {"raw_telemetry": ["dagster/row_count"], "validated": ["dagster/row_count"],
             "features": ["dagster/row_count", "warmup_rows"], "scores": ["dagster/row_count", "flagged"],
             "alerts": ["dagster/row_count", "critical"]}
    for asset, query in counts.items():
        meta = latest_metadata(p, asset)
        assert len(meta) == 6
        expected = {f"{day}|{dev}": list(rest) for day, dev, *rest in p.sql(query).rows()}
        for key, figures in meta.items():
            assert [figures[n] for n in names[asset]] == expected.get(key, [0] * len(names[asset])), (asset, key)
    run_totals = p.sql("SELECT count(*) FROM itap.alerts").rows()[0][0]
    assert run_totals > max(m["alerts"] for m in latest_metadata(p, "alerts").values())  # not the run's total
