"""Per-process resources that flows share: the model (loaded once), the store, the database."""

from __future__ import annotations

import math
import os
import socket
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

LEASE_SECONDS_ENV = "PIXELWIZARD_LEASE_SECONDS"
MAX_ATTEMPTS_ENV = "PIXELWIZARD_MAX_ATTEMPTS"
OUTAGE_SECONDS_ENV = "PIXELWIZARD_OUTAGE_SECONDS"


@dataclass(frozen=True)
class WorkerSettings:
    """How long a lease lasts, how often it is renewed, how many tries a stage gets, and how long a worker waits for
    a database or object store that went away before it gives up."""

    lease_seconds: float
    max_attempts: int
    outage_seconds: float = 600.0
    poll_seconds: float = 1.0

    @property
    def heartbeat_seconds(self) -> float:
        return max(0.2, self.lease_seconds / 4)


def worker_settings() -> WorkerSettings:
    """Settings from ``$PIXELWIZARD_LEASE_SECONDS`` (default 120), ``$PIXELWIZARD_MAX_ATTEMPTS`` (3) and
    ``$PIXELWIZARD_OUTAGE_SECONDS`` (600); a ValueError naming the variable for a value that is not a number of
    seconds (> 0 for the lease, >= 0 for the outage) or a whole number >= 1."""
    lease = _seconds(LEASE_SECONDS_ENV, "120", minimum_excluded=True)
    outage = _seconds(OUTAGE_SECONDS_ENV, "600", minimum_excluded=False)
    raw_attempts = os.environ.get(MAX_ATTEMPTS_ENV, "3")
    if not (raw_attempts.strip().isdigit() and int(raw_attempts) >= 1):
        raise ValueError(f"{MAX_ATTEMPTS_ENV}={raw_attempts!r}: expected a whole number >= 1")
    return WorkerSettings(lease_seconds=lease, max_attempts=int(raw_attempts), outage_seconds=outage)


def _seconds(name: str, default: str, *, minimum_excluded: bool) -> float:
    """The finite number of seconds in ``$name`` (> 0, or >= 0 unless ``minimum_excluded``)."""
    raw = os.environ.get(name, default)
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and (value > 0 if minimum_excluded else value >= 0)):
        raise ValueError(f"{name}={raw!r}: expected a number of seconds {'>' if minimum_excluded else '>='} 0")
    return value


def _this_host() -> str:
    """The host name, with the PID namespace on Linux: containers sharing a host name have separate process ids."""
    try:
        return f"{socket.gethostname()}/{os.readlink('/proc/self/ns/pid').removeprefix('pid:')}"
    except OSError:
        return socket.gethostname()


def worker_name(label: str) -> str:
    """A worker id unique across hosts, processes and threads: host:pid:thread:label (host as ``_this_host``)."""
    return f"{_this_host()}:{os.getpid()}:{threading.get_ident() % 100000}:{label}"


def worker_is_gone(name: str) -> bool:
    """Whether the worker ``name`` (``worker_name``'s form) was a process of this host and PID namespace that no
    longer runs: a batch stopped with Ctrl-C or killed. Other workers are never judged here; their leases expire."""
    host, _, rest = name.partition(":")
    pid = rest.partition(":")[0]
    if host != _this_host() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


@lru_cache(maxsize=None)
def database(url: str | None = None):
    """The session factory of the run database (schema upgraded on first use)."""
    from storage.database import open_database

    return open_database(url)


@lru_cache(maxsize=None)
def cache(url: str | None = None):
    """The latent/video cache over the object store at ``url`` (default from settings). Opening it also sweeps the
    local temporary folders that killed workers left (``sweep_local_temporaries``)."""
    from storage.latent_cache import LatentCache
    from storage.object_store import open_store

    opened = LatentCache(open_store(url))
    sweep_local_temporaries()
    return opened


def sweep_local_temporaries() -> None:
    """Remove the folders a worker keeps in the system's temporary folder while it encodes a video or moves a cache
    entry (``pixelwizard-video-*``, ``pixelwizard-cache-*``) once a day untouched: a worker killed mid-stage leaves
    them, a finished 4K video among them, and nothing else would ever remove them."""
    from pixelwizard.leftovers import remove_stale

    remove_stale(Path(tempfile.gettempdir()), "pixelwizard-", r"pixelwizard-(video|cache)-[a-z0-9_]{8}")


_pipeline_lock = threading.Lock()


@lru_cache(maxsize=None)
def _load(model: str, device: str, plan):
    import torch

    from pixelwizard.bundle import load_bundle

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    pipe = load_bundle(model, device="cpu", dtype=dtype)
    return pipe.place(
        device, offload=plan.offload, attention_backend=plan.attention_backend, compile_blocks=plan.compile
    )


def model_path(model: str | None) -> str:
    """The bundle folder: ``model`` or the embedded default."""
    if model:
        return model
    from pixelwizard.default_model import default_model_path

    return str(default_model_path())


def execution_plan(preset: str, device: str):
    """The preset's measured GPU plan (docs/performance.md); on a CPU nothing is offloaded."""
    from dataclasses import replace

    from pixelwizard.presets import execution_plan as preset_plan

    plan = preset_plan(preset)
    return plan if device.startswith("cuda") else replace(plan, offload="none")


def pipeline(model: str | None, device: str | None = None, preset: str = "tiny"):
    """The PixelWizardPipeline for ``model``, loaded once per process, device and memory plan."""
    from pixelwizard.devices import resolve_device

    target = resolve_device(device)
    with _pipeline_lock:
        return _load(model_path(model), target, execution_plan(preset, target))


@lru_cache(maxsize=None)
def revision(model: str | None) -> str:
    """Content revision of the model bundle (what cache keys and jobs record)."""
    from pixelwizard.bundle import bundle_revision

    return bundle_revision(model_path(model))
