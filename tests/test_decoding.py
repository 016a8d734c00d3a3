"""Chunked, cosine-blended decoding against a one-piece decode (SPEC.md section 6)."""

import pytest
import torch
from diffusers import AutoencoderKLWan

from pixelwizard.decoding import chunk_spans, cosine_ramp, decode_frames, to_uint8_frames
from pixelwizard.default_model import tiny_vae_config


def test_spans_cover_the_width_with_the_requested_overlap():
    for width, chunks in [(160, 3), (240, 4), (28, 2), (29, 3), (30, 3)]:
        spans = chunk_spans(width, chunks, overlap=3)
        assert spans[0][0] == 0 and spans[-1][1] == width and len(spans) == chunks
        widths = [e - s for s, e in spans]
        assert max(widths) - min(widths) <= 1 and widths == sorted(widths, reverse=True)
        assert all(e0 - s1 == 3 for (_, e0), (s1, _) in zip(spans, spans[1:]))  # exactly 3 columns = 48 px


def test_release_chunking_at_2k_and_4k():
    assert chunk_spans(160, 3, overlap=3) == [(0, 56), (53, 108), (105, 160)]
    assert chunk_spans(240, 4, overlap=3) == [(0, 63), (60, 122), (119, 181), (178, 240)]


def test_cosine_ramps_of_neighbours_sum_to_one():
    ramp = cosine_ramp(48)
    assert torch.allclose(ramp + ramp.flip(0), torch.ones(48))
    assert ramp[0] < 0.01 and ramp[-1] > 0.99 and torch.all(ramp[1:] > ramp[:-1])


def test_impossible_chunking_is_rejected():
    with pytest.raises(ValueError, match="cannot cut"):
        chunk_spans(8, 4, overlap=3)


def pixel_local_decode(latent: torch.Tensor) -> torch.Tensor:
    """A decoder whose every output column depends on its own latent column only (16x upsample)."""
    video = torch.tanh(latent[:, :3]).repeat_interleave(16, dim=-1).repeat_interleave(16, dim=-2)
    return video.repeat_interleave(4, dim=2)[:, :, 3:]


def test_chunked_equals_one_piece_for_a_column_local_decoder():
    latent = torch.randn(1, 4, 3, 5, 40, generator=torch.Generator().manual_seed(0))
    whole = decode_frames(pixel_local_decode, latent, chunks=1)
    for chunks in (2, 3, 4):
        assert torch.equal(decode_frames(pixel_local_decode, latent, chunks=chunks), whole)


@torch.no_grad()
def test_chunked_decode_of_the_wan_vae_matches_one_piece_within_tolerance():
    """The Wan VAE's mid-block attention sees the whole width, so chunks differ slightly everywhere."""
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**tiny_vae_config(16)).eval()
    latent = torch.randn(1, 16, 2, 4, 30, generator=torch.Generator().manual_seed(1)) * 0.5
    decode = lambda z: vae.decode(z, return_dict=False)[0]  # noqa: E731
    whole = decode_frames(decode, latent, chunks=1).float()
    assert whole.shape == (5, 64, 480, 3)
    for chunks in (2, 3):
        chunked = decode_frames(decode, latent, chunks=chunks).float()
        assert chunked.shape == whole.shape
        psnr = 10 * torch.log10(255.0**2 / ((chunked - whole) ** 2).mean())
        assert psnr > 30, f"{chunks} chunks: PSNR {psnr:.1f} dB against the one-piece decode"


def test_uint8_conversion_maps_the_range_ends():
    video = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 4).expand(3, 1, 1, 4)
    frames = to_uint8_frames(video)
    assert frames.shape == (1, 1, 4, 3) and frames[0, 0, :, 0].tolist() == [0, 128, 255, 255]
