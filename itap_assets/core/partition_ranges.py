"""Group (day, device) partitions into as few rectangular ranges as possible, so that the runs that materialize
them are few (one run per rectangle: Dagster range runs cover start..end of each dimension).

Devices are ordered as the `device` dynamic partitions were registered; a rectangle covers a contiguous block of
that order and a contiguous range of days, and never a partition outside the given set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, timedelta


def day_runs(days: Iterable[date]) -> list[tuple[date, date]]:
    """Contiguous runs of days: [(first, last), ...]."""
    runs: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if runs and day == runs[-1][1] + timedelta(days=1):
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def rectangles(pairs: Iterable[tuple[date, str]], device_order: Sequence[str]) -> list[tuple[date, date, str, str]]:
    """(first_day, last_day, first_device, last_device) rectangles that exactly cover `pairs`.

    Consecutive devices (in registration order) with the same set of days share rectangles; each contiguous run
    of days becomes one rectangle. A fleet that gets the same new days for every device is one rectangle.
    """
    position = {device: i for i, device in enumerate(device_order)}
    days_of: dict[str, set[date]] = {}
    for day, device in pairs:
        if device not in position:
            raise ValueError(f"device {device!r} is not registered")
        days_of.setdefault(device, set()).add(day)
    out: list[tuple[date, date, str, str]] = []
    block: list[str] = []
    for device in sorted(days_of, key=position.__getitem__):
        contiguous = block and position[device] == position[block[-1]] + 1
        if contiguous and days_of[device] == days_of[block[0]]:
            block.append(device)
            continue
        if block:
            out += [(a, b, block[0], block[-1]) for a, b in day_runs(days_of[block[0]])]
        block = [device]
    if block:
        out += [(a, b, block[0], block[-1]) for a, b in day_runs(days_of[block[0]])]
    return out


def device_chunks(devices: Sequence[str], chunks: int) -> list[list[str]]:
    """`devices` (in registration order) cut into at most `chunks` contiguous blocks of near-equal size, so each
    block is one range run and blocks run side by side without writing the same partition."""
    n = max(1, min(chunks, len(devices)))
    size, extra = divmod(len(devices), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(list(devices[start:end]))
        start = end
    return [block for block in out if block]
