# alternate: tree A = HEAD before the change (before.tar), tree B = this checkout; $1 rounds
set -u
ROOT=$PWD
rm -rf /tmp/a && mkdir /tmp/a && tar -xf scratch/q30/before.tar -C /tmp/a
for r in $(seq 1 $1); do
  for t in A B; do
    if [ $t = A ]; then P=/tmp/a; else P=$ROOT; fi
    (cd $P && export PYTHONPATH=/tmp/site:$P NORMGEN_CACHE_DIR=/tmp/ngc$t; timeout 300 python3 $ROOT/scratch/q30/trees.py bwd 2>&1 | grep "^bwd" | sed "s/^/$t $r /"; NOFORCE=1 OPS=layernorm,add_layernorm SHAPES=1024x16384,2048x16384,8192x16384,2048x12288,4096x12288 timeout 300 python3 $ROOT/scratch/q30/lnwide.py bf16,fp16 2>&1 | grep -v "warn\|^ *$\|Warn" | sed "s/^/$t $r /")
  done
done
