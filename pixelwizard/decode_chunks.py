"""Where the width chunks of a chunked decode start and end (SPEC.md 6); plain integers, so that presets can
check a chunk count without importing torch."""

from __future__ import annotations

DECODE_OVERLAP = 3  # latent columns neighbouring chunks share: 48 pixels at 16 a column (SPEC.md 6)


def chunk_spans(latent_width: int, chunks: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) latent columns of each chunk: neighbours share exactly ``overlap`` columns (SPEC.md 6),
    widths differ by at most one (the first chunks are the wider)."""
    if chunks < 1:
        raise ValueError(f"chunks must be at least 1, got {chunks}")
    if chunks == 1:
        return [(0, latent_width)]
    width, wider = divmod(latent_width + (chunks - 1) * overlap, chunks)
    if width >= latent_width or width <= 2 * overlap:
        raise ValueError(
            f"cannot cut a latent {latent_width} columns wide into {chunks} chunks overlapping by {overlap}"
        )
    spans, start = [], 0
    for i in range(chunks):
        end = start + width + (1 if i < wider else 0)
        spans.append((start, end))
        start = end - overlap
    return spans
