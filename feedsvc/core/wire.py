"""How feed values are written for other systems: participant links and the timestamp format,
the same in HTTP bodies, post events and the Elasticsearch documents."""

from datetime import datetime

LINK_PREFIX = "/participant/"


def participant_link(participant_id: int) -> str:
    return f"{LINK_PREFIX}{participant_id}"


def timestamp_text(moment: datetime) -> str:
    """UTC, ISO 8601, milliseconds and Z: the timestamp format of the contract."""
    return moment.isoformat(timespec="milliseconds") + "Z"
