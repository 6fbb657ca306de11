#!/usr/bin/env bash
# Seeds 6-19 of the SparseNet escape pair, seed by seed, 20 then 40 environments, 2 workers x 1 thread.
# Clone ~/sggraph-exp-claims at 9c1d2b0. Finished runs are skipped, killed runs resumed.
cd ~/sggraph-runs
for s in $(seq 6 19); do
  for n in 20 40; do
    ~/sggraph-exp-claims/.venv/bin/sggraph sweep specs/popgym-escape-$n-sparsenet-lr1e-3-seed$s.yaml \
      --out ~/sggraph-runs/popgym-escape-$n --workers 2 --threads 1 --quiet
  done
done
