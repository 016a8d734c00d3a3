# Raw record of run 18 (docs/training.md): the shipped 6-layer anchor model (run 17's a6w256) trained on for a whole
# session's device time, next to the same size from fresh weights at twice the batch, both on a latent cache of twice
# run 17's clips; the text encoder, VAE and detail model left as shipped. Selection happens afterwards, on the CPU
# (docs/training.md, run 18). Runs in the background (setsid) so that it outlives the calls that watch it
# (docs/training-wait.sh). The environment variables shrink it for a CPU check:
#   DEVICE=cpu COMPILE=off CLIPS=8 STEPS=2 BATCH=2 W=/tmp/w18 O=/tmp/o18 bash docs/training-run-18.sh
. docs/training-driver.sh
returns transformer c6w256 f6w256
train encode encode --model $B --out $W/cache.pt --data synthetic --release-factor --seed 1 --clips ${CLIPS:-20480} \
  --batch-size 32 || exit 1
anchor() {  # anchor NAME OPTIONS...
  name=$1; shift
  compiled $name anchor --model $B --latents $W/cache.pt --out $W/$name "$@" --warmup 200 --lr-decay cosine \
    --ema 0.99 --object-weight 4 --steps $STEPS --max-seconds ${ANCHOR_SECONDS:-1000}
}
# c6w256: the shipped anchor model, trained on (no --reinit) at half run 17's peak learning rate.
anchor c6w256 --batch-size ${BATCH:-128} --lr 1.5e-4 --seed 13 &
# f6w256: the same size from fresh weights, batch 128.
anchor f6w256 --reinit --layers 6 --heads 4 --head-dim 64 --ffn-dim 1024 --batch-size ${BATCH:-128} --lr 3e-4 --seed 12 &
wait
finish
