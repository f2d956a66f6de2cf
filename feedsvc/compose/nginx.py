"""The nginx front proxy's config: config/nginx/feedsvc.conf filled in from this host's Config."""

import re

from feedsvc.core.config import Config

# Requests one client address may have in progress at once before nginx answers 429.
DEFAULT_CONNECTIONS_PER_CLIENT = 64
# nginx drops a pooled upstream connection this long before gunicorn's keep-alive would close it,
# so no request is ever sent down a connection gunicorn is closing.
UPSTREAM_IDLE_MARGIN_MS = 500
# nginx waits this much longer than FEED_TIMEOUT, so gunicorn's own worker timeout acts first.
UPSTREAM_READ_MARGIN_S = 5
_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")
# What nginx's listen and server directives take: unix:/path or host:port, nothing that could end
# the directive or open a block.
_ADDRESS = re.compile(r"unix:/[^\s;{}'\"]+|[^\s;{}'\"/]+:[0-9]{1,5}")
_PATH = re.compile(r"/[^\s;{}'\"*]+")


class NginxConfigError(ValueError):
    """A value that cannot go into the nginx config."""


def address(name: str, value: str) -> str:
    """A gunicorn-style address (host:port, [v6]:port, unix:/path) that nginx reads the same way."""
    if not _ADDRESS.fullmatch(value):
        raise NginxConfigError(f"{name} must be host:port or unix:/path for nginx, not {value!r}")
    return value


def render(
    template: str,
    config: Config,
    *,
    upstream: str,
    access_log: str,
    extra_dir: str,
    connections_per_client: int = DEFAULT_CONNECTIONS_PER_CLIENT,
) -> str:
    """The template with every @NAME@ replaced; an unknown or unused placeholder is an error."""
    if not _PATH.fullmatch(extra_dir):
        raise NginxConfigError(f"the extra directory must be an absolute path, not {extra_dir!r}")
    if not (_PATH.fullmatch(access_log) or access_log == "off"):
        raise NginxConfigError(
            f"the access log must be an absolute path or off, not {access_log!r}"
        )
    if connections_per_client < 1:
        raise NginxConfigError("the connections per client must be at least 1")
    values = {
        "LISTEN": address("FEED_BIND", config.bind),
        "UPSTREAM": address("the upstream", upstream),
        "UPSTREAM_IDLE_MS": str(config.keepalive_s * 1000 - UPSTREAM_IDLE_MARGIN_MS),
        "UPSTREAM_READ_TIMEOUT_S": str(config.timeout_s + UPSTREAM_READ_MARGIN_S),
        "MAX_BODY_BYTES": str(config.max_body_bytes),
        "CONNECTIONS_PER_CLIENT": str(connections_per_client),
        "ACCESS_LOG": access_log,
        "EXTRA_DIR": extra_dir,
    }
    unknown = set(_PLACEHOLDER.findall(template)) - set(values)
    unused = set(values) - set(_PLACEHOLDER.findall(template))
    if unknown or unused:
        raise NginxConfigError(
            f"template placeholders: unknown {unknown or '{}'}, unused {unused or '{}'}"
        )
    return _PLACEHOLDER.sub(lambda match: values[match[1]], template)
