"""Trainers on the CPU at toy size (loss goes down), the train command's bad-input handling, the shipped bundle."""

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pixelwizard.default_model import build_tiny_pipeline, default_model_path
from pixelwizard.bundle import write_bundle
from pixelwizard.training.captions import CaptionEmbeddings
from pixelwizard.training.config import ShortcutConfig, TrainConfig, VaeLossConfig
from pixelwizard.training.datasets import SyntheticClips
from pixelwizard.training.degrade import scaled_degradation
from pixelwizard.training.latents import build_latent_cache
from pixelwizard.training.trainer import train_anchor, train_detail, train_vae


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return build_tiny_pipeline(seed=3)


@pytest.fixture(scope="module")
def cache(pipe):
    source = SyntheticClips(seed=0, size=16, frames=5, width=128, height=64)
    return build_latent_cache(pipe, source, count=16, anchor_size=(64, 32), degradation=scaled_degradation(128, 64), seed=0,
                              counterfactual=True)


def first_and_last(history, kind):
    values = [entry[kind] for entry in history if kind in entry]
    return values[0], values[-1]


def test_latent_cache_holds_every_input_of_detail_training(cache):
    assert len(cache) == 16
    assert cache.latents.shape == (16, 16, 2, 4, 8) and cache.anchors.shape == (16, 16, 2, 2, 4)
    assert cache.degraded.shape == (16, 16, 2, 2, 4)  # the token grid of a 4x8 latent with 2x2 patches
    assert len(cache.captions) == 16 and all(cache.captions)


def frozen(pipe, cache):
    return CaptionEmbeddings(pipe, cache.captions)


def test_detail_training_loss_goes_down(pipe, cache):
    cfg = TrainConfig(steps=60, batch_size=8, lr=2e-3, betas=(0.9, 0.999), log_every=10,
                      shortcut=ShortcutConfig(sc_prob=0.0)).validate()
    result = train_detail(pipe.detail_transformer, cache, frozen(pipe, cache), cfg, lambda _: None)
    first, last = first_and_last(result.history, "fm")
    assert result.steps == 60 and last < 0.7 * first


def test_flow_matching_only_keeps_a_fresh_detail_model_independent_of_dt(pipe, cache):
    """dt = 0 training must not teach the dt embedding or the injector's dt gate a constant (trainer.detail_parameters)."""
    detail = build_tiny_pipeline(seed=5).detail_transformer
    dt_weights = lambda: [p.detach().clone() for p in [*detail.dt_embedder.parameters(), *detail.anchor_injector.gate_dt.parameters()]]  # noqa: E731
    before = dt_weights()
    backbone_before = detail.proj_out.weight.detach().clone()
    cfg = TrainConfig(steps=8, batch_size=4, lr=1e-3, betas=(0.9, 0.999), log_every=4,
                      shortcut=ShortcutConfig(sc_prob=0.0)).validate()
    text = frozen(pipe, cache)
    train_detail(detail, cache, text, cfg, lambda _: None)
    assert all(torch.equal(a, b) for a, b in zip(before, dt_weights()))
    assert not torch.equal(backbone_before, detail.proj_out.weight)  # the rest did train
    x, anchor = cache.latents[:1].float(), cache.degraded[:1].float()
    t, embeds = torch.tensor([700.0]), text(torch.tensor([0]))[0]
    with torch.no_grad():
        at = lambda dt: detail(x, t, embeds, dt=torch.tensor([dt]), anchor=anchor, return_dict=False)[0]  # noqa: E731
        assert torch.equal(at(0.0), at(250.0))
    shortcut = TrainConfig(steps=4, batch_size=4, lr=1e-3, betas=(0.9, 0.999), log_every=2,
                           shortcut=ShortcutConfig(sc_prob=1.0)).validate()
    train_detail(detail, cache, text, shortcut, lambda _: None)
    assert not all(torch.equal(a, b) for a, b in zip(before, dt_weights()))  # self-consistency steps train them


