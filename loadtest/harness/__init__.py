"""The servers that tests and benchmarks start, in one place and without pytest: gunicorn on the
repo's config, a private mariadbd, the Elasticsearch and Kafka stand-ins, nginx in front.

Benchmarks use them directly; tests wrap them in fixtures (tests/support/), where a server that
cannot start fails under CI=true and skips elsewhere. loadtest/ never imports tests/.
"""
