"""The embedded default model: the trained tiny PixelWizard bundle, same classes as the 5B one, small dims.

``default_model_path()`` returns the ``pixelwizard-tiny`` bundle shipped inside the package
(trained on the synthetic world, docs/training.md), so it works offline on a fresh machine.
``build_tiny_pipeline`` builds the same classes with random weights from a seed: the "small"
size keeps tests fast, the "trained" size is the shape the shipped bundle was trained from.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_SEED = 0
BUNDLED_MODEL = Path(__file__).parent / "assets" / "pixelwizard-tiny"

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
    outline place expands rises falls gets larger smaller side
    """.split()
)

TINY_TEXT_LENGTH = 32


# Dimensions per size: transformer (the detail model's, and the anchor model's unless "anchor" gives its
# own), VAE base width and latent channels, injector width. "trained" keeps Wan2.2's 48 latent channels but
# compresses 4x8x8, not 4x16x16 (SPEC.md 2): a VAE this small, trained for minutes, cannot keep fine texture
# through 16x16; its anchor model is wider and deeper than its detail model (runs 17 and 18, docs/training.md).
TINY_SIZES: dict[str, dict] = {
    "small": dict(heads=2, head_dim=24, ffn_dim=96, layers=2, vae_base_dim=16, z_dim=16, vae_spatial=16,
                  injector_channels=32),
    "trained": dict(heads=4, head_dim=48, ffn_dim=768, layers=4, vae_base_dim=32, z_dim=48, vae_spatial=8,
                    injector_channels=64, anchor=dict(heads=4, head_dim=64, ffn_dim=1024, layers=6)),
}


def tiny_transformer_config(z_dim: int, text_dim: int, size: str = "small", anchor: bool = False) -> dict:
    """Wan2.2 TI2V transformer hyper-parameters shrunk for a CPU (SPEC.md 2 has the real ones).

    ``anchor``: the anchor model's dimensions where the size gives them separately.
    """
    dims = TINY_SIZES[size] | (TINY_SIZES[size].get("anchor", {}) if anchor else {})
    return dict(
        patch_size=(1, 2, 2),
        num_attention_heads=dims["heads"],
        attention_head_dim=dims["head_dim"],
        in_channels=z_dim,
        out_channels=z_dim,
        text_dim=text_dim,
        freq_dim=256,
        ffn_dim=dims["ffn_dim"],
        num_layers=dims["layers"],
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
    )


def tiny_vae_config(z_dim: int = 16, size: str = "small") -> dict:
    """A Wan2.2-style VAE (patchified, residual, 4x compression in time, 16x or 8x in space) with few channels."""
    spatial = TINY_SIZES[size]["vae_spatial"]
    stages = {16: ([1, 2, 2, 2], [False, True, True]), 8: ([1, 2, 2], [True, True])}[spatial]
    return dict(
        base_dim=TINY_SIZES[size]["vae_base_dim"],
        z_dim=z_dim,
        dim_mult=stages[0],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=stages[1],
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_temporal=4,
        scale_factor_spatial=spatial,
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )


def build_tiny_pipeline(seed: int = DEFAULT_SEED, vocabulary: tuple[str, ...] = TINY_VOCABULARY, size: str = "small"):
    """A tiny PixelWizardPipeline of ``size`` with weights drawn from ``seed`` (same seed, same weights)."""
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
    z_dim = TINY_SIZES[size]["z_dim"]
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(text_config).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(**tiny_vae_config(z_dim, size)).eval()
    torch.manual_seed(seed + 2)
    transformer = WanTransformer3DModel(**tiny_transformer_config(z_dim, text_config.d_model, size, anchor=True)).eval()
    torch.manual_seed(seed + 3)
    detail = PixelWizardTransformer3DModel(
        **tiny_transformer_config(z_dim, text_config.d_model, size),
        anchor_channels=z_dim,
        injector_hidden_channels=TINY_SIZES[size]["injector_channels"],
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


def default_model_path() -> Path:
    """The shipped trained tiny bundle (package data); never touches the network."""
    from pixelwizard.bundle import check_bundle

    return check_bundle(BUNDLED_MODEL)
