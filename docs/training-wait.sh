# Watches a run driver's background job (training-run-17.sh to -20.sh) for up to $1 seconds; once the job is done,
# copies its trained models (float16) and logs to $OUT and prints its adherence results, if it made any. Exits 3 at
# once on a machine where no job was started (the one that ran it has gone back), so that no device time is spent waiting.
W=/tmp/w; end=$(( $(date +%s) + $1 ))
[ -f $W/started ] || { echo "no run driver was started on this machine: $W/started is missing"; exit 3; }
while [ ! -f $W/DONE ] && [ $(date +%s) -lt $end ]; do sleep 5; done
echo "elapsed since start: $(( $(date +%s) - $(cat $W/started) )) s"
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv,noheader
for f in $W/*.log; do echo "== $f"; tail -n 2 $f; done
if [ -f $W/DONE ]; then
  cp $W/*.tar $W/logs.tgz $OUT/
  [ -f $W/adherence.log ] && cat $W/adherence.log
  echo DONE
fi
ls -la $OUT
