"""Layer 5, composition: a service wired from settings (`build_service`), the WSGI entry point,
schema set-up, reindexing and the `feedsvc` command. May import every layer below."""
