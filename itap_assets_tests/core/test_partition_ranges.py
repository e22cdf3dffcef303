from datetime import date

import pytest

from itap_assets.core.partition_ranges import rectangles

D = [date(2026, 1, d) for d in range(1, 8)]
ORDER = ["A", "B", "C", "D"]


def covered(rects, order=ORDER):
    out = set()
    for first_day, last_day, first_dev, last_dev in rects:
        devices = order[order.index(first_dev): order.index(last_dev) + 1]
        days = [d for d in D if first_day <= d <= last_day]
        out |= {(d, dev) for d in days for dev in devices}
    return out


def test_a_whole_fleet_with_the_same_days_is_one_rectangle():
    pairs = {(d, dev) for d in D[:3] for dev in ORDER}
    rects = rectangles(pairs, ORDER)
    assert rects == [(D[0], D[2], "A", "D")]


def test_gaps_in_days_split_into_runs_of_contiguous_days():
    pairs = {(D[0], "A"), (D[1], "A"), (D[4], "A")}
    assert rectangles(pairs, ORDER) == [(D[0], D[1], "A", "A"), (D[4], D[4], "A", "A")]


def test_devices_with_other_days_or_not_adjacent_get_their_own_rectangles():
    pairs = {(D[0], "A"), (D[0], "C"), (D[1], "B")}
    rects = rectangles(pairs, ORDER)
    assert covered(rects) == pairs
    assert len(rects) == 3


@pytest.mark.parametrize("seed", range(5))
def test_rectangles_cover_exactly_the_given_partitions(seed):
    import random

    rng = random.Random(seed)
    pairs = {(d, dev) for d in D for dev in ORDER if rng.random() < 0.5}
    assert covered(rectangles(pairs, ORDER)) == pairs


def test_unregistered_device_is_refused():
    with pytest.raises(ValueError, match="'Z' is not registered"):
        rectangles({(D[0], "Z")}, ORDER)
