"""Locations of the data directory, object store and run database, read from the environment.

These are functions rather than module constants so a changed environment (tests, CLI
flags exported as env vars) takes effect without re-importing.
"""

import os
from pathlib import Path

HOME_ENV = "PIXELWIZARD_HOME"
STORE_URL_ENV = "PIXELWIZARD_STORE_URL"
DATABASE_URL_ENV = "PIXELWIZARD_DATABASE_URL"


def home_dir() -> Path:
    """The project's data directory: ``$PIXELWIZARD_HOME`` or ``~/.pixelwizard``."""
    return Path(os.environ.get(HOME_ENV) or "~/.pixelwizard").expanduser().resolve()


def default_store_path() -> Path:
    """The embedded local object store directory, ``<home>/store``."""
    return home_dir() / "store"


def default_database_url() -> str:
    """The embedded SQLite database URL, ``sqlite:///<home>/pixelwizard.db``."""
    return f"sqlite:///{home_dir() / 'pixelwizard.db'}"


def store_url() -> str:
    """``$PIXELWIZARD_STORE_URL`` (a path, ``file://`` or ``s3://`` URL) or the embedded default."""
    return os.environ.get(STORE_URL_ENV) or str(default_store_path())


def database_url() -> str:
    """``$PIXELWIZARD_DATABASE_URL`` (a SQLAlchemy URL) or the embedded SQLite default."""
    return os.environ.get(DATABASE_URL_ENV) or default_database_url()
