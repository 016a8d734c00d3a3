# Raw record of run 25 (docs/training.md): run 24's comparison on the world with background grain, trained longer (over
# two calls) and faster: the shortcut model and flow matching only side by side on one lent NVIDIA H200, both from the
# shipped detail model at lr 3e-4 (run 24: 1e-4), the shortcut model with self-consistency on half of the iterations
# # (--sc-prob 0.5; SPEC.md 7: 0.3) and starts that cover the sampler's first steps (500 to 1000; SPEC.md 7: 500 to 800).
# The first job trains the VAE on the grain world (or takes VAE_FROM); a later job takes RESUME_FROM, a folder holding
# each branch's returned detail transformer (NAME/), and trains each branch on from it.
# Nothing here changes the shipped bundle. Runs in the background (setsid), watched by docs/training-wait.sh. A CPU check:
#   DEVICE=cpu COMPILE=off CLIPS=8 STEPS=2 BATCH=2 VAE_BATCH=2 W=/tmp/w25 O=/tmp/o25 bash docs/training-run-25.sh
. docs/training-driver.sh
returns detail_transformer shortcut fm_only
grain_cache 200 || exit 1
ln -sfn $W/vae_grain $W/warmstart  # without RESUME_FROM every branch starts from the shipped detail model
start() {  # start NAME: the bundle a branch starts from, --model for detail_branch
  [ -n "${RESUME_FROM:-}" ] && replaced start_$1 $W/vae_grain detail_transformer $RESUME_FROM/$1 && echo "--model $W/start_$1"
}
detail_branch shortcut --lr 3e-4 --sc-prob 0.5 --sc-starts 500,600,700,800,900,1000 $(start shortcut) &
detail_branch fm_only --lr 3e-4 --sc-prob 0 $(start fm_only) &
wait
finish
