"""The ``runner_usage`` counters in SQL, in one home for both writers of an audit batch.

A batch's served fetches are added to the per-runner, per-minute counters in the batch's
own transaction (:meth:`vault.runners.usage.UsageCounter.hook`, row by row) or in the
one statement that appends it (:mod:`vault.audit.fastbatch`, from a JSON parameter).
Both add with the same upsert, so batches of several processes add up and never
overwrite each other.
"""

from __future__ import annotations

from datetime import datetime

__all__ = ["USAGE_ADD", "USAGE_INSERT", "minute_window"]

# Followed by the rows (VALUES or a SELECT), then USAGE_ADD.
USAGE_INSERT = 'INSERT INTO runner_usage (runner_id, "window", count)'
USAGE_ADD = (
    'ON CONFLICT (runner_id, "window") DO UPDATE SET count = runner_usage.count + excluded.count'
)


def minute_window(moment: datetime) -> int:
    """The ``window`` a moment counts in: whole minutes since the Unix epoch."""
    return int(moment.timestamp()) // 60