def test_the_self_consistency_loss_is_scaled_by_its_weight(cache):
    """L_fm + w L_sc (SPEC.md 7 uses w = 1): the same first step, drawn alike, with w = 1 and w = 2.5."""
    import copy

    fresh = build_tiny_pipeline(seed=6)
    text = frozen(fresh, cache)
    first_sc = {}
    for weight in (1.0, 2.5):
        cfg = TrainConfig(steps=1, batch_size=4, lr=1e-4, log_every=1,
                          shortcut=ShortcutConfig(sc_prob=1.0, sc_weight=weight)).validate()
        history = train_detail(copy.deepcopy(fresh.detail_transformer), cache, text, cfg, lambda _: None).history
        first_sc[weight] = history[0]["sc"]
    assert first_sc[1.0] > 0 and first_sc[2.5] == pytest.approx(2.5 * first_sc[1.0], rel=1e-5)


def test_compiled_training_takes_the_same_steps_as_eager(cache):
    """``--compile`` (torch.compile of the transformer, for GPU throughput) changes kernels, not the training."""
    import copy

    fresh = build_tiny_pipeline(seed=7)
    text = frozen(fresh, cache)
    cfg = TrainConfig(steps=3, batch_size=4, lr=1e-3, betas=(0.9, 0.999), log_every=1, ema=0.9,
                      shortcut=ShortcutConfig(sc_prob=0.0)).validate()
    runs = {}
    for mode in ("off", "default"):
        model = copy.deepcopy(fresh.detail_transformer)
        history = train_detail(model, cache, text, dataclasses.replace(cfg, compile=mode), lambda _: None).history
        runs[mode] = ([entry["fm"] for entry in history], model.proj_out.weight.detach().clone())
    torch._dynamo.reset()
    assert runs["default"][0] == pytest.approx(runs["off"][0], rel=1e-4)
    assert torch.allclose(runs["default"][1], runs["off"][1], atol=1e-5)
    assert not torch.equal(runs["off"][1], fresh.detail_transformer.proj_out.weight)  # it did train


def test_shortcut_steps_run_and_the_anchor_model_learns(pipe, cache):
    mixed = TrainConfig(steps=6, batch_size=4, lr=1e-4, log_every=3, ema=0.9, shortcut=ShortcutConfig(sc_prob=0.5)).validate()
    history = train_detail(pipe.detail_transformer, cache, frozen(pipe, cache), mixed, lambda _: None).history
    assert any("sc" in entry for entry in history) and any("fm" in entry for entry in history)
    cfg = TrainConfig(steps=40, batch_size=8, lr=2e-3, betas=(0.9, 0.999), log_every=10).validate()
    first, last = first_and_last(train_anchor(pipe.transformer, cache, frozen(pipe, cache), cfg, lambda _: None).history, "fm")
    assert last < 0.7 * first


def test_vae_training_loss_goes_down(pipe):
    source = SyntheticClips(seed=0, size=8, frames=5, width=64, height=32)
    cfg = TrainConfig(steps=8, batch_size=2, lr=2e-3, betas=(0.9, 0.999), log_every=4).validate()
    first, last = first_and_last(train_vae(pipe.vae, source, cfg, VaeLossConfig(crop=(32, 64)), lambda _: None).history, "vae")
    assert last < first


def test_vae_training_is_fixed_by_its_seed_whatever_the_global_generator(pipe):
    """Data, crops and the posterior sample all come from generators seeded by cfg.seed."""
    source = SyntheticClips(seed=0, size=4, frames=5, width=64, height=32)
    cfg = TrainConfig(steps=2, batch_size=2, lr=2e-3, betas=(0.9, 0.999), log_every=1).validate()
    histories = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        vae = copy.deepcopy(pipe.vae)
        histories.append([e["vae"] for e in train_vae(vae, source, cfg, VaeLossConfig(crop=(32, 64)), lambda _: None).history])
    assert len(histories[0]) == 2 and histories[0] == histories[1]


def test_vae_training_steps_see_each_of_its_scales(pipe, monkeypatch):
    """--scales 1,0.5: some steps encode the clip as it is, the others area-resized to half (the anchor size)."""
    source = SyntheticClips(seed=0, size=4, frames=5, width=128, height=64)
    seen = []
    encode = pipe.vae.encode

    def recording(video, *args, **kwargs):
        seen.append(tuple(video.shape[-2:]))
        return encode(video, *args, **kwargs)

    monkeypatch.setattr(pipe.vae, "encode", recording)
    cfg = TrainConfig(steps=12, batch_size=1, lr=1e-4, betas=(0.9, 0.999), log_every=4).validate()
    train_vae(pipe.vae, source, cfg, VaeLossConfig(crop=(64, 128), scales=(1.0, 0.5)), lambda _: None)
    assert set(seen) == {(64, 128), (32, 64)}


