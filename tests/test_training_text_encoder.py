"""Captions are embedded by the bundle being trained; the anchor phase can train the text encoder with it."""

import torch
from typer.testing import CliRunner

from pixelwizard.bundle import load_bundle, write_bundle
from pixelwizard.default_model import build_tiny_pipeline
from pixelwizard.training.captions import CaptionEmbeddings
from pixelwizard.training.config import TrainConfig
from pixelwizard.training.datasets import SyntheticClips
from pixelwizard.training.degrade import scaled_degradation
from pixelwizard.training.latents import LatentCache, build_latent_cache
from pixelwizard.training.trainer import train_anchor


def small_cache(pipe, count=12):
    source = SyntheticClips(seed=0, size=count, frames=5, width=128, height=64)
    return build_latent_cache(pipe, source, count=count, anchor_size=(64, 32), degradation=scaled_degradation(128, 64), seed=0)


def encoder_weights(pipe):
    return {k: v.detach().clone() for k, v in pipe.text_encoder.state_dict().items()}


def test_frozen_embeddings_are_the_pipelines_and_carry_no_gradient():
    pipe = build_tiny_pipeline(seed=1)
    captions = ["a red circle moves right over a plain blue background", "a small green star spins in place"]
    text = CaptionEmbeddings(pipe, captions)
    embeds, empty = text(torch.tensor([1, 0, 1]))
    with torch.no_grad():
        expected = pipe.embed_texts([captions[1], captions[0], captions[1], ""]).float()
    assert torch.allclose(embeds, expected[:3], atol=1e-6) and torch.allclose(empty, expected[3], atol=1e-6)
    assert not embeds.requires_grad and text.parameters() == []


def test_anchor_training_trains_the_text_encoder_only_when_asked():
    pipe = build_tiny_pipeline(seed=2)
    cache = small_cache(pipe)
    cfg = TrainConfig(steps=30, batch_size=6, lr=2e-3, betas=(0.9, 0.999), log_every=10).validate()

    before = encoder_weights(pipe)
    train_anchor(pipe.transformer, cache, CaptionEmbeddings(pipe, cache.captions), cfg, lambda _: None)
    assert all(torch.equal(before[k], v) for k, v in pipe.text_encoder.state_dict().items())  # frozen: untouched

    text = CaptionEmbeddings(pipe, cache.captions, trainable=True)
    assert text.parameters() == list(pipe.text_encoder.parameters())
    history = train_anchor(pipe.transformer, cache, text, cfg, lambda _: None).history
    changed = [k for k, v in pipe.text_encoder.state_dict().items() if not torch.equal(before[k], v)]
    assert "shared.weight" in changed and any("layer" in k for k in changed)  # embeddings and blocks both learn
    assert history[-1]["fm"] < history[0]["fm"]
    assert not pipe.text_encoder.training and not any(p.requires_grad for p in pipe.text_encoder.parameters())


def invoke(*args):
    from cli.main import app

    return CliRunner().invoke(app, ["train", *map(str, args)])


def test_train_anchor_command_writes_the_trained_text_encoder(tmp_path):
    pipe = build_tiny_pipeline(seed=4)
    bundle = write_bundle(pipe, tmp_path / "start")
    small_cache(pipe).save(tmp_path / "cache.pt")
    common = ["--model", bundle, "--latents", tmp_path / "cache.pt", "--steps", "3", "--batch-size", "2",
              "--lr", "1e-3", "--device", "cpu"]
    for name, flags in (("frozen", []), ("trained", ["--train-text-encoder"])):
        result = invoke("anchor", *common, "--out", tmp_path / name, *flags)
        assert result.exit_code == 0, result.output
    start, frozen, trained = (encoder_weights(load_bundle(tmp_path / n, device="cpu", dtype=torch.float32))
                              for n in ("start", "frozen", "trained"))
    assert all(torch.equal(start[k], frozen[k]) for k in start)
    assert not torch.equal(start["shared.weight"], trained["shared.weight"])


def test_a_cache_of_another_version_is_a_one_line_error(tmp_path):
    pipe = build_tiny_pipeline(seed=4)
    bundle = write_bundle(pipe, tmp_path / "start")
    cache = small_cache(pipe, count=2)
    old = {name: getattr(cache, name) for name in ("latents", "anchors", "degraded", "captions")}
    torch.save(old | {"embeds": torch.zeros(2, 4, 32), "empty": torch.zeros(4, 32)}, tmp_path / "old.pt")
    result = invoke("detail", "--model", bundle, "--latents", tmp_path / "old.pt", "--out", tmp_path / "out",
                    "--device", "cpu")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "not a latent cache of this version" in lines[0], result.output
    assert not (tmp_path / "out").exists()
    cache.save(tmp_path / "new.pt")
    assert LatentCache.load(tmp_path / "new.pt").captions == cache.captions
