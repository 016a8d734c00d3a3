# Watches run 14's background job (docs/training-run-14.sh) for up to $1 seconds and copies what is ready to $OUT:
# the warm start once it exists, the models and logs once the job is done.
W=/tmp/w; end=$(( $(date +%s) + $1 ))
while [ ! -f $W/DONE ] && [ $(date +%s) -lt $end ]; do sleep 5; done
echo "elapsed since start: $(( $(date +%s) - $(cat $W/started 2>/dev/null || date +%s) )) s"; nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv,noheader
for f in $W/*.log; do echo "== $f"; tail -n 2 $f; done
if [ -f $W/DONE ]; then cp $W/m1.tar $W/m2.tar $W/m3.tar $W/logs.tgz $OUT/; echo DONE
elif [ -f $W/warm_done ]; then tar cf $OUT/warmstart.tar -C $W detail_warmstart/detail_transformer; fi
ls -la $OUT
