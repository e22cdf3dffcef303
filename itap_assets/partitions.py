"""The partitions every asset uses, named once: day (UTC), device (dynamic), and day × device."""


from collections.abc import Callable, Iterable
from datetime import date

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from itap_assets.settings import ID_PATTERN, load_settings

DAY = "day"
DEVICE = "device"

day_partitions = dg.DailyPartitionsDefinition(
    start_date=load_settings().start_date.isoformat(), timezone="UTC", fmt="%Y-%m-%d"
)
device_partitions = dg.DynamicPartitionsDefinition(name=DEVICE)
day_device_partitions = dg.MultiPartitionsDefinition({DAY: day_partitions, DEVICE: device_partitions})

# Day D of a device also reads day D-1 of the same device, so rolling and burst windows run across midnight.
with_previous_day = dg.MultiPartitionMapping(
    {
        DAY: dg.DimensionPartitionMapping(
            DAY,
            dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=0, allow_nonexistent_upstream_partitions=True),
        ),
        DEVICE: dg.DimensionPartitionMapping(DEVICE, dg.IdentityPartitionMapping()),
    }
)
# A device's model serves every day of that device.
device_of_day = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=DEVICE)


def split_key(key: str) -> tuple[date, str]:
    """`"2026-01-01|DEV-0001"` → (date, device id)."""
    keys = key.keys_by_dimension if isinstance(key, dg.MultiPartitionKey) else None
    if keys is None:
        day, _, device = key.partition("|")
    else:
        day, device = keys[DAY], keys[DEVICE]
    return date.fromisoformat(day), device


def day_device_pairs(partition_keys: list[str]) -> list[tuple[date, str]]:
    return sorted(split_key(k) for k in valid_keys(day_device_partitions, partition_keys))


def invalid_devices(devices: Iterable[str], log: Callable[[str], object] | None = None) -> list[str]:
    """The device keys that are not valid ITAP ids, reported through `log` (default: the Dagster logger's warning).
    Dagster accepts any text as a dynamic partition key, so a key added by hand through the UI or the API (`../x`,
    '', 'a b') may sit among the fleet's: runs leave it out, so it never fails a run over the others."""
    bad = [d for d in devices if not ID_PATTERN.fullmatch(d)]
    if bad:
        shown = ", ".join(repr(d) for d in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        (log or dg.get_dagster_logger().warning)(
            f"skipped device partition key(s) {shown}: not a valid ITAP device id (ids match {ID_PATTERN.pattern}); "
            f"delete them from the '{DEVICE}' partitions (UI: the asset's Partitions tab)")
    return bad


def valid_keys(partitions_def: dg.PartitionsDefinition, keys: Iterable[str],
               log: Callable[[str], object] | None = None) -> list[str]:
    """`keys` of `partitions_def` without those whose device is not a valid id (see `invalid_devices`); keys of a
    partitioning without devices are all kept."""
    keys = list(keys)
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        device_of = {k: split_key(k)[1] for k in keys}
    elif isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        device_of = {k: k for k in keys}
    else:
        return keys
    bad = set(invalid_devices(dict.fromkeys(device_of.values()), log))
    return [k for k in keys if device_of[k] not in bad]


def range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags for one run over the partition range first..last (a rectangle for day × device keys)."""
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


def day_device_key(day: date, device: str) -> str:
    return f"{day.isoformat()}|{device}"
