"""The partitions every asset uses, named once: day (UTC), device (dynamic), and day × device."""


from datetime import date

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from itap_assets.settings import load_settings

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
    return sorted(split_key(k) for k in partition_keys)


def range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags for one run over the partition range first..last (a rectangle for day × device keys)."""
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


def day_device_key(day: date, device: str) -> str:
    return f"{day.isoformat()}|{device}"
