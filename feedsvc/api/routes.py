"""The API's URI templates: the app routes by them, and the middleware counts by them."""

from feedsvc.api.resources.request import ID_CONVERTER

PARTICIPANTS = "/participant"
PARTICIPANT = f"/participant/{{participant_id:{ID_CONVERTER}}}"
FRIENDS = f"{PARTICIPANT}/friends"
OUTBOUND = f"{PARTICIPANT}/outbound"
INBOUND = f"{PARTICIPANT}/inbound"
SEARCH = "/outbound"
OPENAPI = "/openapi.json"
HEALTH = "/health"
READY = "/ready"
METRICS = "/metrics"
