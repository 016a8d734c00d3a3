"""Prompt embeddings of training captions, made by the text encoder of the bundle being trained.

The latent cache keeps captions, not embeddings, so that the transformers are always trained on
the embeddings of the text encoder they ship with, also after the anchor phase has trained it.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def embed_frozen(pipe, texts: list[str], batch: int = 256) -> torch.Tensor:
    """Prompt embeddings (N, L, D), float32, made by the pipeline in batches without gradients."""
    return torch.cat([pipe.embed_texts(texts[i : i + batch]).float() for i in range(0, len(texts), batch)])


class CaptionEmbeddings:
    """Embeddings of ``captions`` (looked up by index) and of the empty prompt (CFG dropout).

    Frozen (the default; Wan keeps UMT5 frozen): embedded once, up front. Trainable
    (``train anchor --train-text-encoder``): embedded again at every step, with gradients, so the
    loss trains the encoder as well; :meth:`parameters` then returns its weights.
    """

    def __init__(self, pipe, captions: list[str], trainable: bool = False) -> None:
        self.pipe, self.captions, self.trainable = pipe, list(captions), trainable
        if not trainable:
            table = embed_frozen(pipe, self.captions + [""])
            self.table, self.empty = table[:-1], table[-1]

    def parameters(self) -> list[torch.nn.Parameter]:
        """The text encoder's weights when it trains, else none."""
        return list(self.pipe.text_encoder.parameters()) if self.trainable else []

    def train(self, mode: bool = True) -> None:
        """Put a trainable text encoder in training mode (gradients on) or back to eval (gradients off)."""
        if self.trainable:
            self.pipe.text_encoder.train(mode).requires_grad_(mode)

    def __call__(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) embeddings of the captions at ``indices`` and (L, D) of the empty prompt."""
        if not self.trainable:
            return self.table[indices.to(self.table.device)], self.empty
        embeds = self.pipe.embed_texts([self.captions[i] for i in indices.tolist()] + [""]).float()
        return embeds[:-1], embeds[-1]
