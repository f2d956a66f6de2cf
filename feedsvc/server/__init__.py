"""The gunicorn side, a corner of its own: worker classes and the access log. Imports only
feedsvc.core (the settings); nothing in the layers imports it."""
