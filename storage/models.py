"""SQLAlchemy 2 ORM models of the run-tracking database: batches, jobs, attempts, artifacts.

The schema is created only by the Alembic migrations in ``migrations/``; ``tests/test_migrations.py``
checks that these models and the migrated schema do not drift. Enum columns are VARCHAR with a
named CHECK constraint (portable to SQLite), and datetimes are timezone-aware UTC everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from storage.enums import (
    ArtifactKind,
    AttemptOutcome,
    BatchStatus,
    JobStatus,
    is_allowed_transition,
)
from storage.errors import IllegalTransitionError

__all__ = ["Artifact", "ArtifactKind", "Attempt", "AttemptOutcome", "Base", "Batch", "BatchStatus", "Job", "JobStatus"]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite, which has no zone, stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the run database; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def _enum(enum_class: type, name: str) -> Enum:
    return Enum(enum_class, name=name, native_enum=False, create_constraint=True, length=32)


class Base(DeclarativeBase):
    """Declarative base carrying the constraint naming convention used by the migrations."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Batch(Base):
    """One submitted prompt file or URL rendered with one preset; counts are refreshed from its jobs.

    ``idempotency_key`` (optional, unique) lets a resubmission of the same input find its batch.
    """

    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(Text)
    preset: Mapped[str] = mapped_column(String(100))
    status: Mapped[BatchStatus] = mapped_column(_enum(BatchStatus, "batch_status"), default=BatchStatus.pending)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    jobs_total: Mapped[int] = mapped_column(Integer, default=0)
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
    jobs_failed: Mapped[int] = mapped_column(Integer, default=0)
    jobs_cancelled: Mapped[int] = mapped_column(Integer, default=0)

    jobs: Mapped[list[Job]] = relationship(back_populates="batch", passive_deletes=True)


class Job(Base):
    """One prompt+seed render moving through the pipeline statuses under a worker's lease."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("batch_id", "idempotency_key"),
        Index("ix_jobs_batch_id_status", "batch_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    prompt_id: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    seed: Mapped[int] = mapped_column(BigInteger)
    preset: Mapped[str] = mapped_column(String(100))
    model_revision: Mapped[str] = mapped_column(String(200))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    idempotency_key: Mapped[str] = mapped_column(String(64))
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"), default=JobStatus.pending)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    batch: Mapped[Batch] = relationship(back_populates="jobs")
    attempts: Mapped[list[Attempt]] = relationship(back_populates="job", passive_deletes=True)
    artifacts: Mapped[list[Artifact]] = relationship(back_populates="job", passive_deletes=True)

    @validates("status")
    def _check_status(self, _key: str, new: JobStatus | str) -> JobStatus:
        """Refuse status assignments outside the transition table (new jobs start as pending)."""
        new = JobStatus(new)
        old = self.status
        allowed = new is JobStatus.pending if old is None else is_allowed_transition(old, new)
        if not allowed:
            raise IllegalTransitionError(f"job {self.id}: {old} -> {new} is not an allowed status transition")
        return new


class Attempt(Base):
    """One worker's try at one stage (a working status) of a job."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    stage: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "attempt_stage"))
    worker: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[AttemptOutcome] = mapped_column(
        _enum(AttemptOutcome, "attempt_outcome"), default=AttemptOutcome.running
    )
    error: Mapped[str | None] = mapped_column(Text)
    # None for a try closed by anyone but its worker (a lost lease, a cancel, a close after an outage): when it
    # really stopped was not seen, and the stage times of `flows.summary` add up succeeded tries only.
    duration_seconds: Mapped[float | None] = mapped_column(Float)

    job: Mapped[Job] = relationship(back_populates="attempts")


class Artifact(Base):
    """A stored output of a job (one per kind): where it lives, its size and SHA-256."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[ArtifactKind] = mapped_column(_enum(ArtifactKind, "artifact_kind"))
    uri: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="artifacts")
