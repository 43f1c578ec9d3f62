#!/usr/bin/env bash
# The quality gate (CI runs it; the quality table in docs/eval.md is its output): `mirage eval recon` over
# a small deterministic suite at one thread, its Markdown table printed, then `mirage eval check`
# against the committed baseline, which exits 1 (and so fails CI) when a metric dropped by more than
# its tolerance.
#
# Usage: scripts/quality_gate.sh [--update "why the numbers change"] [EXTRA_SOURCE ...]
#   --update WHY       write quality/baseline.json from this run (with WHY, date, command, machine);
#                      commit it with the same reason
#   EXTRA_SOURCE ...   more clips for this run (also $MIRAGE_GATE_SOURCES, space-separated);
#                      clips the baseline lacks are reported as new and do not fail
#   $MIRAGE_GATE_OUT   keep the evaluation there (default: a temporary directory, removed)
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=(synthetic synthetic:loops)  # the gate's clips; adding a suite is one word here, then --update "why"
BASELINE=quality/baseline.json

update=()
if [[ "${1:-}" == "--update" ]]; then
  if [[ $# -lt 2 || -z "${2// /}" ]]; then
    echo "error: --update needs the reason: scripts/quality_gate.sh --update \"why\"" >&2
    exit 2
  fi
  update=(--update --why "$2")
  shift 2
fi
# shellcheck disable=SC2206  # the variable is a space-separated list of sources
sources=("${SUITE[@]}" ${MIRAGE_GATE_SOURCES:-} "$@")

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MIRAGE_THREADS=1 OMP_NUM_THREADS=1
mirage=(python3 -m mirage_cli --threads 1)
if [[ -n "${MIRAGE_GATE_OUT:-}" ]]; then
  out=$MIRAGE_GATE_OUT
  overwrite=(--overwrite)
else
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
  overwrite=()
fi

recon=(eval recon "${sources[@]}" -o "$out" -q --markdown)
echo "quality gate: mirage --threads 1 ${recon[*]}" >&2
"${mirage[@]}" "${recon[@]}" ${overwrite[@]+"${overwrite[@]}"}
echo
check=(eval check "$out/eval.json" --baseline "$BASELINE")
if [[ ${#update[@]} -gt 0 ]]; then
  check+=("${update[@]}" --command "scripts/quality_gate.sh ${sources[*]}")
fi
"${mirage[@]}" "${check[@]}"
