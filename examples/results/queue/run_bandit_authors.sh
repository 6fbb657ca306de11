#!/usr/bin/env bash
# The authors' bandit code beside ours (issue #30), clone ~/sggraph-exp-bandit @b36fc0e, seed by seed, 1 worker, niced
# below the POPGym queue. Finished runs are skipped; killed ones start again.
cd ~/sggraph-exp-bandit
for s in 0 1 2 3 4; do
  nice -n 10 .venv/bin/python examples/authors_bandit_runs.py run ~/authors/sgprop/exp-mnist-bandit \
    --out ~/sggraph-runs/bandit-authors --seeds $s --workers 1
done