@pytest.fixture(scope="module")
def bundle_and_cache(tmp_path_factory, pipe, cache):
    root = tmp_path_factory.mktemp("train")
    cache.save(root / "cache.pt")
    return write_bundle(pipe, root / "bundle"), root / "cache.pt"


def invoke(*args):
    from cli.main import app

    return CliRunner().invoke(app, ["train", *map(str, args)])


def test_train_command_writes_a_bundle_and_a_report(bundle_and_cache, tmp_path):
    bundle, cache_file = bundle_and_cache
    out = tmp_path / "out"
    for _ in range(2):  # the second run replaces the first one's bundle
        result = invoke("detail", "--model", bundle, "--latents", cache_file, "--out", out, "--steps", "3",
                        "--batch-size", "2", "--device", "cpu", "--report", tmp_path / "r.json", "--sc-prob", "0.5",
                        "--sc-weight", "3")
        assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert (out / "detail_transformer").is_dir() and report["steps"] == 3
    # the settings are the command's options, nothing else
    assert report["settings"]["sc_prob"] == 0.5 and report["settings"]["sc_weight"] == 3
    assert "ShortcutConfig" not in report["settings"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["detail", "--latents", "{missing}", "--lam", "0.7"], "does not exist"),
        (["detail", "--latents", "{cache}", "--sc-starts", ""], "dt candidate set is empty"),
        (["detail", "--latents", "{cache}", "--lam", "-1"], "lambda must be >= 0"),
        (["detail", "--latents", "{cache}", "--dt-levels", "0"], "dt candidate set is empty"),
        (["detail", "--latents", "{cache}", "--sc-weight", "-2"], "loss weight must be > 0"),
        (["detail", "--latents", "{cache}", "--compile", "fastest"], "compile must be one of"),
        (["detail", "--latents", "{cache}", "--clean-anchor-prob", "1.5"], "clean anchor share must lie in [0, 1]"),
        (["detail", "--latents", "{cache}", "--object-weight", "-1"], "object weight must be >= 0"),
        (["anchor", "--latents", "{cache}", "--outline-weight", "-1"], "outline weight must be >= 0"),
        (["detail", "--latents", "{cache}", "--counterfactual-anchor-prob", "-0.1"],
         "counterfactual anchor share must lie in [0, 1]"),
        (["encode", "--data", "{good}", "--counterfactual-anchors"], "needs synthetic data"),
        (["anchor", "--latents", "{cache}", "--snapshot-every", "0"], "snapshot interval must be > 0 seconds"),
        (["vae", "--scales", "1,0"], "scale 0.0 must lie in (0, 1]"),
        (["anchor", "--latents", "{cache}", "--layers", "6"], "add --reinit"),
        (["anchor", "--latents", "{cache}", "--reinit", "--head-dim", "7"], "head dim must be an even number"),
        (["anchor", "--latents", "{cache}", "--reinit", "--layers", "0"], "layers must be at least 1"),
        (["vae", "--scales", "1,half"], "bad VAE scales"),
        (["vae", "--frames", "8"], "frame count 8 is not of the form 4k+1"),
        (["vae", "--clips", "0"], "clips must be at least 1"),
        (["vae", "--width", "10"], "width 10 is not a positive multiple of 16"),
        (["detail", "--latents", "{cache}", "--lr", "inf"], "lr must be a finite number"),
        (["detail", "--latents", "{cache}", "--dt-levels", "1100"], "dt levels must be at most 12"),
        (["detail", "--latents", "{cache}", "--dt-grid", "fixed", "--sc-starts", "30"], "the dt candidate set is empty"),
        (["detail", "--latents", "{garbage}"], "is not a readable latent cache"),
        (["detail", "--latents", "{hi}"], "is not a readable latent cache"),  # unpickling "hi" raises KeyError
        (["encode", "--max-seconds", "-5"], "max seconds must be > 0"),
        (["encode", "--data", "{missing}"], "does not exist"),
        (["encode", "--data", "{bad}"], "captions.jsonl:2:"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_the_checkpoint(bundle_and_cache, tmp_path, args, message):
    import shutil

    import numpy as np

    from pixelwizard.video import encode_video

    bundle, cache_file = bundle_and_cache
    bad = tmp_path / "captions.jsonl"
    bad.write_text('{"video": "a.mp4", "caption": "x"}\n{"video": \n')
    encode_video(iter(np.zeros((17, 32, 64, 3), dtype=np.uint8)), tmp_path / "a.mp4", fps=8)  # the tiny preset's 17
    good = tmp_path / "good.jsonl"
    good.write_text('{"video": "a.mp4", "caption": "x"}\n')
    if args[0] == "encode":  # the previous output is a latent cache file
        out = previous = Path(shutil.copy(cache_file, tmp_path / "cache.pt"))
    else:  # a bundle, with a file of ours inside that a replacement would drop
        out = shutil.copytree(bundle, tmp_path / "out")
        previous = out / "keep.txt"
        previous.write_text("previous checkpoint")
    before = previous.read_bytes()
    garbage, hi = tmp_path / "garbage.pt", tmp_path / "hi.pt"
    garbage.write_text("garbage")
    hi.write_text("hi\n")
    fill = dict(missing=tmp_path / "missing.jsonl", cache=cache_file, bad=bad, good=good, garbage=garbage, hi=hi)
    args = [a.format(**fill) for a in args]
    result = invoke(*args, "--model", bundle, "--out", out, "--device", "cpu")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    assert previous.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "option", "where"),
    [
        (["vae", "--steps", "1"], "--out", "locked"),
        (["encode", "--clips", "1"], "--out", "locked"),
        (["encode", "--clips", "1"], "--report", "locked"),
        (["detail", "--latents", "{cache}", "--steps", "1"], "--out", "locked"),
        (["anchor", "--latents", "{cache}", "--steps", "1"], "--report", "locked"),
        (["detail", "--latents", "{cache}", "--steps", "1"], "--out", "under a file"),
        (["vae", "--steps", "1"], "--report", "a folder"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_any_work(bundle_and_cache, tmp_path, locked_folder, args,
                                                                     option, where):
    """Each had failed only once the run had trained, with a traceback, its result lost."""
    bundle, cache_file = bundle_and_cache
    note = tmp_path / "note.txt"
    note.write_text("mine")
    destination = {"locked": locked_folder / "result", "under a file": note / "result", "a folder": tmp_path}[where]
    paths = {"--out": tmp_path / "out", "--report": tmp_path / "report.json", option: destination}
    result = invoke(*[a.format(cache=cache_file) for a in args], "--model", bundle, "--device", "cpu",
                    *[arg for pair in paths.items() for arg in pair])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    expected = {"locked": f"error: {option} {destination} cannot be written: {locked_folder} is not writable",
                "under a file": f"error: {option} {destination} cannot be made: {note} is not a folder",
                "a folder": f"error: {option} {destination} is a folder; a report is one JSON file"}[where]
    assert result.exit_code == 2 and lines == [expected], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked", "note.txt"] and not any(locked_folder.iterdir())


@pytest.mark.parametrize("target", ["weights of the model", "captions", "a note"])
def test_encode_replaces_only_a_latent_cache(bundle_and_cache, tmp_path, target):
    """encode's --out may be an earlier cache (test_bad_input_... writes over one), never any other file: not the
    weights of the very bundle it reads, not its own captions file."""
    import shutil

    bundle = Path(shutil.copytree(bundle_and_cache[0], tmp_path / "model"))
    captions, note = tmp_path / "captions.jsonl", tmp_path / "note.txt"
    captions.write_text('{"video": "a.mp4", "caption": "x"}\n')
    note.write_text("mine")
    out = {"weights of the model": bundle / "vae" / "diffusion_pytorch_model.safetensors", "captions": captions,
           "a note": note}[target]
    before = out.read_bytes()
    result = invoke("encode", "--model", bundle, "--out", out, "--clips", "2", "--device", "cpu")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and lines == [f"error: --out: {out} exists and is not a latent cache; refusing to "
                                               "replace it"], result.output
    assert out.read_bytes() == before


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("folder", "error: --out: {out} exists and is not a model bundle"),
        ("latents", "error: --out: {out} exists and is not a model bundle"),
        ("dot", "error: --out: . names no folder"),
        ("bundle holding the latents", "error: --latents {latents} lies inside --out {out}"),
    ],
)
def test_out_that_is_not_a_bundle_or_holds_the_input_is_refused_before_any_work(bundle_and_cache, tmp_path, target,
                                                                               message):
    import shutil

    bundle, cache_file = bundle_and_cache
    work = shutil.copytree(bundle, tmp_path / "work") if target.startswith("bundle") else tmp_path / "work"
    work.mkdir(exist_ok=True)
    notes = work / "notes.txt"
    notes.write_text("mine")
    latents = Path(shutil.copy(cache_file, work / "cache.pt"))
    out = {"folder": work, "latents": latents, "dot": Path("."), "bundle holding the latents": work}[target]
    result = invoke("detail", "--latents", latents, "--model", bundle, "--out", out, "--steps", "1", "--device", "cpu")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(message.format(out=out, latents=latents)), lines[0]
    assert notes.read_text() == "mine" and latents.is_file()


