"""The PixelWizard detail transformer: Wan2.2 TI2V plus a step-size embedding and an anchor injector.

SPEC.md section 4. The class subclasses diffusers' ``WanTransformer3DModel`` so that its state
dict is a superset of the stock one: Wan2.2 transformer weights in the diffusers layout load
unchanged, the new modules stay zero-initialised, and the model then computes exactly what the
base model computes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin  # noqa: F401  (diffusers' loader looks the base class up in this module)
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel


class AnchorInjector(nn.Module):
    """Turns an anchor latent into one gated control vector per detail token (SPEC.md section 4).

    Conv3d 1x1x1 -> GroupNorm -> SiLU -> Conv3d 3x3x3 -> SiLU -> tokens -> LayerNorm -> gate
    (1 + tanh(a(t) + b(dt))) -> one zero-initialised Linear per injection block.
    """

    def __init__(
        self,
        anchor_channels: int,
        hidden_channels: int,
        dim: int,
        freq_dim: int,
        num_groups: int,
        injection_blocks: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.in_conv = nn.Conv3d(anchor_channels, hidden_channels, kernel_size=1)
        self.norm_in = nn.GroupNorm(num_groups, hidden_channels)
        self.out_conv = nn.Conv3d(hidden_channels, dim, kernel_size=3, padding=1)
        self.norm_tokens = nn.LayerNorm(dim)
        self.gate_t = nn.Linear(freq_dim, dim)
        self.gate_dt = nn.Linear(freq_dim, dim)
        self.block_proj = nn.ModuleDict({str(i): nn.Linear(dim, dim) for i in injection_blocks})
        nn.init.zeros_(self.gate_dt.weight)
        nn.init.zeros_(self.gate_dt.bias)
        for proj in self.block_proj.values():
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self, anchor: torch.Tensor, grid: tuple[int, int, int], t_freq: torch.Tensor, dt_freq: torch.Tensor
    ) -> torch.Tensor:
        """Control tokens (B, N, dim) for a token grid (frames, height, width)."""
        frames, height, width = grid
        if anchor.shape[2] != frames:
            raise ValueError(f"anchor has {anchor.shape[2]} latent frames, the detail latent has {frames}")
        batch = anchor.shape[0]
        # Bilinear resize frame by frame to the token grid (one control vector per token).
        per_frame = anchor.permute(0, 2, 1, 3, 4).flatten(0, 1).float()
        per_frame = F.interpolate(per_frame, size=(height, width), mode="bilinear", align_corners=False)
        x = per_frame.unflatten(0, (batch, frames)).permute(0, 2, 1, 3, 4).to(self.in_conv.weight.dtype)
        x = F.silu(self.norm_in(self.in_conv(x)))
        x = F.silu(self.out_conv(x))
        tokens = self.norm_tokens(x.flatten(2).transpose(1, 2))
        gate = 1 + torch.tanh(self.gate_t(t_freq.to(tokens.dtype)) + self.gate_dt(dt_freq.to(tokens.dtype)))
        return tokens * gate.unsqueeze(1)


class PixelWizardTransformer3DModel(WanTransformer3DModel):
    """Wan2.2 transformer conditioned on the step size ``dt`` and on an anchor latent (SPEC.md 4)."""

    _keep_in_fp32_modules = [*WanTransformer3DModel._keep_in_fp32_modules, "dt_embedder"]
    _skip_layerwise_casting_patterns = [*WanTransformer3DModel._skip_layerwise_casting_patterns, "anchor_injector"]

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 24,
        attention_head_dim: int = 128,
        in_channels: int = 48,
        out_channels: int = 48,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 14336,
        num_layers: int = 30,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
        anchor_channels: int = 48,
        injector_hidden_channels: int = 768,
        injector_groups: int = 16,
        injection_blocks: tuple[int, ...] = (0,),
    ) -> None:
        super().__init__(
            patch_size=patch_size,
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=in_channels,
            out_channels=out_channels,
            text_dim=text_dim,
            freq_dim=freq_dim,
            ffn_dim=ffn_dim,
            num_layers=num_layers,
            cross_attn_norm=cross_attn_norm,
            qk_norm=qk_norm,
            eps=eps,
            image_dim=image_dim,
            added_kv_proj_dim=added_kv_proj_dim,
            rope_max_seq_len=rope_max_seq_len,
            pos_embed_seq_len=pos_embed_seq_len,
        )
        if not injection_blocks or any(not 0 <= i < num_layers for i in injection_blocks):
            raise ValueError(f"injection_blocks {list(injection_blocks)} must name at least one block in [0, {num_layers})")
        self.dt_embedder, self.anchor_injector = self._new_modules()

    def _new_modules(self) -> tuple[TimestepEmbedding, AnchorInjector]:
        """The modules PixelWizard adds to Wan, freshly initialised (zero where SPEC.md 4 says)."""
        c = self.config
        inner_dim = c.num_attention_heads * c.attention_head_dim
        # Step-size embedding: same sinusoid as the timestep, MLP whose last layer starts at zero.
        dt_embedder = TimestepEmbedding(in_channels=c.freq_dim, time_embed_dim=inner_dim)
        nn.init.zeros_(dt_embedder.linear_2.weight)
        nn.init.zeros_(dt_embedder.linear_2.bias)
        injector = AnchorInjector(
            c.anchor_channels, c.injector_hidden_channels, inner_dim, c.freq_dim, c.injector_groups,
            tuple(c.injection_blocks),
        )
        return dt_embedder, injector

    @classmethod
    def from_wan_pretrained(cls, path: str, **config_overrides: Any) -> "PixelWizardTransformer3DModel":
        """Load stock diffusers Wan2.2 transformer weights; the new modules get their (zero) init.

        Such a checkpoint lacks the new modules, which diffusers then leaves on the meta device:
        they are rebuilt here, in the dtype of the rest of the model.
        """
        model = cls.from_pretrained(path, **config_overrides)
        device = model.patch_embedding.weight.device
        dt_embedder, injector = model._new_modules()
        if any(p.is_meta for p in model.dt_embedder.parameters()):
            model.dt_embedder = dt_embedder.to(device)  # kept in float32 (_keep_in_fp32_modules)
        if any(p.is_meta for p in model.anchor_injector.parameters()):
            model.anchor_injector = injector.to(device, model.patch_embedding.weight.dtype)
        return model

    @property
    def _sinusoid(self) -> Timesteps:
        return self.condition_embedder.timesteps_proj

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        dt: torch.Tensor | None = None,
        anchor: torch.Tensor | None = None,
        encoder_hidden_states_image: torch.Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor | Transformer2DModelOutput:
        """Velocity for ``hidden_states`` at ``timestep`` (0..1000 scale).

        ``dt`` (B,) is the step size on the same scale (0 = plain flow matching); ``anchor``
        (B, C, F, h, w) is the anchor latent, or None for no anchor guidance. With both None
        this is exactly ``WanTransformer3DModel.forward``.
        """
        if attention_kwargs:
            raise ValueError("attention_kwargs (LoRA scaling) is not supported by PixelWizardTransformer3DModel")
        batch_size, _, num_frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        grid = (num_frames // p_t, height // p_h, width // p_w)

        rotary_emb = self.rope(hidden_states)
        hidden_states = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()

        if timestep.ndim == 2:
            ts_seq_len = timestep.shape[1]
            flat_timestep = timestep.flatten()
        else:
            ts_seq_len = None
            flat_timestep = timestep
        temb, _, encoder_hidden_states, encoder_hidden_states_image = self.condition_embedder(
            flat_timestep, encoder_hidden_states, encoder_hidden_states_image, timestep_seq_len=ts_seq_len
        )

        dt_freq = None
        if dt is not None:
            dt_freq = self._sinusoid(dt.reshape(batch_size).to(flat_timestep.device))
            dt_emb = self.dt_embedder(dt_freq.to(self.dt_embedder.linear_1.weight.dtype)).type_as(temb)
            # Added to the timestep embedding before the timestep projection (SPEC.md 4).
            temb = temb + (dt_emb.unsqueeze(1) if temb.ndim == 3 else dt_emb)
        timestep_proj = self.condition_embedder.time_proj(self.condition_embedder.act_fn(temb))
        timestep_proj = timestep_proj.unflatten(2 if ts_seq_len is not None else 1, (6, -1))

        control = None
        if anchor is not None:
            t_scalar = timestep if timestep.ndim == 1 else timestep[:, 0]
            t_freq = self._sinusoid(t_scalar)
            if dt_freq is None:
                dt_freq = self._sinusoid(torch.zeros_like(t_scalar))
            control = self.anchor_injector(anchor, grid, t_freq, dt_freq)

        if encoder_hidden_states_image is not None:
            encoder_hidden_states = torch.concat([encoder_hidden_states_image, encoder_hidden_states], dim=1)

        checkpointing = torch.is_grad_enabled() and self.gradient_checkpointing
        last_injection = max(int(k) for k in self.anchor_injector.block_proj)
        for index, block in enumerate(self.blocks):
            key = str(index)
            if control is not None and key in self.anchor_injector.block_proj:
                hidden_states = hidden_states + self.anchor_injector.block_proj[key](control).to(hidden_states.dtype)
                if index == last_injection:
                    control = None  # free the control tokens (1.5 GB at 4K) before the remaining blocks
            if checkpointing:
                hidden_states = self._gradient_checkpointing_func(
                    block, hidden_states, encoder_hidden_states, timestep_proj, rotary_emb
                )
            else:
                hidden_states = block(hidden_states, encoder_hidden_states, timestep_proj, rotary_emb)

        output = self._unpatchify(self._output_head(hidden_states, temb), batch_size, grid)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    def _output_head(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """AdaLN-modulated output norm and projection, as in the base model."""
        table = self.scale_shift_table.to(temb.device)
        if temb.ndim == 3:
            shift, scale = (table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (table + temb.unsqueeze(1)).chunk(2, dim=1)
        shift, scale = shift.to(hidden_states.device), scale.to(hidden_states.device)
        hidden_states = (self.norm_out(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)
        return self.proj_out(hidden_states)

    def _unpatchify(self, tokens: torch.Tensor, batch_size: int, grid: tuple[int, int, int]) -> torch.Tensor:
        p_t, p_h, p_w = self.config.patch_size
        x = tokens.reshape(batch_size, *grid, p_t, p_h, p_w, -1)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)

