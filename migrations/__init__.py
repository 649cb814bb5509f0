"""Alembic migrations of Orchestry's schema (run by `orchestry db upgrade` or `alembic upgrade head`)."""
