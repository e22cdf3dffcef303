"""Pictures for the Dagster UI: a device-day's score against its threshold with the alert spans, and which sensor
families the flagged points were blamed on. PNG bytes out (matplotlib, no display needed)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

SEVERITY_COLOURS = {"CRITICAL": "#d62728", "WARNING": "#ff7f0e", "INFO": "#1f77b4"}
LINE_POINTS = 2000  # the picture is 720 pixels wide: more points than this only cost drawing time


def _thinned(scores: pl.DataFrame) -> pl.DataFrame:
    """At most about LINE_POINTS rows: the largest score (and threshold) of each run of consecutive rows, so every
    spike stays visible."""
    step = -(-scores.height // LINE_POINTS)
    if step <= 1:
        return scores
    return scores.group_by(pl.int_range(pl.len()) // step, maintain_order=True).agg(
        pl.col("ts").first(), pl.col("score").max(), pl.col("threshold").max())


def device_day_png(scores: pl.DataFrame, explanations: pl.DataFrame, alerts: pl.DataFrame, title: str) -> bytes:
    """Two panels for one device and day: score vs threshold with alert spans; family shares of flagged points."""
    # Fixed margins (the figure size is fixed): a constrained layout cost a third of drawing the picture
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 4.8), height_ratios=[3, 1.4])
    fig.subplots_adjust(left=0.11, right=0.98, top=0.93, bottom=0.1, hspace=0.32)
    line = _thinned(scores)
    ts = line["ts"].to_numpy()  # datetime64, not Python datetimes: matplotlib converts these at C speed
    top.plot(ts, line["score"].to_numpy(), lw=0.7, color="#444", label="score")
    top.plot(ts, line["threshold"].to_numpy(), lw=1, ls="--", color="#d62728", label="threshold")
    flagged = scores.filter("is_anomaly")
    top.scatter(flagged["ts"].to_numpy(), flagged["score"].to_numpy(), s=6, color="#d62728", zorder=3,
                label="flagged")
    for start, end, severity in alerts.select("start_ts", "end_ts", "severity").iter_rows():
        top.axvspan(start, end, color=SEVERITY_COLOURS.get(severity, "#999"), alpha=0.18, lw=0)
    top.set_yscale("symlog", linthresh=1.0)
    top.set_ylabel("score")
    top.set_title(title, fontsize=10)
    top.legend(loc="upper left", fontsize=7, ncols=3)

    explained = explanations["family_pct"].drop_nulls()
    means = explained.struct.unnest().mean().row(0, named=True) if explained.len() else {}
    ordered = sorted(((k, v) for k, v in means.items() if v), key=lambda kv: kv[1])
    bottom.barh([k for k, _ in ordered], [v for _, v in ordered], color="#1f77b4")
    bottom.set_xlim(0, 100)
    bottom.set_xlabel(f"mean attribution of {explained.len()} flagged points (%)")
    bottom.tick_params(labelsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()
