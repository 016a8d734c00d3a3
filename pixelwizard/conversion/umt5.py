"""The UMT5-XXL encoder of the original Wan release (``models_t5_umt5-xxl-enc-bf16.pth``) ->
transformers ``UMT5EncoderModel``.

Hand-written: neither diffusers nor transformers ships a converter from Wan's own T5 module
naming. The map follows Wan's ``T5Encoder`` (per-layer relative position bias, gated GELU
feed-forward whose GELU branch is ``gate``): see docs/conversion.md.
"""

from __future__ import annotations

import re

from transformers import UMT5Config, UMT5EncoderModel

from pixelwizard.conversion.common import ConversionError, StateDict, build_empty, load_strict

_LAYER = re.compile(r"^blocks\.(\d+)\.(.+)$")
_IN_LAYER = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # the GELU branch
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",  # the linear branch
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_TOP = {"token_embedding.weight": "shared.weight", "norm.weight": "encoder.final_layer_norm.weight"}
MAX_DISTANCE = 128  # Wan's T5RelativeEmbedding max_dist


def to_transformers_keys(state_dict: StateDict) -> StateDict:
    """Rename Wan T5 encoder keys; unknown keys are kept as they are (and then reported)."""
    out: StateDict = {}
    for key, tensor in state_dict.items():
        match = _LAYER.match(key)
        if key in _TOP:
            out[_TOP[key]] = tensor
        elif match and match.group(2) in _IN_LAYER:
            out[f"encoder.block.{match.group(1)}.{_IN_LAYER[match.group(2)]}"] = tensor
        else:
            out[key] = tensor
    if "shared.weight" in out:
        out["encoder.embed_tokens.weight"] = out["shared.weight"]  # tied, as in transformers
    return out


def config_from_weights(state_dict: StateDict) -> UMT5Config:
    """The encoder's config, read off the tensor shapes."""
    try:
        vocab, dim = state_dict["token_embedding.weight"].shape
        layers = 1 + max(int(m.group(1)) for k in state_dict if (m := _LAYER.match(k)))
        buckets, heads = state_dict["blocks.0.pos_embedding.embedding.weight"].shape
        inner = state_dict["blocks.0.attn.q.weight"].shape[0]
        d_ff = state_dict["blocks.0.ffn.fc1.weight"].shape[0]
    except (KeyError, ValueError) as exc:
        raise ConversionError(f"UMT5 encoder: not a Wan T5 encoder state dict (no {exc})") from None
    return UMT5Config(
        vocab_size=vocab, d_model=dim, d_kv=inner // heads, d_ff=d_ff, num_layers=layers, num_heads=heads,
        relative_attention_num_buckets=buckets, relative_attention_max_distance=MAX_DISTANCE,
        feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, is_encoder_decoder=False, use_cache=False,
    )


def build(state_dict: StateDict) -> UMT5EncoderModel:
    """A transformers UMT5 encoder holding exactly the original weights (embeddings tied)."""
    config = config_from_weights(state_dict)
    model = load_strict(build_empty(lambda: UMT5EncoderModel(config)), to_transformers_keys(state_dict),
                        "UMT5 encoder")
    model.tie_weights()
    return model.eval()