def test_a_diverged_run_writes_nothing_and_exits_1(bundle_and_cache, tmp_path):
    bundle, cache_file = bundle_and_cache
    out = tmp_path / "out"
    result = invoke("detail", "--latents", cache_file, "--model", bundle, "--out", out, "--steps", "2", "--batch-size", "2",
                    "--lr", "1e30", "--device", "cpu")
    assert result.exit_code == 1 and "training diverged" in result.stderr, result.output
    assert not out.exists()


def test_the_default_model_is_the_shipped_trained_bundle():
    from pixelwizard.bundle import check_bundle

    path = default_model_path()
    assert path.name == "pixelwizard-tiny" and check_bundle(path) == path
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert size <= 30 * 2**20
    index = json.loads((path / "model_index.json").read_text())
    assert index["detail_transformer"][1] == "PixelWizardTransformer3DModel"
    # build_tiny_pipeline(size="trained") builds both transformers in the shapes the bundle ships
    fresh = build_tiny_pipeline(size="trained")
    for name in ("transformer", "detail_transformer"):
        shipped = json.loads((path / name / "config.json").read_text())
        built = getattr(fresh, name).config
        for key in ("num_layers", "num_attention_heads", "attention_head_dim", "ffn_dim", "in_channels", "text_dim"):
            assert shipped[key] == built[key], (name, key)


