"""The work of each stage for one job: what it computes, under which cache key.

Everything a job renders is fixed by its row (prompt, seed, preset, parameters, model
revision), so cache keys derive from the row and a retried or resumed stage finds the work a
previous attempt already stored.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from flows.unsaved import store_once
from pixelwizard.presets import Preset, get_preset
from pixelwizard.seeds import StageSeeds, stage_seeds
from storage.latent_cache import LatentCache, anchor_cache_key, artifact_key
from storage.models import ArtifactKind, Job
from storage.object_store import StoredObject

if TYPE_CHECKING:
    from pixelwizard.pipeline import Progress

AnchorOutcome = Literal["generated", "cached", "skipped"]  # skipped: the job's video exists (``video_exists``)
log = logging.getLogger(__name__)

SOLVER = "unipc"
CODEC = "h264"


@dataclass(frozen=True)
class JobPlan:
    """A job's preset, stage seeds and the cache keys of its three artifacts."""

    preset: Preset
    seeds: StageSeeds
    anchor_key: str
    detail_key: str
    video_key: str
    anchor_params: dict[str, Any]


def plan_job(job: Job, dtype: str) -> JobPlan:
    """Derive the preset (with the job's overrides), seeds and cache keys from the job row."""
    preset = get_preset(job.preset).with_overrides(**(job.parameters or {}))
    seeds = stage_seeds(job.seed, job.prompt_id)
    anchor_params = {
        "model_revision": job.model_revision,
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt or "",
        "seed": seeds.anchor,
        "anchor_width": preset.anchor_width,
        "anchor_height": preset.anchor_height,
        "num_frames": preset.num_frames,
        "steps": preset.anchor_steps,
        "shift": preset.anchor_shift,
        "guidance_scale": preset.anchor_guidance,
        "sampler": SOLVER,
        "dtype": dtype,
    }
    anchor_key = anchor_cache_key(anchor_params)
    detail_key = artifact_key(
        ArtifactKind.detail_latent,
        {
            "anchor": anchor_key,
            "seed": seeds.detail,
            "width": preset.detail_width,
            "height": preset.detail_height,
            "steps": preset.detail_steps,
            "shift": preset.detail_shift,
            "guidance_scale": preset.detail_guidance,
            "sampler": SOLVER,
        },
    )
    video_key = artifact_key(
        ArtifactKind.video, {"detail": detail_key, "codec": CODEC, "fps": preset.fps, "chunks": preset.decode_chunks}
    )
    return JobPlan(preset, seeds, anchor_key, detail_key, video_key, anchor_params)


def _record(job: Job, plan: JobPlan) -> dict[str, Any]:
    return {"prompt_id": job.prompt_id, "prompt": job.prompt, "model_revision": job.model_revision,
            "preset": asdict(plan.preset)}


def video_exists(cache: LatentCache, plan: JobPlan) -> bool:
    """Whether the job's finished video is in the store already (an earlier batch made the same one): its anchor and
    detail stages then make nothing, and the encoding stage checks the video. Its latents may be long gone (``cache
    gc``); should the video turn out corrupt, the encoding stage makes them again (``video``, ``detail``)."""
    return cache.entry_object(ArtifactKind.video, plan.video_key) is not None


def anchor(pipe, cache: LatentCache, job: Job, plan: JobPlan, *, batch_cfg: bool = True,
           on_progress: Progress | None = None) -> tuple[StoredObject | None, AnchorOutcome]:
    """The anchor stage: the job's anchor latent from the cache, or generated and stored, with how it came; (None,
    "skipped") when the job's video exists already (``video_exists``). ``on_progress`` is the sampler's per-step
    callback (the worker's cancel check)."""
    if cache.get(ArtifactKind.anchor_latent, plan.anchor_key) is not None:  # read whole: a corrupt one is redone
        return cache.payload_object(ArtifactKind.anchor_latent, plan.anchor_key), "cached"
    if video_exists(cache, plan):
        return None, "skipped"
    return _make_anchor(pipe, cache, job, plan, batch_cfg=batch_cfg, on_progress=on_progress), "generated"


