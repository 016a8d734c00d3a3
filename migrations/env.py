"""Alembic environment for the run database described by ``storage.models``.

``storage.migrate`` passes an open connection in ``config.attributes["connection"]``. The
``alembic`` CLI (run from the repository root with ``alembic.ini``) instead connects to
``-x url=...``, else ``sqlalchemy.url`` from the ini, else ``$PIXELWIZARD_DATABASE_URL``
(or the embedded SQLite default). SQLite uses batch mode so ALTERs work there.
"""

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, text

from storage import settings
from storage.models import Base

# Arbitrary constant key for pg_advisory_xact_lock: concurrent upgraders run one at a time.
MIGRATION_LOCK_KEY = 0x5049584D49475241

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or settings.database_url()
    )


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit the migration SQL for ``alembic upgrade --sql`` instead of executing it."""
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate over the connection given by ``storage.migrate``, or one opened from the URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from storage.migrate import migration_engine

    engine = migration_engine(_url())
    try:
        with engine.connect() as opened:
            _run(opened)
    finally:
        engine.dispose()


if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
