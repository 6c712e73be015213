"""Alembic environment: migrates the connection that `integrations.migrate` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from integrations.store import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `deskbridge db upgrade`, which hands a connection")
    _run(connection)


main()
