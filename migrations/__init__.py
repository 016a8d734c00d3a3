"""Alembic migrations of the run database; ``storage.migrate`` locates them through this package."""
