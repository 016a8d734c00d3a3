# Raw record of run 16 (docs/training.md): run 15's first call again, without its benchmark (reduce-overhead was
# measured fastest) and with a longer branch phase: one warm start, then the shortcut model, flow matching only and
# the three ablations side by side on one lent NVIDIA H200, in the background (setsid) so that it outlives the calls
# that watch it (docs/training-run-16-wait.sh).
set -u
W=/tmp/w; O=/tmp/o; B=pixelwizard/assets/pixelwizard-tiny
mkdir -p $W $O
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
date +%s > $W/started
train() { name=$1; shift; python3 -m cli.train "$@" --device cuda --report $W/$name.json > $W/$name.log 2>&1; }
train encode encode --model $B --out $W/cache.pt --data synthetic --release-factor --seed 1 --clips 6144 --batch-size 32 || exit 1
train detail_warmstart detail --model $B --reinit --latents $W/cache.pt --out $W/detail_warmstart --sc-prob 0 \
  --batch-size 32 --lr 3e-4 --beta1 0.9 --warmup 200 --ema 0.99 --steps 1000000 --seed 3 --max-seconds 170 \
  --compile reduce-overhead || exit 1
touch $W/warm_done
branch() { name=$1; shift; train $name detail --model $W/detail_warmstart --latents $W/cache.pt --out $W/$name \
  --batch-size 32 --lr 1e-4 --lr-decay cosine --ema 0.99 --steps 1000000 --seed 4 --max-seconds ${BRANCH_SECONDS:-1050} \
  --compile reduce-overhead "$@"; echo $? > $W/$name.exit; }
branch shortcut &
branch fm_only --sc-prob 0 &
branch uniform_k --k-sampling uniform &
branch fixed_dt --dt-grid fixed &
branch no_calibration --no-calibration &
wait
python3 - <<'PY'
from pathlib import Path
from pixelwizard.training.recipe import assemble
names = [n for n in ("shortcut", "fm_only", "uniform_k", "fixed_dt", "no_calibration")
         if Path(f"/tmp/w/{n}.exit").read_text().strip() == "0"]
assemble(Path("pixelwizard/assets/pixelwizard-tiny"), Path("/tmp/w"), Path("/tmp/o"), names)
print("assembled", names)
PY
cd $O && tar cf $W/m1.tar pixelwizard-tiny/detail_transformer variants/fm_only; tar cf $W/m2.tar variants/uniform_k variants/fixed_dt
tar cf $W/m3.tar variants/no_calibration
cd $W && tar czf $W/logs.tgz *.log *.json *.exit started
touch $W/DONE
