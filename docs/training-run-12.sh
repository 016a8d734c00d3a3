# Raw record of run 12 (docs/training.md): the script as run on the lent GPU machine, from the repository root,
# with the wheels of diffusers 0.42.1, importlib_metadata and zipp in .whl/ and $OUT the folder that came back.
# Run 12: run 10's call 1 (warm start on 2 GPUs) with self-consistency starts up to 1000; ablations and extras on GPUs 2-7.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s); BUDGET=500; STARTS=500,600,700,800,900,1000
python3 -m pixelwizard.training.recipe --phases detail --start pixelwizard/assets/pixelwizard-tiny --release-factor \
  --sc-starts $STARTS --branches shortcut,fm_only --gpus 2 --work /tmp/w --out /tmp/o --budget $BUDGET > /tmp/recipe.log 2>&1 &
RECIPE=$!
extra() {  # NAME GPU FLAGS...: a detail branch outside the recipe, from its warm start, ending with the recipe's branches
  local name=$1 gpu=$2; shift 2
  local left=$(( T0 + BUDGET - $(date +%s) - 15 ))
  echo "extra $name on GPU $gpu: --max-seconds $left $*" >> /tmp/extras.log
  CUDA_VISIBLE_DEVICES=$gpu OMP_NUM_THREADS=2 python3 -m cli.train detail --model /tmp/w/detail_warmstart \
    --latents /tmp/w/cache.pt --out /tmp/w/$name --batch-size 32 --lr 1e-4 --lr-decay cosine --ema 0.99 \
    --steps 1000000 --seed 4 --device cuda --max-seconds $left --report /tmp/w/$name.json "$@" > /tmp/w/$name.log 2>&1
  echo "extra $name exit $?" >> /tmp/extras.log
}
while [ ! -f /tmp/o/warmstart/config.json ] && kill -0 $RECIPE 2>/dev/null; do sleep 2; done
sleep 4
if [ -f /tmp/o/warmstart/config.json ]; then
  extra uniform_k 2 --sc-starts $STARTS --k-sampling uniform &
  extra fixed_dt 3 --sc-starts $STARTS --dt-grid fixed &
  extra no_calibration 4 --sc-starts $STARTS --no-calibration &
  extra spec_starts 5 &
  extra lam_035 6 --sc-starts $STARTS --lam 0.35 &
  extra levels8 7 --sc-starts $STARTS --dt-levels 8 &
fi
wait
echo "all done after $(( $(date +%s) - T0 )) s" >> /tmp/extras.log
python3 -c "
import torch
from pathlib import Path
from pixelwizard.models.transformer_pixelwizard import PixelWizardTransformer3DModel as M
for n in ['uniform_k', 'fixed_dt', 'no_calibration', 'spec_starts', 'lam_035', 'levels8']:
    if Path(f'/tmp/w/{n}/detail_transformer').is_dir():
        M.from_pretrained(f'/tmp/w/{n}/detail_transformer', torch_dtype=torch.float16).save_pretrained(f'/tmp/o/variants/{n}', safe_serialization=True)
" > /tmp/w/convert.log 2>&1
echo "converted after $(( $(date +%s) - T0 )) s" >> /tmp/extras.log
cp /tmp/recipe.log /tmp/extras.log /tmp/o/recipe.json /tmp/w/ 2>/dev/null; cp /tmp/o/recipe.json $OUT/
tar czf $OUT/logs.tgz -C /tmp/w $(cd /tmp/w && ls *.log *.json)
cd /tmp/o
tar cf $OUT/m1.tar pixelwizard-tiny/detail_transformer variants/fm_only
tar cf $OUT/m2.tar variants/uniform_k variants/fixed_dt
tar cf $OUT/m3.tar variants/no_calibration variants/spec_starts
tar cf $OUT/m4.tar variants/lam_035 variants/levels8
ls -la $OUT
