"""The training recipe's GPU plan: which command runs on which GPUs, and how it is launched."""

import sys

from pixelwizard.training.recipe import BRANCHES, Runner, gpu_plan


def test_one_gpu_shares_the_default_device_and_four_split_the_work():
    assert all(gpus == [] for gpus in gpu_plan(1).values())
    plan = gpu_plan(4)
    assert plan["vae"] == [0, 1, 2, 3] and plan["encode"] == [0] and plan["anchor"] == [0]
    assert plan["detail_warmstart"] == [1, 2, 3]
    assert [plan[name] for name in BRANCHES] == [[1], [2], [3], [3], [3]]
    assert list(BRANCHES)[:2] == ["shortcut", "fm_only"]  # the compared pair get a GPU each
    two = gpu_plan(2)
    assert two["vae"] == [0, 1] and two["detail_warmstart"] == [1] and all(two[n] == [1] for n in BRANCHES)


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
    assert fm_argv[:4] == [sys.executable, "-m", "cli.train", "detail"] and fm_env["CUDA_VISIBLE_DEVICES"] == "2"
    assert record["gpus"] == [0, 1, 2, 3] and single["gpus"] == [2]
    assert "--max-seconds" in vae_argv and vae_argv[vae_argv.index("--device") + 1] == "cuda"
