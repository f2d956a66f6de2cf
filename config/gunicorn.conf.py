"""gunicorn settings for feedsvc: the process model, every value from a FEED_* variable."""

import sys

from feedsvc.config import Config, ConfigError
from feedsvc.database import init_db

try:
    _config = Config.from_env()
except ConfigError as error:
    sys.exit(f"feedsvc: {error}")

# --- The app -------------------------------------------------------------------------------
# A factory call, so the app and its pools are built in each worker, after fork.
wsgi_app = "feedsvc.wsgi:get_app()"

# --- Server socket -------------------------------------------------------------------------
# Address to listen on (FEED_BIND).
bind = [_config.bind]

# --- Worker processes ----------------------------------------------------------------------
# How many processes serve requests: the capacity knob (FEED_WORKERS).
workers = _config.workers

# --- Logging -------------------------------------------------------------------------------
# Error log verbosity (FEED_LOG_LEVEL).
loglevel = _config.log_level


# --- Server hooks --------------------------------------------------------------------------
def on_starting(server):
    """The embedded default needs no set-up step: create its schema before the first worker."""
    if _config.is_sqlite:
        init_db(_config)
