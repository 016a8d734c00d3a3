# Raw record of run 20 (docs/training.md): run 19 once more (its models were not kept), with one addition: the
# shipped anchor model (run 18's c6w256) trained on beside the detail work, from the end of the latent encode to the
# end of the branches, since its loss was still falling when run 18 stopped. Text encoder and VAE as shipped.
# Selection happens afterwards, on the CPU. Runs in the background (setsid) so that it outlives the calls that
# watch it (docs/training-wait.sh). A CPU check:
#   DEVICE=cpu COMPILE=off CLIPS=8 STEPS=2 BATCH=2 W=/tmp/w20 O=/tmp/o20 bash docs/training-run-20.sh
. docs/training-driver.sh
returns transformer c6w256b
returns detail_transformer shortcut fm_only uniform_k fixed_dt no_calibration
train encode encode --model $B --out $W/cache.pt --data synthetic --release-factor --seed 1 --clips ${CLIPS:-10240} \
  --batch-size 32 || exit 1
# c6w256b: the shipped anchor model trained on (no --reinit), as run 18's c6w256 at two thirds of its peak learning rate.
compiled c6w256b anchor --model $B --latents $W/cache.pt --out $W/c6w256b --batch-size ${ANCHOR_BATCH:-128} --lr 1e-4 \
  --seed 14 --warmup 200 --lr-decay cosine --ema 0.99 --object-weight 4 --steps $STEPS \
  --max-seconds ${ANCHOR_SECONDS:-1150} &
detail_recipe --clean-anchor-prob 0.5 --object-weight 4 || exit 1
wait
finish
