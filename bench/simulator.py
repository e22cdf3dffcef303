"""Fleet simulator generation speed: rows per second for the `large` preset (100 devices × 1 day at 1 Hz).

    python bench/simulator.py [--devices 100] [--repeat 3]

Prints the best of `--repeat` runs and a final parseable line:
    bench simulator: rows=8640000 wall_s=… rows_per_s=…
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from itap_assets.core.simulator import simulate_fleet  # noqa: E402
from itap_assets.settings import SimulationSettings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sim = SimulationSettings(devices=args.devices, days=1, sample_interval_s=1, healthy_days=0)
    best, rows = float("inf"), 0
    for _ in range(args.repeat):
        started = time.perf_counter()
        rows = simulate_fleet(sim).height
        best = min(best, time.perf_counter() - started)
    print(f"bench simulator: rows={rows} wall_s={best:.2f} rows_per_s={rows / best:.0f}")


if __name__ == "__main__":
    main()
