"""Exceptions raised by the storage package.

Every message is a single line so command-line callers can print ``str(err)`` as-is.
"""


class StorageError(Exception):
    """Base class for object-store failures (I/O, network, configuration)."""


class StoreUnreachableError(StorageError):
    """The store did not answer: connection refused, dropped or timed out, after the client's own retries. Worth
    waiting for, unlike an error the store answered with."""


class StoreConfigError(StorageError):
    """The store URL is malformed or points at something unusable (bad scheme, missing bucket)."""


class ObjectNotFoundError(StorageError):
    """The requested key does not exist in the store."""


class ObjectExistsError(StorageError):
    """A create-only write found a different object already stored under the key."""


class CorruptObjectError(StorageError):
    """A stored object failed its SHA-256/size check or has no checksum record."""


class DatabaseError(Exception):
    """Base class for run-database failures raised by this package."""


class DatabaseUnavailableError(DatabaseError):
    """The database URL cannot be reached or opened; ``str()`` is one line naming the URL."""


class SchemaRevisionError(DatabaseError):
    """The database is at, or was asked to move to, a schema revision these migrations do not have."""


class ValueTooLongError(DatabaseError):
    """A value is longer than its database column allows; checked before writing, on every backend."""


class IllegalTransitionError(DatabaseError):
    """A job status change that the transition table does not allow."""


class StaleJobError(DatabaseError):
    """A conditional update found the job in another state or leased by another worker."""
