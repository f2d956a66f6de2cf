"""Our gunicorn worker classes: meinheld and gthread with their supervision defects fixed."""
