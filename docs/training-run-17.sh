# Raw record of run 17 (docs/training.md): four anchor models trained from fresh weights side by side on one lent
# NVIDIA H200 (the shipped one's size as the control, and three larger ones that keep the bundle under 30 MB), the text encoder, VAE and detail model
# left as shipped; then each of them and the shipped anchor model rendered through the whole pipeline on 40 held-out
# prompts of a tuning seed (7000, not the quality table's). Runs in the background (setsid) so that it outlives the
# calls that watch it (docs/training-wait.sh). The environment variables shrink it for a CPU check:
#   DEVICE=cpu COMPILE=off CLIPS=8 STEPS=2 BATCH=2 PROMPTS=2 W=/tmp/w17 O=/tmp/o17 bash docs/training-run-17.sh
. docs/training-driver.sh
returns transformer a4w192 a6w256 a8w224 a6w256s3
train encode encode --model $B --out $W/cache.pt --data synthetic --release-factor --seed 1 --clips ${CLIPS:-10240} \
  --batch-size 32 || exit 1
anchor() {  # anchor NAME SIZE-OPTIONS...: from fresh weights
  name=$1; shift
  compiled $name anchor --model $B --latents $W/cache.pt --out $W/$name --reinit "$@" --batch-size ${BATCH:-64} \
    --lr 3e-4 --warmup 200 --lr-decay cosine --ema 0.99 --object-weight 4 --steps $STEPS --seed 12 \
    --max-seconds ${ANCHOR_SECONDS:-960}
}
anchor a4w192 --layers 4 --heads 4 --head-dim 48 --ffn-dim 768 &
anchor a6w256 --layers 6 --heads 4 --head-dim 64 --ffn-dim 1024 &
anchor a8w224 --layers 8 --heads 4 --head-dim 56 --ffn-dim 896 &
anchor a6w256s3 --layers 6 --heads 4 --head-dim 64 --ffn-dim 1024 --shift 3 &
wait
python3 - "$W" "$B" "$DEVICE" "${PROMPTS:-40}" > $W/adherence.log 2>&1 <<'PY'
import json, sys
from pathlib import Path
import torch
from diffusers import WanTransformer3DModel
from pixelwizard.bundle import load_bundle
from pixelwizard.presets import get_preset
from pixelwizard.training.quality import adherence_table
work, bundle, device, prompts = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
pipe = load_bundle(bundle, device=device)
pipe.set_progress_bar_config(disable=True)
shipped = pipe.transformer
results = {}
for name in ("shipped", "a4w192", "a6w256", "a8w224", "a6w256s3"):
    folder = work / name / "transformer"
    if name != "shipped" and not folder.is_dir():
        continue
    pipe.transformer = shipped if name == "shipped" else WanTransformer3DModel.from_pretrained(folder).to(device).eval()
    rows, _ = adherence_table(pipe, get_preset("tiny"), prompts, [1.0], lambda m: None, seed=7000)
    results[name] = rows["pipeline, detail CFG 1"]
    print(name, results[name], flush=True)
(work / "adherence.json").write_text(json.dumps(results, indent=1))
PY
finish
