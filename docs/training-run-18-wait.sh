# Watches run 18's background job (docs/training-run-18.sh) for up to $1 seconds; once the job is done, copies the
# anchor models (float16) and the logs to $OUT.
W=/tmp/w; end=$(( $(date +%s) + $1 ))
while [ ! -f $W/DONE ] && [ $(date +%s) -lt $end ]; do sleep 5; done
echo "elapsed since start: $(( $(date +%s) - $(cat $W/started 2>/dev/null || date +%s) )) s"
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv,noheader
for f in $W/*.log; do echo "== $f"; tail -n 2 $f; done
[ -f $W/DONE ] && cp $W/*.tar $W/logs.tgz $OUT/ && echo DONE
ls -la $OUT