def _make_anchor(pipe, cache: LatentCache, job: Job, plan: JobPlan, *, batch_cfg: bool,
                 on_progress: Progress | None) -> StoredObject:
    def generate():
        return pipe.generate_anchor(
            job.prompt, plan.seeds.anchor, plan.preset, negative_prompt=job.negative_prompt or None, solver=SOLVER,
            batch_cfg=batch_cfg, on_progress=on_progress,
        )

    record = {**_record(job, plan), "parameters": plan.anchor_params}
    return store_once(f"anchors/{plan.anchor_key}", generate,
                      lambda latent: cache.put(ArtifactKind.anchor_latent, plan.anchor_key, {"latent": latent}, record))


def detail(pipe, cache: LatentCache, job: Job, plan: JobPlan, *, batch_cfg: bool = True,
           on_progress: Progress | None = None) -> StoredObject | None:
    """The render stage: the detail latent from the cache, or rendered from the cached anchor (generated again if
    the cache lost it), or None when the job's video exists already (``video_exists``); ``on_progress`` as for
    ``anchor``."""
    cached = cache.entry_object(ArtifactKind.detail_latent, plan.detail_key)  # a resumed job that failed later
    if cached is not None:  # (read, and redone if corrupt, by the encoding stage)
        return cached
    if video_exists(cache, plan):
        return None
    return _make_detail(pipe, cache, job, plan, batch_cfg=batch_cfg, on_progress=on_progress)


def _make_detail(pipe, cache: LatentCache, job: Job, plan: JobPlan, *, batch_cfg: bool,
                 on_progress: Progress | None) -> StoredObject:
    """The detail latent rendered and stored. Latents a stage finds missing are made here and in ``_make_anchor``,
    without the stages' check for a finished video: one stored meanwhile by another batch must not leave them
    without the latent they need."""
    def render():
        hit = cache.get(ArtifactKind.anchor_latent, plan.anchor_key)
        if hit is None:
            log.warning("job %s: anchor %s missing from the cache; generating it again", job.id, plan.anchor_key)
            _make_anchor(pipe, cache, job, plan, batch_cfg=batch_cfg, on_progress=on_progress)
            hit = cache.get(ArtifactKind.anchor_latent, plan.anchor_key)
        return pipe.render_detail(
            hit[0]["latent"], job.prompt, plan.seeds.detail, plan.preset,
            negative_prompt=job.negative_prompt or None, solver=SOLVER, batch_cfg=batch_cfg, on_progress=on_progress,
        )

    return store_once(f"details/{plan.detail_key}", render, lambda latent: cache.put(
        ArtifactKind.detail_latent, plan.detail_key, {"latent": latent}, _record(job, plan)))


def video(pipe, cache: LatentCache, job: Job, plan: JobPlan, *, on_progress: Progress | None = None) -> StoredObject:
    """The MP4 from the cache, or decoded from the cached detail latent (re-rendered if it was lost) and stored;
    ``on_progress`` as for ``anchor`` (for that re-render)."""
    from pixelwizard.video import encode_video

    if cache.entry_object(ArtifactKind.video, plan.video_key) is not None:  # stored by an earlier try or batch:
        with tempfile.TemporaryDirectory(prefix="pixelwizard-video-") as tmp:  # reused only once it verifies
            if cache.get_video(plan.video_key, Path(tmp) / "check.mp4") is not None:  # (else quarantined: made again)
                return cache.payload_object(ArtifactKind.video, plan.video_key)

    def encode() -> Path:
        hit = cache.get(ArtifactKind.detail_latent, plan.detail_key)
        if hit is None:
            log.warning("job %s: detail latent missing from the cache; rendering it again", job.id)
            _make_detail(pipe, cache, job, plan, batch_cfg=True, on_progress=on_progress)
            hit = cache.get(ArtifactKind.detail_latent, plan.detail_key)
        frames = pipe.decode(hit[0]["latent"], chunks=plan.preset.decode_chunks)
        folder = Path(tempfile.mkdtemp(prefix="pixelwizard-video-"))  # removed once stored (flows.unsaved)
        try:
            return encode_video(iter(frames.numpy()), folder / f"{job.prompt_id}.mp4", fps=plan.preset.fps, codec=CODEC)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    return store_once(f"videos/{plan.video_key}", encode,
                      lambda path: cache.put_video(plan.video_key, path, _record(job, plan)))
