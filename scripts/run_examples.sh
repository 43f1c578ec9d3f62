#!/usr/bin/env bash
# Runs every example script of examples/ (the Python API: memory, trajectories, engine), offline on
# the CPU, each with its outputs in a temporary folder; exits 1 at the first that fails.
# tests/test_examples.py runs the same scripts in the test suite (so CI runs them there).
#
# Usage: scripts/run_examples.sh [--out DIR]   (--out DIR: keep each example's outputs in DIR/<name>)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's code, whatever is installed

keep=""
if [[ "${1:-}" == "--out" ]]; then
  keep="${2:?--out needs a folder}"
fi
for example in examples/*_api.py; do
  name=$(basename "$example" .py)
  echo "== $example"
  start=$SECONDS
  if [[ -n "$keep" ]]; then
    python3 "$example" --out "$keep/$name"
  else
    python3 "$example"
  fi
  echo "== $example: ok ($((SECONDS - start)) s)"
done
