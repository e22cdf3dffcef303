"""Metadata helpers shared by the asset steps: what the Dagster UI shows on a materialization or a check."""

import polars as pl


def markdown_table(frame: pl.DataFrame, limit: int = 10) -> str:
    """A small markdown table (first `limit` rows) for the UI."""
    if frame.height == 0:
        return "_none_"
    shown = frame.head(limit)
    header = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * shown.width + "\n"
    rows = "\n".join("| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in shown.iter_rows())
    more = f"\n\n… {frame.height - limit} more" if frame.height > limit else ""
    return header + rows + more
