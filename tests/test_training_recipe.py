"""The training recipe's GPU plan: which command runs on which GPUs, and how it is launched."""

import sys
from pathlib import Path

from pixelwizard.training.recipe import BRANCHES, Runner, gpu_plan


def test_one_gpu_shares_the_default_device_and_four_split_the_work():
    assert all(gpus == [] for gpus in gpu_plan(1).values())
    plan = gpu_plan(4)
    assert plan["vae"] == plan["anchor"] == plan["detail_warmstart"] == [0, 1, 2, 3] and plan["encode"] == [0]
    assert [plan[name] for name in BRANCHES] == [[0], [1], [2], [3], [3]]
    assert list(BRANCHES)[:2] == ["shortcut", "fm_only"]  # the compared pair get a GPU each
    two = gpu_plan(2, ("shortcut", "fm_only", "uniform_k"))
    assert two["anchor"] == [0, 1] and [two[n] for n in ("shortcut", "fm_only", "uniform_k")] == [[0], [1], [1]]


def test_commands_on_several_gpus_run_under_torchrun_with_their_devices(tmp_path, monkeypatch):
    launched = []

    class Recorder:
        def __init__(self, argv, stdout, stderr, env):
            launched.append((argv, env))

    monkeypatch.setattr("subprocess.Popen", Recorder)  # no GPUs here: record the launch instead
    runner = Runner(tmp_path, deadline=0.0, device="cuda", gpus=gpu_plan(4))
    _, record = runner.start("vae", ["vae", "--model", "random"], 10)
    _, single = runner.start("fm_only", ["detail"], 10)
    (vae_argv, vae_env), (fm_argv, fm_env) = launched
    assert vae_argv[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    assert vae_argv[5:8] == ["-m", "cli.train", "vae"] and vae_env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert fm_argv[:4] == [sys.executable, "-m", "cli.train", "detail"] and fm_env["CUDA_VISIBLE_DEVICES"] == "1"
    assert record["gpus"] == [0, 1, 2, 3] and single["gpus"] == [1]
    assert "--max-seconds" in vae_argv and vae_argv[vae_argv.index("--device") + 1] == "cuda"


def test_anchor_phase_then_detail_branches_then_a_later_call_adds_one_from_the_same_warm_start(tmp_path):
    """Toy sizes on the CPU, real subprocesses: call 0 trains the anchor model and the text encoder
    from the shipped bundle; call 1 trains the warm start and two branches on call 0's bundle; call 2
    trains a third branch from call 1's warm start."""
    import json

    import torch
    from safetensors.torch import load_file

    from pixelwizard.default_model import default_model_path
    from pixelwizard.training.recipe import TOY, DetailPlan, run_recipe

    shipped = default_model_path()
    anchor = run_recipe(tmp_path / "w0", tmp_path / "o0", 45, TOY, str(shipped), "anchor", 1)
    assert anchor["ok"] and [r["name"] for r in anchor["records"]] == ["encode", "anchor"]
    assert "--train-text-encoder" in anchor["records"][1]["command"] and anchor["records"][1]["steps"] >= 1
    encoder = "text_encoder/model.safetensors"
    shipped_encoder = load_file(shipped / encoder)
    start = str(tmp_path / "o0" / "anchor-bundle")
    trained_encoder = load_file(Path(start) / encoder)  # float16, as shipped
    in_training = load_file(tmp_path / "w0" / "anchor" / encoder)  # float32: even one step shows
    assert not torch.equal(shipped_encoder["shared.weight"].float(), in_training["shared.weight"])
    assert torch.equal(in_training["shared.weight"].half(), trained_encoder["shared.weight"])
    first = run_recipe(tmp_path / "w1", tmp_path / "o1", 90, TOY, start, "detail", 1,
                       DetailPlan(("shortcut", "fm_only"), steps=3))
    assert first["ok"] and first["branches"] == ["shortcut", "fm_only"]
    steps = {record["name"]: record["steps"] for record in first["records"]}
    assert set(steps) == {"encode", "detail_warmstart", "shortcut", "fm_only"}  # no VAE, no anchor training
    assert steps["shortcut"] == steps["fm_only"] == 3 and steps["detail_warmstart"] >= 1
    bundle = tmp_path / "o1" / "pixelwizard-tiny"
    shipped_anchor = load_file(Path(start) / "transformer" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(t, load_file(bundle / "transformer" / "diffusion_pytorch_model.safetensors")[k])
               for k, t in shipped_anchor.items())  # the anchor model is the start bundle's
    assert all(torch.equal(t, load_file(bundle / encoder)[k]) for k, t in trained_encoder.items())  # and the text encoder
    assert (tmp_path / "o1" / "variants" / "fm_only" / "config.json").is_file()

    second = run_recipe(tmp_path / "w2", tmp_path / "o2", 90, TOY, start, "detail", 1,
                        DetailPlan(("no_calibration",), steps=2, warmstart=tmp_path / "o1" / "warmstart",
                                   sc_starts="600,1000"), data="synthetic-random-cells", release_factor=True)
    assert second["ok"] and [r["name"] for r in second["records"]] == ["encode", "no_calibration"]
    assert second["records"][1]["steps"] == 2 and "--sc-starts 600,1000" in second["records"][1]["command"]
    assert "--sc-starts" not in " ".join(r["command"] for r in first["records"])  # the trainer's default
    assert "--data synthetic " in first["records"][0]["command"] and "--release-factor" not in first["records"][0]["command"]
    assert "--data synthetic-random-cells --release-factor " in second["records"][0]["command"]  # the other world's cache
    assert not (tmp_path / "o2" / "pixelwizard-tiny").exists()  # no shortcut branch: no bundle
    assert (tmp_path / "o2" / "variants" / "no_calibration" / "config.json").is_file()
    weights = "diffusion_pytorch_model.safetensors"
    carried = load_file(tmp_path / "o1" / "warmstart" / weights)
    used = load_file(tmp_path / "w2" / "detail_warmstart" / "detail_transformer" / weights)
    assert carried.keys() == used.keys() and all(torch.equal(carried[k], used[k]) for k in carried)
    assert json.loads((tmp_path / "o2" / "recipe.json").read_text())["warmstart"] == str(tmp_path / "o1" / "warmstart")


def test_recipe_rejects_unknown_branches_and_a_missing_warm_start(tmp_path):
    import subprocess

    def run(*args):
        return subprocess.run([sys.executable, "-m", "pixelwizard.training.recipe", "--work", str(tmp_path / "w"),
                               "--out", str(tmp_path / "o"), "--toy", *args], capture_output=True, text=True)

    bad = run("--branches", "shortcut,nope")
    assert bad.returncode == 2 and "--branches 'shortcut,nope'" in bad.stderr
    missing = run("--phases", "detail", "--start", "pixelwizard/assets/pixelwizard-tiny", "--warmstart", str(tmp_path / "none"))
    assert missing.returncode == 2 and "is not a detail model folder" in missing.stderr
    no_start = run("--phases", "detail")
    assert no_start.returncode == 2 and "--phases detail needs --start" in no_start.stderr
    world = run("--data", "mars")
    assert world.returncode == 2 and "--data: invalid choice: 'mars'" in world.stderr
    budget = run("--budget", "-100")
    assert budget.returncode == 2 and "--budget must be a positive number of seconds, got -100.0" in budget.stderr
    starts = run("--sc-starts", "abc,,-5")
    assert starts.returncode == 2 and "--sc-starts 'abc,,-5'" in starts.stderr
    range_ = run("--sc-starts", "500,1200")
    assert range_.returncode == 2 and "start timestep 1200.0 must lie in (0, 1000]" in range_.stderr
    assert not (tmp_path / "o").exists()  # nothing written


def test_all_phases_from_random_weights_train_the_detail_models_on_the_trained_text_encoder(tmp_path):
    """Toy sizes on the CPU, real subprocesses, one after the other: VAE, latents, anchor model with
    the text encoder, then the detail warm start and branches, whose bundle carries that encoder."""
    import torch
    from safetensors.torch import load_file

    from pixelwizard.training.recipe import TOY, DetailPlan, run_recipe

    summary = run_recipe(tmp_path / "w", tmp_path / "o", 100, TOY, "random", "all", 1,
                         DetailPlan(("shortcut", "fm_only"), steps=2))
    assert summary["ok"], summary
    order = [(r["name"], r["start_s"], r["end_s"]) for r in summary["records"]]
    assert [name for name, _, _ in order] == ["vae", "encode", "anchor", "detail_warmstart", "shortcut", "fm_only"]
    assert all(end <= next_start for (_, _, end), (_, next_start, _) in zip(order[:3], order[1:4]))  # sequential
    assert "--model " + str(tmp_path / "w" / "anchor") in summary["records"][3]["command"]
    encoder = "text_encoder/model.safetensors"
    trained = load_file(tmp_path / "w" / "anchor" / encoder)
    shipped = load_file(tmp_path / "o" / "pixelwizard-tiny" / encoder)
    random = load_file(tmp_path / "w" / "vae" / encoder)
    assert torch.allclose(trained["shared.weight"].half(), shipped["shared.weight"])  # float16 copy of the trained one
    assert not torch.equal(random["shared.weight"], trained["shared.weight"])
