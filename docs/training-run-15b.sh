# Raw record of run 15's second call (docs/training.md): the first call's background job was lost when the machine
# went back between calls, so with the 9 minutes left, in the foreground: a smaller cache, a shorter warm start,
# then the shortcut model and flow matching only side by side, all with torch.compile's reduce-overhead mode.
set -u
W=/tmp/w; O=/tmp/o; B=pixelwizard/assets/pixelwizard-tiny
mkdir -p $W $O
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
train() { name=$1; shift; python3 -m cli.train "$@" --device cuda --report $W/$name.json > $W/$name.log 2>&1; tail -n 1 $W/$name.log; }
train encode encode --model $B --out $W/cache.pt --data synthetic --release-factor --seed 1 --clips 3072 --batch-size 32 || exit 1
train detail_warmstart detail --model $B --reinit --latents $W/cache.pt --out $W/detail_warmstart --sc-prob 0 \
  --batch-size 32 --lr 3e-4 --beta1 0.9 --warmup 200 --ema 0.99 --steps 1000000 --seed 3 --max-seconds 110 \
  --compile reduce-overhead || exit 1
branch() { name=$1; shift; train $name detail --model $W/detail_warmstart --latents $W/cache.pt --out $W/$name \
  --batch-size 32 --lr 1e-4 --lr-decay cosine --ema 0.99 --steps 1000000 --seed 4 --max-seconds 230 \
  --compile reduce-overhead "$@"; echo $? > $W/$name.exit; }
branch shortcut &
branch fm_only --sc-prob 0 &
wait
python3 -c "
from pathlib import Path
from pixelwizard.training.recipe import assemble
assemble(Path('$B'), Path('$W'), Path('$O'), ['shortcut', 'fm_only'])"
cd $O && tar cf $OUT/m1.tar pixelwizard-tiny/detail_transformer variants/fm_only
cd $W && tar czf $OUT/logs.tgz *.log *.json *.exit
ls -la $OUT
