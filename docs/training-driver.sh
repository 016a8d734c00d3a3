# Sourced by the run drivers (training-run-17.sh and later): the work folders, the environment and the
# helpers they share. W (work), O (float16 exports), DEVICE, COMPILE and STEPS may be set to shrink a run for a CPU check.
set -u
W=${W:-/tmp/w}; O=${O:-/tmp/o}; B=pixelwizard/assets/pixelwizard-tiny
DEVICE=${DEVICE:-cuda}; COMPILE=${COMPILE:-reduce-overhead}; STEPS=${STEPS:-1000000}
mkdir -p $W $O
rm -f $W/returns
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
date +%s > $W/started
python3 - > $W/versions.log 2>&1 <<'PY'  # what the run's stack was, for its record in docs/training.md
import platform, torch, diffusers, transformers
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
      f"Python {platform.python_version()}, {gpu}")
PY
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
. docs/training-export.sh
returns() {  # returns PART NAME...: the job hands back these runs' PART (a line of $W/returns; training-export.sh)
  echo "$*" >> $W/returns
}
finish() {  # the returned models, the logs in $W/logs.tgz, then DONE
  export_models
  pack_logs
  touch $W/DONE
}
replaced() {  # replaced NAME BASE PART FOLDER: the bundle BASE with FOLDER as its PART, at $W/NAME
  rm -rf $W/$1 && cp -r $2 $W/$1 && rm -r $W/$1/$3 && cp -r $4 $W/$1/$3
}
tuned_vae() {  # tuned_vae NAME DATA SECONDS CLIPS OPTIONS...: the shipped VAE trained on DATA for VAE_SECONDS (default
  # SECONDS) with OPTIONS and returned, at $W/NAME, then its latent cache (latent_cache)
  returns vae $1
  train vae vae --model $B --out $W/$1 --data $2 --lr 2e-4 --warmup 50 --lr-decay cosine --frames 9 --crop 96x160 \
    --batch-size ${VAE_BATCH:-12} --steps $STEPS --seed 0 --max-seconds ${VAE_SECONDS:-$3} "${@:5}" || return 1
  latent_cache $W/$1 $2 $4
}
latent_cache() {  # latent_cache BUNDLE DATA CLIPS OPTIONS...: $W/cache.pt, CLIPS clips (or $CLIPS) of DATA encoded with
  # BUNDLE, OPTIONS added
  train encode encode --model $1 --out $W/cache.pt --data $2 --release-factor --seed 1 --clips ${CLIPS:-$3} --batch-size 32 \
    "${@:4}"
}
grain_cache() {  # grain_cache SECONDS: the grain world's VAE at $W/vae_grain (the shipped bundle with VAE_FROM's VAE, or
  # tuned_vae's) and its latent cache $W/cache.pt (runs 25, 26)
  if [ -n "${VAE_FROM:-}" ]; then
    replaced vae_grain $B vae $VAE_FROM && latent_cache $W/vae_grain synthetic-grain 6144
  else
    tuned_vae vae_grain synthetic-grain $1 6144
  fi
}
grain_pair_start() {  # runs 26 and 30: the grain world's VAE and cache (grain_cache), then the two branches'
  # start: RESUME_FROM's shortcut/ and fm_only/ (at $W/start_NAME), WARM_FROM's detail model, or flow matching alone from
  # the shipped detail model for WARM_SECONDS (default 240) at $W/warmstart
  returns detail_transformer shortcut fm_only
  grain_cache 160 || return 1
  if [ -n "${RESUME_FROM:-}" ]; then
    grain_bundle start_shortcut $RESUME_FROM/shortcut && grain_bundle start_fm_only $RESUME_FROM/fm_only
  elif [ -n "${WARM_FROM:-}" ]; then
    grain_bundle warmstart $WARM_FROM
  else
    returns detail_transformer warmstart
    compiled warmstart detail --model $W/vae_grain --latents $W/cache.pt --out $W/warmstart --sc-prob 0 \
      --batch-size ${BATCH:-32} --lr 3e-4 --ema 0.99 --steps $STEPS --seed 3 --max-seconds ${WARM_SECONDS:-240} \
      --snapshot-every ${SNAPSHOT_SECONDS:-60}
  fi
}
branch_start() {  # branch_start NAME: with RESUME_FROM, the options that resume branch NAME from its returned model at
  # RESUME_LR (default 3e-4); given after detail_branch's own --model and --lr, so they win
  [ -n "${RESUME_FROM:-}" ] && echo "--model $W/start_$1 --lr ${RESUME_LR:-3e-4}"
}
grain_bundle() {  # grain_bundle NAME FOLDER: the grain world's bundle with FOLDER's detail model, at $W/NAME
  replaced $1 $W/vae_grain detail_transformer $2
}
detail_recipe() {  # detail_recipe OPTIONS...: runs 19 and 20's detail work, OPTIONS on every command: a flow-matching warm
  # start from fresh weights, then the shortcut model, flow matching only and the three ablations started side by side
  # in the background (the caller waits)
  compiled warmstart detail --model $B --reinit --latents $W/cache.pt --out $W/warmstart --sc-prob 0 \
    --batch-size ${BATCH:-32} --lr 3e-4 --beta1 0.9 --warmup 200 --ema 0.99 --steps $STEPS --seed 3 \
    --max-seconds ${WARM_SECONDS:-200} "$@" || return 1
  detail_branches "$@"
}
continued_branches() {  # continued_branches BUNDLE OPTIONS...: runs 27 and 28's detail work, OPTIONS on every command:
  # a flow-matching warm start from BUNDLE's detail model, then the five branches (detail_branches; the caller waits)
  compiled warmstart detail --model $1 --latents $W/cache.pt --out $W/warmstart --sc-prob 0 --batch-size ${BATCH:-32} \
    --lr 1e-4 --beta1 0.9 --warmup 100 --ema 0.99 --steps $STEPS --seed 3 --max-seconds ${WARM_SECONDS:-150} "${@:2}" \
    || return 1
  detail_branches "${@:2}"
}
detail_branches() {  # detail_branches OPTIONS...: the shortcut model, flow matching only and the three ablations from
  # $W/warmstart, side by side in the background (the caller waits), OPTIONS on each
  detail_branch shortcut "$@" &
  detail_branch fm_only --sc-prob 0 "$@" &
  detail_branch uniform_k --k-sampling uniform "$@" &
  detail_branch fixed_dt --dt-grid fixed "$@" &
  detail_branch no_calibration --no-calibration "$@" &
}
detail_branch() {  # detail_branch NAME OPTIONS...: one branch from the warm start, as run 16's branches
  name=$1; shift
  compiled $name detail --model $W/warmstart --latents $W/cache.pt --out $W/$name --batch-size ${BATCH:-32} --lr 1e-4 \
    --lr-decay cosine --ema 0.99 --steps $STEPS --seed 4 --max-seconds ${BRANCH_SECONDS:-950} \
    --snapshot-every ${SNAPSHOT_SECONDS:-60} "$@"
}
