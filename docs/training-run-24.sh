# Raw record of run 24 (docs/training.md): the shortcut model against flow matching only on the world with background
# grain (--data synthetic-grain), detail too fine and too faint to be decided before the last of the preset's 4 steps
# begins. The shipped VAE keeps little of that grain, so it is trained on first (or taken from VAE_FROM, the vae
# folder of an earlier job); then the latent cache (SPEC.md's downsample factor), and from the shipped detail model
# the shortcut model and flow matching only side by side, for the same time, on one lent NVIDIA H200. Nothing here
# changes the shipped bundle. Runs in the background (setsid) so that it outlives the calls that watch it
# (docs/training-wait.sh). A CPU check:
#   DEVICE=cpu COMPILE=off CLIPS=8 STEPS=2 BATCH=2 VAE_BATCH=2 W=/tmp/w24 O=/tmp/o24 bash docs/training-run-24.sh
. docs/training-driver.sh
returns vae vae_grain
returns detail_transformer shortcut fm_only
if [ -n "${VAE_FROM:-}" ]; then  # the shipped bundle with that VAE
  cp -r $B $W/vae_grain && rm -r $W/vae_grain/vae && cp -r $VAE_FROM $W/vae_grain/vae
else
  train vae vae --model $B --out $W/vae_grain --data synthetic-grain --lr 2e-4 --warmup 50 --lr-decay cosine \
    --frames 9 --crop 96x160 --batch-size ${VAE_BATCH:-12} --steps $STEPS --seed 0 --max-seconds ${VAE_SECONDS:-200} \
    || exit 1
fi
train encode encode --model $W/vae_grain --out $W/cache.pt --data synthetic-grain --release-factor --seed 1 \
  --clips ${CLIPS:-6144} --batch-size 32 || exit 1
ln -sfn $W/vae_grain $W/warmstart  # the branches start from the shipped detail model
BRANCH_SECONDS=${BRANCH_SECONDS:-420}
detail_branch shortcut &
detail_branch fm_only --sc-prob 0 &
wait
finish
