# Watches run 15's background job (docs/training-run-15.sh) for up to $1 seconds and copies what is ready to
# $OUT: the benchmark's results once they exist, the models and logs once the job is done.
W=/tmp/w; end=$(( $(date +%s) + $1 ))
while [ ! -f $W/DONE ] && [ $(date +%s) -lt $end ]; do sleep 5; done
echo "elapsed since start: $(( $(date +%s) - $(cat $W/started 2>/dev/null || date +%s) )) s; mode $(cat $W/mode 2>/dev/null)"
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv,noheader
tail -n 12 $W/bench.log
for f in $W/*.log; do echo "== $f"; tail -n 2 $f; done
[ -f $W/bench_done ] && cp $W/bench/training_step.json $W/bench/training_step.md $OUT/
[ -f $W/DONE ] && cp $W/m1.tar $W/m2.tar $W/m3.tar $W/logs.tgz $OUT/ && echo DONE
ls -la $OUT
