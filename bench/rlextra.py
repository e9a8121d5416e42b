"""
Paper 2's RL-Extra (Eq. 3) on the toy: standard GRPO vs RL-Extra (m real steps, then a jump of n virtual
ones, repeated) from the same SFT base, with held-out greedy accuracy every `--eval_every` steps. Reports
how many REAL gradient steps each needs to reach a threshold (default: halfway from the base to the
standard run's best), the paper's "steps-to-threshold" ratio, and writes bench/results/rlextra.json.

    python bench/rlextra.py [--steps 200] [--m 20 --n 20] [--eval_every 20] [any train.py --flag=value ...]
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import train  # noqa: E402


def curve(out):
    """[(step, real_steps, greedy_acc)] from a run's metrics.jsonl (step 0 = the base)."""
    rows = [json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    real, points = 0, []
    for r in rows:
        real = r.get("real_steps", real)
        if "eval" in r:
            points.append((r["step"], real, r["eval"]["greedy_acc"]))
    return points


def steps_to(points, threshold):
    return next((real for _, real, acc in points if acc >= threshold), None)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--m", type=int, default=20)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--eval_every", type=int, default=20)
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--out_dir", default="out/bench_rlextra")
    args, extra = p.parse_known_args()
    common = [f"--steps={args.steps}", f"--eval_every={args.eval_every}", "--eval_k=1", f"--save_every={args.steps}", *extra]
    runs = {"standard": [], f"rl_extra {args.m},{args.n}": [f"--rl_extra={args.m},{args.n}"]}
    curves = {}
    for name, flags in runs.items():
        out = Path(args.out_dir) / name.replace(" ", "_").replace(",", "_")
        train.main(["--stage=grpo", f"--out_dir={out}", *common, *flags])
        curves[name] = curve(out)
    base = curves["standard"][0][2]
    best = max(acc for _, _, acc in curves["standard"])
    threshold = args.threshold if args.threshold is not None else base + 0.5 * (best - base)
    print(f"\nbase greedy {base:.3f}; threshold {threshold:.3f}\n\n| run | real steps to threshold | final greedy | curve (step: acc) |\n|---|---|---|---|")
    result = {"threshold": threshold, "curves": curves}
    for name, pts in curves.items():
        need = steps_to(pts, threshold)
        result[name] = need
        print(f"| {name} | {need} | {pts[-1][2]:.3f} | {' '.join(f'{s}:{a:.2f}' for s, _, a in pts)} |")
    a, b = result["standard"], result[list(runs)[1]]
    if a and b:
        print(f"\nsteps-to-threshold ratio (standard / RL-Extra): {a / b:.2f}")
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "rlextra.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
