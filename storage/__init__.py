"""Object storage, the latent/video cache and the run-tracking database of PixelWizard.

Import-light on purpose: only the store interface and exceptions are re-exported here.
boto3 (``storage.s3_store``), SQLAlchemy (``storage.database``, ``storage.models``,
``storage.jobs``) and torch (inside ``storage.latent_cache`` methods) load only when used.
"""

from storage.errors import (
    CorruptObjectError,
    DatabaseError,
    DatabaseUnavailableError,
    IllegalTransitionError,
    ObjectExistsError,
    ObjectNotFoundError,
    SchemaRevisionError,
    StaleJobError,
    StorageError,
    StoreConfigError,
    ValueTooLongError,
)
from storage.object_store import ObjectStore, StoredObject, open_store

__all__ = [
    "CorruptObjectError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "IllegalTransitionError",
    "ObjectExistsError",
    "ObjectNotFoundError",
    "ObjectStore",
    "SchemaRevisionError",
    "StaleJobError",
    "StorageError",
    "StoreConfigError",
    "StoredObject",
    "ValueTooLongError",
    "open_store",
]
