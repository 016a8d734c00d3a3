"""PixelWizardPipeline: text -> anchor latent -> detail latent -> frames, as reusable stage calls.

The pipeline composes the components and the library's samplers; the math lives in
``sampling``, ``guidance`` and ``decoding``. It is a diffusers ``DiffusionPipeline``, so a model
bundle is a folder in the diffusers layout (``save_pretrained`` / ``from_pretrained``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLWan, DiffusionPipeline, UniPCMultistepScheduler, WanTransformer3DModel
from transformers import PreTrainedTokenizerBase, UMT5EncoderModel

from pixelwizard.decoding import DECODE_OVERLAP, decode_frames, latent_stats
from pixelwizard.guidance import guided_velocity
from pixelwizard.memory import Offload, StageOffloader
from pixelwizard.models.transformer_pixelwizard import PixelWizardTransformer3DModel
from pixelwizard.presets import Preset, get_preset
from pixelwizard.sampling import Solver, sample
from pixelwizard.seeds import stage_seeds

# Components in stage order; each visits the GPU only for its stage under offload "model".
_STAGE_COMPONENTS = ("text_encoder", "transformer", "detail_transformer", "vae")

# on_progress(stage, done, total): stage is "text", "anchor", "detail" or "decode".
Progress = Callable[[str, int, int], None]


@dataclass
class PixelWizardOutput:
    frames: torch.Tensor  # (T, H, W, 3) uint8, CPU
    anchor_latent: torch.Tensor
    detail_latent: torch.Tensor


def _noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Gaussian noise from a CPU generator, so a seed gives the same latent on every device."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)


def _channels_last_3d(vae: torch.nn.Module) -> None:
    """Conv3d weights in the channels-last-3d layout, cuDNN's faster one for the Wan VAE decoder."""
    for module in vae.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last_3d)


