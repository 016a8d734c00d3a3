#!/usr/bin/env bash
# The benchmark suite in one command (docs/performance.md).
#
#   bash benchmarks/run.sh [PART ...]        PART: ceilings, transformer, pipeline, decode, end_to_end,
#                                            report (default: all but end_to_end)
#
# Installs the wheels carried in .whl/ when diffusers is missing (the GPU machine has torch and
# transformers but not diffusers), then writes JSON, logs and results.md to $OUT, or to
# benchmarks/results/ when $OUT is unset. Extra arguments for a part: TRANSFORMER_ARGS,
# PIPELINE_ARGS (e.g. PIPELINE_ARGS="--tiny --device cpu" for a CPU dry run), PIPELINE_NAME (file stem),
# E2E_ARGS (e.g. E2E_ARGS="--presets 2k --repeat 2"), E2E_NAME (file stem).
set -uo pipefail
cd "$(dirname "$0")/.."

out="${OUT:-benchmarks/results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1

if ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "could not install the wheels in .whl/"; exit 1; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  chmod +x /tmp/site/imageio_ffmpeg/binaries/* 2>/dev/null
fi
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv

parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(ceilings transformer pipeline decode report)
status=0
for part in "${parts[@]}"; do
  case "$part" in
    ceilings) python3 -m benchmarks.ceilings --out "$out/ceilings.json" ${CEILINGS_ARGS:-} 2>&1 | tee "$out/ceilings.log" ;;
    transformer) python3 -m benchmarks.transformer --out "$out/transformer.json" ${TRANSFORMER_ARGS:-} 2>&1 \
      | tee "$out/transformer.log" ;;
    pipeline) name="${PIPELINE_NAME:-pipeline}"
      python3 -m benchmarks.pipeline --out "$out/$name.json" ${PIPELINE_ARGS:-} 2>&1 | tee "$out/$name.log" ;;
    end_to_end) name="${E2E_NAME:-end_to_end}"
      python3 -m benchmarks.end_to_end --out "$out/$name.json" ${E2E_ARGS:-} 2>&1 | tee "$out/$name.log" ;;
    decode) python3 -m benchmarks.decode --out "$out/decode.json" 2>&1 | tee "$out/decode.log" ;;
    report) python3 -m benchmarks.report --results "$out" --out "$out/results.md" 2>&1 | tee "$out/report.log" ;;
    *) echo "unknown part $part"; exit 2 ;;
  esac
  rc=${PIPESTATUS[0]}
  [ "$rc" -ne 0 ] && { echo "part $part failed with exit code $rc"; status=$rc; }
done
exit $status
