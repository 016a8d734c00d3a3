# Watches a run driver's background job (training-run-17.sh and later) for up to $1 seconds in all. Once the job is
# done, copies its trained models (float16) and logs to $OUT and prints its adherence results, if it made any. If the
# job is still running when the time is up, it exports each run's latest snapshot (training-export.sh; the last
# EXPORT_SECONDS of the $1 are kept for that) and copies those, so that a machine lost before the next call loses only
# what was trained after this one. Exits 3 at once on a machine where no job was started (the one that ran it has gone
# back), so that no device time is spent waiting.
W=${W:-/tmp/w}; end=$(( $(date +%s) + $1 - ${EXPORT_SECONDS:-45} ))
[ -f $W/started ] || { echo "no run driver was started on this machine: $W/started is missing"; exit 3; }
while [ ! -f $W/DONE ] && [ $(date +%s) -lt $end ]; do sleep 5; done
echo "elapsed since start: $(( $(date +%s) - $(cat $W/started) )) s"
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv,noheader
for f in $W/*.log; do echo "== $f"; tail -n 2 $f; done
if [ -f $W/DONE ]; then
  cp $W/*.tar $W/logs.tgz $OUT/
  [ -f $W/adherence.log ] && cat $W/adherence.log
  echo DONE
else
  . docs/training-export.sh
  export_models; pack_logs; cp $W/*.tar $W/logs.tgz $OUT/ 2>/dev/null
  echo "PARTIAL: the job is still running; the models above are its latest snapshots"
fi
ls -la $OUT
