#!/usr/bin/env bash
# Reproduce the README's "Results" table on the toy, from scratch: SFT base, one GRPO run with checkpoints
# every 25 steps, then every analysis of the three papers on it. Each step prints its own figures and
# writes report.json / summary.md / PNGs under $OUT/analysis. Usage: bash bench/paper_results.sh [OUT]
set -euo pipefail
OUT=${1:-out/paper}
RUN=$OUT/grpo
STEPS=${STEPS:-400}
EVAL="--n_eval=500 --k=8"
time_it() { local t0=$SECONDS; "$@"; echo "[$(( SECONDS - t0 ))s] $*"; }

# 1. the SFT base and a GRPO run (checkpoints every 25 steps for the linearity / AlphaRL analyses)
time_it python train.py --stage=sft --base_dir=$OUT/base
time_it python train.py --stage=grpo --base_dir=$OUT/base --out_dir=$OUT --steps=$STEPS --save_every=25 --eval_every=100
LAST=$RUN/step_$(printf %06d $STEPS)

# 2. paper 1: Δlog p vs KL vs entropy, token replacement
time_it python analyze.py dlogp --base=$RUN/step_000000 --rl=$LAST --n_eval=200 --k=4 --ratios=0.02,0.05,0.1,0.2 --out=$OUT/analysis/dlogp
# 3. paper 2: linearity, weight and logits extrapolation
time_it python analyze.py linearity --run=$RUN --out=$OUT/analysis/linearity
time_it python analyze.py extrapolate --run=$RUN --t0=$((STEPS / 4)) --t1=$((STEPS / 2)) --alpha=1,1.5,2,3,4 $EVAL --out=$OUT/analysis/extrapolate
time_it python sample.py --extrapolate=logits --ckpt0=$RUN/step_$(printf %06d $((STEPS / 2))) --ckpt1=$LAST --sweep=true --alpha_sweep=0,1,1.25,1.5,2 --eval=500 --k=8 --out=$OUT/analysis/logits_extrapolation.json
# 4. paper 1: test-time Δlog p extrapolation (selective, base leads)
time_it python sample.py --extrapolate=dlogp --base=$RUN/step_000000 --rl=$LAST --sweep=true --gamma_sweep=0,0.1 --tau_sweep=-0.3,-0.5 --eval=500 --k=8 --out=$OUT/analysis/dlogp_extrapolation.json
# 5. paper 3: rank-1 and AlphaRL
time_it python analyze.py rank1 --base=$RUN/step_000000 --rl=$LAST $EVAL --out=$OUT/analysis/rank1
time_it python analyze.py alpharl --run=$RUN --window=2,4,8 $EVAL --out=$OUT/analysis/alpharl
# 6. paper 2 RL-Extra and paper 1 reweighting need their own training runs
time_it python bench/rlextra.py --base_dir=$OUT/base --out_dir=$OUT/rlextra --steps=200 --m=20 --n=20 --eval_every=20
time_it python bench/reweight.py --base_dir=$OUT/base --out_dir=$OUT/reweight --steps=100 --seeds=1,2,3
