# Raw record of run 29 (docs/training.md): the anchor model taught the object's outline. Runs 27 and 28 found that the
# shape has to come through the anchor, and that the anchor model draws it at chance. Here the shipped anchor model is
# trained on (run 20's settings, object weight 4) on a fresh latent cache (dataset seed 29, clips it has not seen), once
# as it was and once with --outline-weight 12, which weights the latent cells the object half covers, side by side, so
# that the two differ only in that weight. Nothing else is trained; selection happens on the CPU.
# Runs in the background (setsid), watched by docs/training-wait.sh. A CPU check:
#   DEVICE=cpu COMPILE=off CLIPS=8 STEPS=2 ANCHOR_BATCH=2 W=/tmp/w29 O=/tmp/o29 bash docs/training-run-29.sh
. docs/training-driver.sh
returns transformer anchor_control anchor_outline
latent_cache $B synthetic 10240 --seed 29 || exit 1
anchor_branch() {  # anchor_branch NAME OPTIONS...: the shipped anchor model trained on, as run 20's, OPTIONS added
  name=$1; shift
  compiled $name anchor --model $B --latents $W/cache.pt --out $W/$name --batch-size ${ANCHOR_BATCH:-128} --lr 1e-4 \
    --seed 16 --warmup 200 --lr-decay cosine --ema 0.99 --object-weight 4 --steps $STEPS \
    --max-seconds ${ANCHOR_SECONDS:-900} --snapshot-every ${SNAPSHOT_SECONDS:-60} "$@"
}
anchor_branch anchor_control &
anchor_branch anchor_outline --outline-weight 12 &
wait
finish
