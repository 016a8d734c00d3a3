# Raw record of run 19 (docs/training.md): run 16's detail recipe (a flow-matching warm start from fresh weights, then
# the shortcut model, flow matching only and the three ablations side by side on one lent NVIDIA H200) with two
# changes for the object's outline: half the samples conditioned on the clean anchor-size latent instead of SPEC.md 7's
# degraded one (--clean-anchor-prob 0.5), and the object's latent cells weighted (--object-weight 4, as the anchor
# model). Text encoder, VAE and anchor model as shipped. Selection happens afterwards, on the CPU. Runs in the
# background (setsid) so that it outlives the calls that watch it (docs/training-wait.sh). A CPU check:
#   DEVICE=cpu COMPILE=off CLIPS=8 STEPS=2 BATCH=2 W=/tmp/w19 O=/tmp/o19 bash docs/training-run-19.sh
. docs/training-driver.sh
returns detail_transformer shortcut fm_only uniform_k fixed_dt no_calibration
train encode encode --model $B --out $W/cache.pt --data synthetic --release-factor --seed 1 --clips ${CLIPS:-10240} \
  --batch-size 32 || exit 1
detail_recipe --clean-anchor-prob 0.5 --object-weight 4 || exit 1
wait
finish
