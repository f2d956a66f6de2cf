"""Search backends: embedded SQLite FTS5, MySQL FULLTEXT and Elasticsearch, one module each;
the rules they share are in feedsvc.core.search, the protocol in feedsvc.core.protocols."""