class PixelWizardPipeline(DiffusionPipeline):
    """Two-stage text-to-video: a Wan2.2 anchor model and a PixelWizard detail model (SPEC.md 1)."""

    model_cpu_offload_seq = "text_encoder->transformer->detail_transformer->vae"
    _offloader: StageOffloader | None = None

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        text_encoder: UMT5EncoderModel,
        vae: AutoencoderKLWan,
        transformer: WanTransformer3DModel,
        detail_transformer: PixelWizardTransformer3DModel,
        scheduler: UniPCMultistepScheduler,
    ) -> None:
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            vae=vae,
            transformer=transformer,
            detail_transformer=detail_transformer,
            scheduler=scheduler,
        )
        # diffusers' AutoencoderKLWan keeps its causal-convolution cache on the module (clear_cache,
        # _feat_map), so threads sharing this pipeline (the flows' workers) take turns decoding.
        self._vae_lock = threading.Lock()

    # -- memory plan ------------------------------------------------------------------------
    def place(
        self,
        device: str,
        *,
        offload: Offload = "none",
        attention_backend: str | None = None,
        compile_blocks: bool = False,
    ) -> "PixelWizardPipeline":
        """Put the pipeline on ``device`` under a memory plan (docs/performance.md).

        ``offload="model"`` keeps every component in CPU memory and moves each to the GPU only
        for its own stage; ``attention_backend`` is a diffusers backend name for both
        transformers (e.g. ``_native_cudnn``), None for PyTorch's own choice; ``compile_blocks``
        compiles the repeated transformer blocks (regional ``torch.compile``). On a GPU the VAE's 3D
        convolutions get channels-last weights (6% faster decode, 1.4 GB less at 2K).
        """
        if torch.device(device).type == "cuda":
            _channels_last_3d(self.vae)
        for model in (self.transformer, self.detail_transformer):
            if attention_backend is not None:
                model.set_attention_backend(attention_backend)
            if compile_blocks:
                model.compile_repeated_blocks(fullgraph=True)
        if offload == "model":
            self._offloader = StageOffloader(device)
            for name in _STAGE_COMPONENTS:
                self._offloader.add(getattr(self, name))
        else:
            self._offloader = None
            self.to(device)
        return self

    @contextmanager
    def _resident(self, name: str) -> Iterator[None]:
        """The component ``name`` on the execution device for the block (a no-op without offload)."""
        if self._offloader is None:
            yield
        else:
            with self._offloader.resident(getattr(self, name)):
                yield

    # -- shapes -----------------------------------------------------------------------------
    def latent_shape(self, width: int, height: int, num_frames: int) -> tuple[int, int, int, int, int]:
        """(1, C, F, h, w) of the latent of a video of this size."""
        temporal = self.vae.config.scale_factor_temporal
        spatial = self.vae.config.scale_factor_spatial
        return (1, self.vae.config.z_dim, (num_frames - 1) // temporal + 1, height // spatial, width // spatial)

    # -- stage 0: text ---------------------------------------------------------------------
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """UMT5 embeddings (N, L, D) of ``texts``, zero past each text's end (as Wan).

        Gradients flow where they are enabled (training the text encoder); ``encode_prompt`` is the
        inference entry point and runs without them.
        """
        length = self.tokenizer.model_max_length
        tokens = self.tokenizer(
            texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        )
        with self._resident("text_encoder"):
            device = self.text_encoder.device
            mask = tokens.attention_mask.to(device)
            hidden = self.text_encoder(tokens.input_ids.to(device), mask).last_hidden_state
            return hidden * mask.unsqueeze(-1).to(hidden.dtype)

    @torch.no_grad()
    def encode_prompt(self, prompt: str, negative_prompt: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of the prompt and the negative prompt (empty when None)."""
        cond, uncond = self.embed_texts([prompt, negative_prompt or ""]).chunk(2)
        return cond, uncond

    # -- stage 1: anchor --------------------------------------------------------------------
    @torch.no_grad()
    def generate_anchor(
        self,
        prompt: str,
        seed: int,
        preset: str | Preset = "tiny",
        *,
        negative_prompt: str | None = None,
        solver: Solver = "unipc",
        batch_cfg: bool = True,
        embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        on_progress: Progress | None = None,
    ) -> torch.Tensor:
        """The anchor latent (1, C, F, h, w), float32 on the CPU: base model, full sampler (SPEC.md 3)."""
        preset = get_preset(preset) if isinstance(preset, str) else preset
        cond, uncond = embeddings or self._embeddings(prompt, negative_prompt, on_progress)
        shape = self.latent_shape(preset.anchor_width, preset.anchor_height, preset.num_frames)
        with self._resident("transformer"):
            velocity = guided_velocity(
                self.transformer, cond, uncond, preset.anchor_guidance, batch_branches=batch_cfg
            )
            latent = sample(
                velocity,
                _noise(shape, seed).to(self.transformer.device),
                num_steps=preset.anchor_steps,
                shift=preset.anchor_shift,
                solver=solver,
                on_step=self._stage_progress("anchor", on_progress),
            )
            return latent.cpu()

    # -- stage 2: detail --------------------------------------------------------------------
    @torch.no_grad()
    def render_detail(
        self,
        anchor: torch.Tensor,
        prompt: str,
        seed: int,
        preset: str | Preset = "tiny",
        *,
        negative_prompt: str | None = None,
        solver: Solver = "unipc",
        snap: bool = False,
        zero_anchor_uncond: bool = False,
        batch_cfg: bool = True,
        embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        on_progress: Progress | None = None,
    ) -> torch.Tensor:
        """The detail latent from pure noise in a few shortcut steps, guided by the anchor (SPEC.md 5)."""
        preset = get_preset(preset) if isinstance(preset, str) else preset
        cond, uncond = embeddings or self._embeddings(prompt, negative_prompt, on_progress)
        shape = self.latent_shape(preset.detail_width, preset.detail_height, preset.num_frames)
        if anchor.shape[2] != shape[2]:
            raise ValueError(f"anchor has {anchor.shape[2]} latent frames; preset {preset.name} needs {shape[2]}")
        with self._resident("detail_transformer"):
            velocity = guided_velocity(
                self.detail_transformer,
                cond,
                uncond,
                preset.detail_guidance,
                anchor=anchor,
                zero_anchor_uncond=zero_anchor_uncond,
                batch_branches=batch_cfg,
            )
            latent = sample(
                velocity,
                _noise(shape, seed).to(self.detail_transformer.device),
                num_steps=preset.detail_steps,
                shift=preset.detail_shift,
                solver=solver,
                shortcut=True,
                snap=snap,
                on_step=self._stage_progress("detail", on_progress),
            )
            return latent.cpu()

    # -- stage 3: decode --------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, latent: torch.Tensor, *, chunks: int = 1, overlap: int = DECODE_OVERLAP) -> torch.Tensor:
        """uint8 frames (T, H, W, 3) from a normalised latent, in width chunks if asked (SPEC.md 6)."""
        mean, std = latent_stats(self.vae)
        raw = latent.float() * std + mean

        def decode_piece(piece: torch.Tensor) -> torch.Tensor:
            return self.vae.decode(piece.to(self.vae.device, self.vae.dtype), return_dict=False)[0]

        with self._vae_lock, self._resident("vae"):
            return decode_frames(decode_piece, raw, chunks=chunks, overlap=overlap)

    # -- all stages -------------------------------------------------------------------------
    def __call__(
        self,
        prompt: str,
        *,
        prompt_id: str,
        seed: int = 0,
        preset: str | Preset = "tiny",
        negative_prompt: str | None = None,
        solver: Solver = "unipc",
        batch_cfg: bool = True,
        on_progress: Progress | None = None,
    ) -> PixelWizardOutput:
        """Render one prompt end to end; stage seeds come from (seed, prompt_id).

        ``batch_cfg`` runs both guidance branches in one batched forward; False runs them one
        after the other (as fast on an H100, and a third less peak memory at 2K).
        """
        preset = get_preset(preset) if isinstance(preset, str) else preset
        seeds = stage_seeds(seed, prompt_id)
        embeddings = self._embeddings(prompt, negative_prompt, on_progress)
        anchor = self.generate_anchor(
            prompt, seeds.anchor, preset, solver=solver, batch_cfg=batch_cfg, embeddings=embeddings,
            on_progress=on_progress,
        )
        detail = self.render_detail(
            anchor, prompt, seeds.detail, preset, solver=solver, batch_cfg=batch_cfg, embeddings=embeddings,
            on_progress=on_progress,
        )
        frames = self.decode(detail, chunks=preset.decode_chunks)
        if on_progress is not None:
            on_progress("decode", 1, 1)
        return PixelWizardOutput(frames=frames, anchor_latent=anchor, detail_latent=detail)

    # -- helpers ----------------------------------------------------------------------------
    def _embeddings(
        self, prompt: str, negative_prompt: str | None, on_progress: Progress | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cond, uncond = self.encode_prompt(prompt, negative_prompt)
        if on_progress is not None:
            on_progress("text", 1, 1)
        return cond, uncond

    @staticmethod
    def _stage_progress(stage: str, on_progress: Progress | None) -> Callable[[int, int], None] | None:
        if on_progress is None:
            return None
        return lambda done, total: on_progress(stage, done, total)
