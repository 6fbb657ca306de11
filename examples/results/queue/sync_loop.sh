#!/usr/bin/env bash
# Every 5 minutes: commit the records of finished runs into /work/main (examples/sync_runs.py).
cd /work/main
while true; do
  for s in popgym-escape-20 popgym-escape-40 bandit-ablations bandit-ratecheck bandit-authors; do
    [ -d ~/sggraph-runs/$s ] && python3 examples/sync_runs.py ~/sggraph-runs/$s examples/results/$s/runs --commit
  done
  sleep 300
done
