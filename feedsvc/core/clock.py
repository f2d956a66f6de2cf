"""The one clock of stored timestamps: UTC, to the millisecond the API shows."""

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now in UTC, to the millisecond that the API shows, as the naive value the store keeps."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