def test_reinit_starts_the_detail_model_from_fresh_weights_and_keeps_the_rest(bundle_and_cache, tmp_path):
    from pixelwizard.bundle import load_bundle

    bundle, cache_file = bundle_and_cache
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = invoke("detail", "--model", bundle, "--latents", cache_file, "--out", out, "--steps", "1",
                        "--batch-size", "2", "--device", "cpu", "--reinit", "--seed", "5", "--lr", "1e-9")
        assert result.exit_code == 0, result.output
        outs.append(load_bundle(out, device="cpu", dtype=torch.float32))
    start = load_bundle(bundle, device="cpu", dtype=torch.float32)
    fresh, again = (dict(p.detail_transformer.named_parameters()) for p in outs)
    before = dict(start.detail_transformer.named_parameters())
    name = "blocks.0.attn1.to_q.weight"
    assert not torch.allclose(fresh[name], before[name])  # new weights ...
    assert torch.allclose(fresh[name], again[name])  # ... drawn from the seed
    for component in ("vae", "transformer"):  # the rest of the bundle is carried over untouched
        for (key, a), b in zip(getattr(outs[0], component).state_dict().items(), getattr(start, component).state_dict().values()):
            assert torch.equal(a, b), f"{component}.{key}"


def test_reinit_with_a_size_builds_a_new_anchor_model_and_keeps_the_rest(bundle_and_cache, tmp_path):
    from pixelwizard.bundle import load_bundle

    bundle, cache_file = bundle_and_cache
    out = tmp_path / "wider"
    result = invoke("anchor", "--model", bundle, "--latents", cache_file, "--out", out, "--steps", "2",
                    "--batch-size", "2", "--device", "cpu", "--reinit", "--layers", "3", "--heads", "2",
                    "--head-dim", "16", "--ffn-dim", "40", "--seed", "5")
    assert result.exit_code == 0, result.output
    trained, start = load_bundle(out, device="cpu"), load_bundle(bundle, device="cpu")
    config = trained.transformer.config
    assert (config.num_layers, config.num_attention_heads, config.attention_head_dim, config.ffn_dim) == (3, 2, 16, 40)
    assert config.in_channels == start.transformer.config.in_channels and len(trained.transformer.blocks) == 3
    for component in ("vae", "detail_transformer", "text_encoder"):  # the rest of the bundle is carried over untouched
        for (key, a), b in zip(getattr(trained, component).state_dict().items(), getattr(start, component).state_dict().values()):
            assert torch.equal(a, b), f"{component}.{key}"


