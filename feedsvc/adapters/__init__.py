"""Layer 2, adapters to what lies outside the process: the store, the outbox, the search
backends, Kafka, idempotency keys and the Prometheus files. Imports only feedsvc.db and below."""
