"""Alembic migrations of deskbridge's store (run them with `deskbridge db upgrade`)."""