def test_synthetic_caches_carry_object_masks_and_the_anchor_object_weight_uses_them(pipe, cache):
    assert cache.anchor_masks.shape == (16, 1, 2, 2, 4)  # one channel on the anchor latent grid
    assert 0 < cache.anchor_masks.float().mean() < 1 and cache.anchor_masks.max() <= 1
    cfg = TrainConfig(steps=30, batch_size=8, lr=2e-3, betas=(0.9, 0.999), log_every=10, object_weight=4.0).validate()
    first, last = first_and_last(train_anchor(pipe.transformer, cache, frozen(pipe, cache), cfg, lambda _: None).history, "fm")
    assert last < first
    without = dataclasses.replace(cache, anchor_masks=None)
    with pytest.raises(ValueError, match="object masks"):
        train_anchor(pipe.transformer, without, frozen(pipe, cache), cfg, lambda _: None)


def test_the_anchor_outline_weight_weights_the_half_covered_cells_and_learns(pipe, cache, monkeypatch):
    """The loss gets 1 + 4c(1 - c) x outline weight per cell from the cache's masks, and the loss still goes down."""
    import pixelwizard.training.trainer as trainer

    seen = []
    real = trainer.weighted_mse
    monkeypatch.setattr(trainer, "weighted_mse", lambda *a: seen.append(a[3]) or real(*a))
    cfg = TrainConfig(steps=30, batch_size=8, lr=2e-3, betas=(0.9, 0.999), log_every=10, outline_weight=6.0,
                      seed=5).validate()
    first, last = first_and_last(train_anchor(pipe.transformer, cache, frozen(pipe, cache), cfg, lambda _: None).history, "fm")
    assert last < first and len(seen) == 30
    indices = torch.randint(len(cache), (cfg.batch_size,), generator=torch.Generator().manual_seed(cfg.seed))
    c = cache.anchor_masks[indices].float()
    assert torch.allclose(seen[0], 1 + 24 * c * (1 - c))
    assert float(seen[0].max()) > 1  # the tiny cache's objects do have partly covered cells
    without = dataclasses.replace(cache, anchor_masks=None)
    with pytest.raises(ValueError, match="object or outline weight needs object masks"):
        train_anchor(pipe.transformer, without, frozen(pipe, cache), cfg, lambda _: None)


def train_detail_recording_anchors(pipe, cache, cfg):
    """train_detail's result and every anchor the detail model was conditioned on, in call order."""
    seen = []
    hook = pipe.detail_transformer.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(kwargs["anchor"].detach().clone()), with_kwargs=True)
    try:
        return train_detail(pipe.detail_transformer, cache, frozen(pipe, cache), cfg, lambda _: None), seen
    finally:
        hook.remove()


def test_detail_training_on_clean_anchors_with_object_and_outline_weights_feeds_them_and_learns(pipe, cache):
    """--clean-anchor-prob 1 conditions every sample on the cache's clean anchor latent, never the degraded one."""
    cfg = TrainConfig(steps=40, batch_size=8, lr=2e-3, betas=(0.9, 0.999), log_every=10, cfg_dropout=0.0,
                      clean_anchor_prob=1.0, object_weight=4.0, outline_weight=2.0,
                      shortcut=ShortcutConfig(sc_prob=0.0)).validate()
    result, seen = train_detail_recording_anchors(pipe, cache, cfg)
    first, last = first_and_last(result.history, "fm")
    assert result.steps == 40 and last < 0.8 * first
    clean, degraded = cache.anchors.float().flatten(1), cache.degraded.float().flatten(1)
    assert not torch.equal(clean, degraded)
    for sample in torch.cat(seen).flatten(1):
        assert torch.isclose(clean, sample, atol=1e-3).all(1).any()
        assert not torch.isclose(degraded, sample, atol=1e-3).all(1).any()
    without = dataclasses.replace(cache, anchor_masks=None)
    with pytest.raises(ValueError, match="object masks"):
        train_detail(pipe.detail_transformer, without, frozen(pipe, cache), cfg, lambda _: None)


