# Sourced by the run drivers (training-run-17.sh to -20.sh): the work folders, the environment and the
# helpers they share. W (work), O (float16 exports), DEVICE, COMPILE and STEPS may be set to shrink a run for a CPU check.
set -u
W=${W:-/tmp/w}; O=${O:-/tmp/o}; B=pixelwizard/assets/pixelwizard-tiny
DEVICE=${DEVICE:-cuda}; COMPILE=${COMPILE:-reduce-overhead}; STEPS=${STEPS:-1000000}
mkdir -p $W $O
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
date +%s > $W/started
train() {  # train NAME COMMAND ARGS...: one `pixelwizard train` command, its log, report and exit code
  name=$1; shift
  python3 -m cli.train "$@" --device $DEVICE --report $W/$name.json > $W/$name.log 2>&1
  rc=$?; echo $rc > $W/$name.exit; return $rc
}
compiled() {  # compiled NAME COMMAND ARGS...: train with --compile $COMPILE, again eagerly if that run fails
  name=$1; shift
  for mode in $COMPILE off; do train $name "$@" --compile $mode && return 0; done
  return 1
}
export_models() {  # export_models NAME...: each trained model (anchor, or detail with PART=detail_transformer) as float16
  # in $W/NAME.tar
  part=${PART:-transformer}
  for n in "$@"; do
    [ -d $W/$n/$part ] || continue
    python3 -c "
import torch; from diffusers import WanTransformer3DModel
from pixelwizard.models.transformer_pixelwizard import PixelWizardTransformer3DModel
cls = PixelWizardTransformer3DModel if '$part' == 'detail_transformer' else WanTransformer3DModel
cls.from_pretrained('$W/$n/$part', torch_dtype=torch.float16).save_pretrained('$O/$n')" \
      && (cd $O && tar cf $W/$n.tar $n)
  done
}
finish() {  # finish NAME...: export_models NAME..., the logs in $W/logs.tgz, then DONE
  export_models "$@"
  (cd $W && tar czf $W/logs.tgz *.log *.json *.exit started)
  touch $W/DONE
}
