# Raw record of run 15 (docs/training.md): the job as run on one lent NVIDIA H200, from the repository root,
# in the background (setsid) so that it outlives the calls that watch it (docs/training-run-15-wait.sh).
# Run 15: first the training-step benchmark (benchmarks/training_step.py: eager against torch.compile modes),
# then run 10's detail recipe with the fastest mode that ran: one warm start, then the shortcut model, flow
# matching only and the three ablations side by side on the same GPU (SPEC.md 7's loss weight 1).
set -u
W=/tmp/w; O=/tmp/o; B=pixelwizard/assets/pixelwizard-tiny
mkdir -p $W $O
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
date +%s > $W/started
python3 -m benchmarks.training_step --modes off,default,reduce-overhead --out $W/bench > $W/bench.log 2>&1
MODE=$(python3 - <<'PY'
import json
rows = json.load(open("/tmp/w/bench/training_step.json"))["rows"]
speed = {}
for row in rows:  # a mode counts only if both its flow-matching and self-consistency steps ran
    speed.setdefault(row["compile"], []).append(row.get("steps_per_s"))
ok = {m: 0.7 / v[0] + 0.3 / v[1] for m, v in speed.items() if None not in v}  # seconds per mixed step
print(min(ok, key=ok.get) if ok else "off")
PY
)
echo $MODE > $W/mode; touch $W/bench_done
train() { name=$1; shift; python3 -m cli.train "$@" --device cuda --report $W/$name.json > $W/$name.log 2>&1; }
train encode encode --model $B --out $W/cache.pt --data synthetic --release-factor --seed 1 --clips 5120 --batch-size 32 || exit 1
train detail_warmstart detail --model $B --reinit --latents $W/cache.pt --out $W/detail_warmstart --sc-prob 0 \
  --batch-size 32 --lr 3e-4 --beta1 0.9 --warmup 200 --ema 0.99 --steps 1000000 --seed 3 --max-seconds 170 \
  --compile $MODE || exit 1
touch $W/warm_done
branch() { name=$1; shift; train $name detail --model $W/detail_warmstart --latents $W/cache.pt --out $W/$name \
  --batch-size 32 --lr 1e-4 --lr-decay cosine --ema 0.99 --steps 1000000 --seed 4 --max-seconds ${BRANCH_SECONDS:-900} \
  --compile $MODE "$@"; echo $? > $W/$name.exit; }
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
cd $W && tar czf $W/logs.tgz *.log *.json *.exit started mode bench
touch $W/DONE
