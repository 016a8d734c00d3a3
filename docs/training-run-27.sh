# Raw record of run 27 (docs/training.md): the whole tiny stack on a VAE that also keeps anchor-size clips. A check on
# the CPU (run 27's entry) found that the shipped VAE's round trip of a 224x128 clip keeps the object's shape in 45% of
# held-out clips (100% before the round trip, 90% at 448x256), so the anchor model learns from latents that hardly hold
# a shape. Here the shipped VAE is trained on at both sizes (--scales 1,0.5), the latent cache is made with it, the
# shipped anchor model is trained on for the new latents (run 20's settings), and the detail models get a flow-matching
# warm start from the shipped detail model and then the five branches, all with run 19's clean anchors and object weight
# (so that the detail stage reads the anchor model's shapes). Text encoder as shipped. Selection happens on the CPU.
# Runs in the background (setsid), watched by docs/training-wait.sh. A CPU check:
#   DEVICE=cpu COMPILE=off CLIPS=8 STEPS=2 BATCH=2 VAE_BATCH=2 ANCHOR_BATCH=2 W=/tmp/w27 O=/tmp/o27 bash docs/training-run-27.sh
. docs/training-driver.sh
returns transformer anchor27
returns detail_transformer shortcut fm_only uniform_k fixed_dt no_calibration
tuned_vae vae27 synthetic 200 10240 --scales 1,0.5 || exit 1
compiled anchor27 anchor --model $W/vae27 --latents $W/cache.pt --out $W/anchor27 --batch-size ${ANCHOR_BATCH:-128} \
  --lr 1e-4 --seed 15 --warmup 200 --lr-decay cosine --ema 0.99 --object-weight 4 --steps $STEPS \
  --max-seconds ${ANCHOR_SECONDS:-760} --snapshot-every ${SNAPSHOT_SECONDS:-60} &
recipe="--clean-anchor-prob 0.5 --object-weight 4"
continued_branches $W/vae27 $recipe || exit 1
wait
finish
