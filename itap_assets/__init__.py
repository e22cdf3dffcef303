"""ITAP: the Industrial Telemetry Analytics Platform, as Dagster assets on DuckDB."""

import warnings

import dagster as dg

# Multi-dimensional partition mappings, single-run backfills and partitioned checks are the design (DESIGN.md);
# their beta/preview labels are noise in every CLI call.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