def test_counterfactual_anchors_replace_their_share_of_samples_keeping_caption_and_target(pipe, cache):
    """--counterfactual-anchor-prob 1 conditions every sample on the object redrawn in another shape."""
    assert cache.counterfactual.shape == cache.anchors.shape and not torch.equal(cache.counterfactual, cache.anchors)
    cfg = TrainConfig(steps=30, batch_size=8, lr=2e-3, betas=(0.9, 0.999), log_every=10, cfg_dropout=0.0,
                      clean_anchor_prob=0.5, counterfactual_anchor_prob=1.0,
                      shortcut=ShortcutConfig(sc_prob=0.0)).validate()
    result, seen = train_detail_recording_anchors(pipe, cache, cfg)
    first, last = first_and_last(result.history, "fm")
    assert result.steps == 30 and last < first
    others = cache.counterfactual.float().flatten(1)
    for sample in torch.cat(seen).flatten(1):
        assert torch.isclose(others, sample, atol=1e-3).all(1).any()
    with pytest.raises(ValueError, match="counterfactual-anchors"):
        train_detail(pipe.detail_transformer, dataclasses.replace(cache, counterfactual=None), frozen(pipe, cache), cfg,
                     lambda _: None)


def test_counterfactual_anchors_missing_from_the_cache_is_a_one_line_error(bundle_and_cache, cache, tmp_path):
    bundle, _ = bundle_and_cache
    dataclasses.replace(cache, counterfactual=None).save(tmp_path / "plain.pt")
    result = invoke("detail", "--model", bundle, "--latents", tmp_path / "plain.pt", "--out", tmp_path / "out",
                    "--counterfactual-anchor-prob", "0.3", "--device", "cpu")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "--counterfactual-anchors" in lines[0], result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("command", "option"), [("anchor", "--object-weight"), ("detail", "--object-weight"),
                                                 ("anchor", "--outline-weight"), ("detail", "--outline-weight")])
def test_object_weight_without_masks_is_a_one_line_error(bundle_and_cache, cache, tmp_path, command, option):
    bundle, _ = bundle_and_cache
    dataclasses.replace(cache, anchor_masks=None).save(tmp_path / "real.pt")
    result = invoke(command, "--model", bundle, "--latents", tmp_path / "real.pt", "--out", tmp_path / "out",
                    option, "2", "--device", "cpu")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "needs object masks" in lines[0], result.output
    assert not (tmp_path / "out").exists()


def test_two_process_data_parallel_run_stops_together_on_its_time_limit(bundle_and_cache, tmp_path):
    """Real torchrun, two CPU processes over gloo: the ranks agree on the time limit (else one hangs or fails)."""
    import os
    import subprocess
    import sys

    bundle, cache_file = bundle_and_cache
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "cli.train",
               "detail", "--model", str(bundle), "--latents", str(cache_file), "--out", str(tmp_path / "out"),
               "--steps", "100000", "--max-seconds", "4", "--batch-size", "2", "--lr-decay", "cosine",
               "--device", "cpu", "--report", str(tmp_path / "r.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads((tmp_path / "r.json").read_text())["steps"] > 1
    assert (tmp_path / "out" / "detail_transformer").is_dir()


def test_a_run_killed_mid_way_leaves_its_latest_snapshot_and_no_output(bundle_and_cache, tmp_path):
    """A real `train detail` process, killed with SIGKILL once it has written a snapshot: the snapshot is a
    whole bundle that loads and holds trained weights, and the run's --out was never written."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from pixelwizard.bundle import load_bundle

    bundle, cache_file = bundle_and_cache
    out = tmp_path / "out"
    command = [sys.executable, "-m", "cli.train", "detail", "--model", str(bundle), "--latents", str(cache_file),
               "--out", str(out), "--steps", "1000000", "--batch-size", "2", "--ema", "0.9", "--snapshot-every", "1",
               "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    snapshot = tmp_path / "out.snapshot"
    try:
        deadline = time.monotonic() + 240
        while not (snapshot / "detail_transformer").is_dir() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert process.poll() is None, process.stdout.read()[-2000:]
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
    assert (snapshot / "detail_transformer").is_dir() and not out.exists()
    assert "snapshot after" in process.stdout.read()
    start, saved = load_bundle(bundle), load_bundle(snapshot)
    changed = [name for name, p in saved.detail_transformer.named_parameters()
               if not torch.equal(p, dict(start.detail_transformer.named_parameters())[name])]
    assert changed, "the snapshot holds the starting weights"
    assert all(torch.equal(p, dict(start.transformer.named_parameters())[name])
               for name, p in saved.transformer.named_parameters())
