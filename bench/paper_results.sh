#!/usr/bin/env bash
# The three papers' findings on the toy in two regimes (fast: the quickstart; paper: a slow drift), several
# seeds each, from scratch: the SFT base, every GRPO run, every analysis, then bench/results/findings.json,
# bench/results/paper_results.md (the README's results table) and bench/results/weight_trajectories.png.
# Two one-thread jobs at a time (a 2-core CPU). QUICK=1: one seed, a preview without verdicts on differences
# (written to *_quick.*); jobs already done in OUT are skipped.   Usage: [QUICK=1] bash bench/paper_results.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/paper_results}   # QUICK and full runs share it: a full run after a QUICK one reuses its jobs
T0=$SECONDS
python bench/paper_results.py --out="$OUT" ${QUICK:+--quick}
echo "paper_results.sh${QUICK:+ (QUICK)}: done in $(( (SECONDS - T0) / 60 ))m$(( (SECONDS - T0) % 60 ))s"
