"""Alembic's environment: migrations run only on the connection feedsvc.db.migrations passes in."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("migrations run through `feedsvc init-db`, which passes the connection")
context.configure(connection=connection)
with context.begin_transaction():
    context.run_migrations()
