"""Turning a transformer and prompt embeddings into the guided velocity that the samplers call."""

from __future__ import annotations

import torch

from pixelwizard.sampling import Velocity, guided


def guided_velocity(
    transformer: torch.nn.Module,
    cond_embeds: torch.Tensor,
    uncond_embeds: torch.Tensor | None,
    scale: float,
    *,
    anchor: torch.Tensor | None = None,
    zero_anchor_uncond: bool = False,
    batch_branches: bool = True,
) -> Velocity:
    """Velocity with classifier-free guidance (SPEC.md 5).

    Both branches see the anchor; with ``zero_anchor_uncond`` the unconditional branch gets a
    zero anchor instead (the training-time dropout, an option). ``batch_branches`` runs both
    branches in one batched forward; otherwise two forwards (less peak memory).
    """
    dtype = transformer.dtype
    cond_embeds = cond_embeds.to(transformer.device, dtype)
    if uncond_embeds is not None:
        uncond_embeds = uncond_embeds.to(transformer.device, dtype)
    use_cfg = uncond_embeds is not None and scale != 1.0
    uncond_anchor = None
    if anchor is not None:
        anchor = anchor.to(transformer.device, dtype)
        uncond_anchor = torch.zeros_like(anchor) if zero_anchor_uncond else anchor

    def call(x: torch.Tensor, t: torch.Tensor, dt: torch.Tensor | None, embeds, anchor_in) -> torch.Tensor:
        kwargs = {}
        if dt is not None:
            kwargs["dt"] = dt
        if anchor_in is not None:
            kwargs["anchor"] = anchor_in
        return transformer(x.to(dtype), t, embeds, return_dict=False, **kwargs)[0]

    def velocity(x: torch.Tensor, t: torch.Tensor, dt: torch.Tensor | None) -> torch.Tensor:
        if not use_cfg:
            return call(x, t, dt, cond_embeds, anchor)
        if batch_branches:
            both = call(
                torch.cat([x, x]),
                torch.cat([t, t]),
                None if dt is None else torch.cat([dt, dt]),
                torch.cat([cond_embeds, uncond_embeds]),
                None if anchor is None else torch.cat([anchor, uncond_anchor]),
            )
            cond, uncond = both.float().chunk(2)
        else:
            cond = call(x, t, dt, cond_embeds, anchor).float()
            uncond = call(x, t, dt, uncond_embeds, uncond_anchor).float()
        return guided(cond, uncond, scale)

    return velocity
