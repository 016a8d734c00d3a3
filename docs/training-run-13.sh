# Raw record of run 13 (docs/training.md): the script as run on the lent GPU machine, from the repository root,
# with the wheels of diffusers 0.42.1, importlib_metadata and zipp in .whl/ and $OUT the folder that came back.
# Run 13: one GPU, run 10's setting (SPEC.md 7's starts): shortcut, flow matching only and uniform k side by side.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/device.txt
python3 -m pixelwizard.training.recipe --phases detail --start pixelwizard/assets/pixelwizard-tiny --release-factor \
  --branches shortcut,fm_only,uniform_k --gpus 1 --work /tmp/w --out /tmp/o --budget 540 > /tmp/w-recipe.log 2>&1
cp /tmp/w-recipe.log /tmp/w/recipe.log; cp /tmp/o/recipe.json /tmp/w/; cp /tmp/o/recipe.json $OUT/
tar czf $OUT/logs.tgz -C /tmp/w $(cd /tmp/w && ls *.log *.json)
cd /tmp/o && tar cf $OUT/m1.tar pixelwizard-tiny/detail_transformer variants/fm_only && tar cf $OUT/m2.tar variants/uniform_k
ls -la $OUT
