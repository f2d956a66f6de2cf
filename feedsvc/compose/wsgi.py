"""gunicorn's entry point: `feedsvc.compose.wsgi:get_app()`, called in each worker after fork."""

from feedsvc.api.app import App
from feedsvc.compose.service import build_app
from feedsvc.core.config import Config


def get_app() -> App:
    return build_app(Config.from_env())
