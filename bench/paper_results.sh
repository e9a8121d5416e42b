#!/usr/bin/env bash
# Reproduce the table of docs/results.md ("Results on the toy") from scratch on a CPU: the quickstart itself (SFT base,
# then GRPO with a checkpoint every 10 steps), then every analysis of the three papers on that run, then
# the two methods that need their own training runs. Each step prints its own figures and its seconds, and
# writes report.json / summary.md / PNGs under $OUT/analysis.   Usage: bash bench/paper_results.sh [OUT]
set -euo pipefail
OUT=${1:-out/paper}
RUN=$OUT/grpo
STEPS=${STEPS:-150}
T0=$((STEPS / 3)); T1=$((2 * STEPS / 3))   # extrapolation windows (checkpoints exist every 10 steps)
EVAL="--n_eval=500 --k=4"
ckpt() { echo "$RUN/step_$(printf %06d "$1")"; }
time_it() { local t0=$SECONDS; "$@"; echo "[$(( SECONDS - t0 ))s] $*"; }
T_START=$SECONDS

# 1. the quickstart: SFT base, GRPO, out/paper/summary.json
time_it python train.py --out_dir="$OUT" --base_dir="$OUT/base" --steps="$STEPS"
# 2. paper 1: Δlog p vs KL vs entropy, token replacement
time_it python analyze.py dlogp --base="$(ckpt 0)" --rl="$(ckpt "$STEPS")" --n_eval=300 --k=4 --ratios=0.02,0.05,0.1,0.2 --out="$OUT/analysis/dlogp"
# 3. paper 2: linearity, weight (Eq. 2) and logits (Eq. 1) extrapolation
time_it python analyze.py linearity --run="$RUN" --out="$OUT/analysis/linearity"
time_it python analyze.py extrapolate --run="$RUN" --t0="$T0" --t1="$T1" --alpha=1,1.5,2,3 $EVAL --out="$OUT/analysis/extrapolate"
time_it python sample.py --extrapolate=logits --ckpt0="$(ckpt "$T1")" --ckpt1="$(ckpt "$STEPS")" --sweep=true --alpha_sweep=0,1,1.25,1.5,2 --eval=500 --k=4 --out="$OUT/analysis/logits_extrapolation.json"
# 4. paper 1: test-time Δlog p extrapolation (selective, base leads)
time_it python sample.py --extrapolate=dlogp --base="$(ckpt 0)" --rl="$(ckpt "$STEPS")" --sweep=true --gamma_sweep=0,0.1 --tau_sweep=-0.3,-0.5 --eval=500 --k=4 --out="$OUT/analysis/dlogp_extrapolation.json"
# 5. paper 3: rank-1 and AlphaRL (windows of 3, 5, 8 checkpoints: steps 30, 50, 80)
time_it python analyze.py rank1 --base="$(ckpt 0)" --rl="$(ckpt "$STEPS")" $EVAL --out="$OUT/analysis/rank1"
time_it python analyze.py alpharl --run="$RUN" --window=3,5,8 $EVAL --out="$OUT/analysis/alpharl"
# 6. paper 2 RL-Extra and paper 1 reweighting need their own training runs (greedy-only evals where that suffices);
#    QUICK=1 stops here (about 20 of the 40 minutes on a 2-core CPU)
if [ -n "${QUICK:-}" ]; then echo "paper_results.sh (QUICK): done in $(( (SECONDS - T_START) / 60 ))m$(( (SECONDS - T_START) % 60 ))s"; exit 0; fi
time_it python bench/rlextra.py --base_dir="$OUT/base" --out_dir="$OUT/rlextra" --steps=100 --m=10 --n=10 --eval_every=10 --n_eval=300 --eval_k=1
time_it python bench/reweight.py --base_dir="$OUT/base" --out_dir="$OUT/reweight" --steps=40 --seeds=1,2,3 --n_eval=300 --eval_k=4
echo "paper_results.sh: all done in $(( (SECONDS - T_START) / 60 ))m$(( (SECONDS - T_START) % 60 ))s"
