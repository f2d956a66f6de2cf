"""Layer 1, database access: engines and their tuning, compiled statements, retries, tables and
migrations. Imports only feedsvc.core."""
