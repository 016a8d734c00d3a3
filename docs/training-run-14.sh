# Raw record of run 14 (docs/training.md): the training job as run on one lent NVIDIA H200, from the repository
# root, in the background (setsid) so that it outlives the calls that watch it (docs/training-run-14-wait.sh).
# Run 14: the self-consistency loss weight. SPEC.md 7's L_fm + 1.0 L_sc against L_fm + 4 L_sc, from one warm
# start, with flow matching only and the three ablations (at weight 4) side by side on the same GPU.
set -u
W=/tmp/w; O=/tmp/o; B=pixelwizard/assets/pixelwizard-tiny
mkdir -p $W $O
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
train() { name=$1; shift; python3 -m cli.train "$@" --device cuda --report $W/$name.json > $W/$name.log 2>&1; }
date +%s > $W/started
train encode encode --model $B --out $W/cache.pt --data synthetic --release-factor --seed 1 --clips 5120 --batch-size 32 || exit 1
train detail_warmstart detail --model $B --reinit --latents $W/cache.pt --out $W/detail_warmstart --sc-prob 0 \
  --batch-size 32 --lr 3e-4 --beta1 0.9 --warmup 200 --ema 0.99 --steps 1000000 --seed 3 --max-seconds 170 || exit 1
touch $W/warm_done
branch() { name=$1; shift; train $name detail --model $W/detail_warmstart --latents $W/cache.pt --out $W/$name \
  --batch-size 32 --lr 1e-4 --lr-decay cosine --ema 0.99 --steps 1000000 --seed 4 --max-seconds 1000 "$@"; echo $? > $W/$name.exit; }
branch shortcut --sc-weight 4 &
branch spec_weight &
branch fm_only --sc-prob 0 &
branch uniform_k --sc-weight 4 --k-sampling uniform &
branch fixed_dt --sc-weight 4 --dt-grid fixed &
branch no_calibration --sc-weight 4 --no-calibration &
wait
python3 - <<'PY'
from pathlib import Path
from pixelwizard.training.recipe import assemble
names = [n for n in ("shortcut", "spec_weight", "fm_only", "uniform_k", "fixed_dt", "no_calibration")
         if Path(f"/tmp/w/{n}.exit").read_text().strip() == "0"]
assemble(Path("pixelwizard/assets/pixelwizard-tiny"), Path("/tmp/w"), Path("/tmp/o"), names)
print("assembled", names)
PY
cd $O && tar cf $W/m1.tar pixelwizard-tiny/detail_transformer variants/spec_weight; tar cf $W/m2.tar variants/fm_only variants/uniform_k
tar cf $W/m3.tar variants/fixed_dt variants/no_calibration
cd $W && tar czf $W/logs.tgz *.log *.json *.exit started
touch $W/DONE
