"""Alembic's migration environment and revisions for the store's schema (see docs/database.md)."""
