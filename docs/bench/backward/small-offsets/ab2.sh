# alternate two trees: $1 rounds; tree A = repo (as is), tree B = /tmp/b (int32 row offsets)
set -u
S=$PWD/scratch/q30/lnwide.py
rm -rf /tmp/b && mkdir /tmp/b && cp -r dsl generated benchmarks /tmp/b/ 
sed -i 's/    return rows.to(tl.int64), row_mask/    return rows, row_mask/' /tmp/b/dsl/device.py
grep -n "return rows" /tmp/b/dsl/device.py
for r in $(seq 1 $1); do
  for t in A B; do
    if [ $t = A ]; then P=$PWD; else P=/tmp/b; fi
    (cd $P && PYTHONPATH=/tmp/site:$P NORMGEN_CACHE_DIR=/tmp/ngcache$t timeout 400 python3 $S ${2:-bf16} 2>&1 | grep -v Warn | sed "s/^/$t $r /") 
  done
done
