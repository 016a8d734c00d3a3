"""The embedded default model: a tiny PixelWizard bundle, same classes as the 5B one, small dims.

``default_model_path()`` returns a bundle that works offline on a fresh machine. The bundle is
built deterministically from a seed and saved under the model cache on first use (atomic:
built in a temporary folder, then renamed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_SEED = 0
_NAME = f"pixelwizard-tiny-random-s{DEFAULT_SEED}-v1"

# Words of the synthetic scenes (colours, shapes, textures, motions) and the glue around them.
TINY_VOCABULARY = tuple(
    """
    a an the of and with on in over across around to from towards away at is are its
    red green blue yellow orange purple pink white black gray cyan magenta brown
    circle square triangle star ring cross diamond disc ball cube box shape object
    stripes striped checks checkered checkerboard dots dotted polka plain solid textured texture pattern
    moves moving move slides drifts travels left right up down diagonally bounces bouncing orbits
    orbiting circles grows growing shrinks shrinking spins rotates slowly quickly fast slow steadily
    background backdrop scene frame center centre corner edge edges top bottom middle walls
    small large big tiny bright dark light video camera still static
    """.split()
)

TINY_TEXT_LENGTH = 32


def model_cache_dir() -> Path:
    """Where built or downloaded bundles live: $PIXELWIZARD_MODEL_CACHE or $PIXELWIZARD_HOME/models."""
    explicit = os.environ.get("PIXELWIZARD_MODEL_CACHE")
    if explicit:
        return Path(explicit)
    home = Path(os.environ.get("PIXELWIZARD_HOME", Path.home() / ".pixelwizard"))
    return home / "models"


def tiny_transformer_config(z_dim: int, text_dim: int) -> dict:
    """Wan2.2 TI2V transformer hyper-parameters shrunk for a CPU (SPEC.md 2 has the real ones)."""
    return dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=24,
        in_channels=z_dim,
        out_channels=z_dim,
        text_dim=text_dim,
        freq_dim=256,
        ffn_dim=96,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
    )


def tiny_vae_config(z_dim: int = 16) -> dict:
    """A Wan2.2-style VAE (patchified, residual, 4x16x16 compression) with few channels."""
    return dict(
        base_dim=16,
        z_dim=z_dim,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True],
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_temporal=4,
        scale_factor_spatial=16,
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )


def build_tiny_pipeline(seed: int = DEFAULT_SEED, vocabulary: tuple[str, ...] = TINY_VOCABULARY):
    """A tiny PixelWizardPipeline with weights drawn from ``seed`` (same seed, same weights)."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from pixelwizard.models.tokenizer import build_word_tokenizer
    from pixelwizard.models.transformer_pixelwizard import PixelWizardTransformer3DModel
    from pixelwizard.pipeline import PixelWizardPipeline
    from pixelwizard.sampling import flow_scheduler

    tokenizer = build_word_tokenizer(vocabulary, TINY_TEXT_LENGTH)
    text_config = UMT5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    z_dim = 16
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(text_config).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(**tiny_vae_config(z_dim)).eval()
    torch.manual_seed(seed + 2)
    transformer = WanTransformer3DModel(**tiny_transformer_config(z_dim, text_config.d_model)).eval()
    torch.manual_seed(seed + 3)
    detail = PixelWizardTransformer3DModel(
        **tiny_transformer_config(z_dim, text_config.d_model),
        anchor_channels=z_dim,
        injector_hidden_channels=32,
        injector_groups=8,
        injection_blocks=(0,),
    ).eval()
    return PixelWizardPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        detail_transformer=detail,
        scheduler=flow_scheduler(shift=5.0),
    )


def save_bundle_atomically(pipeline, destination: Path) -> Path:
    """save_pretrained into a sibling temporary folder, then rename it onto ``destination``."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        pipeline.save_pretrained(staging, safe_serialization=True)
        os.replace(staging, destination)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not destination.is_dir():  # another process may have won the race; that is fine
            raise
    return destination


def default_model_path() -> Path:
    """The embedded default bundle, built and cached on first use; never touches the network."""
    from pixelwizard.bundle import ModelFolderError, check_bundle

    path = model_cache_dir() / _NAME
    try:
        return check_bundle(path)
    except ModelFolderError:
        shutil.rmtree(path, ignore_errors=True)
    return save_bundle_atomically(build_tiny_pipeline(), path)
