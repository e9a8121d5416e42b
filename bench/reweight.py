"""
Paper 1's training-time reweighting on the toy: plain GRPO vs GRPO + low-probability reweighting
(w = 1 + c(1 - p_old)) vs the "Dominate" baseline (w = 1 - c + c p_old), the same budget and several
seeds each, from the same SFT base. Prints mean +- std of the final held-out greedy accuracy, avg@k and
the policy entropy over the last steps, and writes them to --json (bench/results/reweight.json).

    python bench/reweight.py [--seeds 1,2,3] [--steps 100] [--c 0.2] [any train.py --flag=value ...]
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import train  # noqa: E402


def mean_std(xs):
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.3f}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--c", type=float, default=0.2)
    p.add_argument("--out_dir", default="out/bench_reweight")
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "reweight.json"), help="where the results go")
    args, extra = p.parse_known_args()
    results = {}
    for mode in ("none", "lowprob", "dominate"):
        for seed in [int(s) for s in args.seeds.split(",")]:
            out = Path(args.out_dir) / f"{mode}_s{seed}"
            train.main(["--stage=grpo", f"--out_dir={out}", f"--steps={args.steps}", f"--seed={seed}",
                        f"--reweight={mode}", f"--reweight_c={args.c}", f"--save_every={args.steps}", *extra])
            summary = json.loads((out / "summary.json").read_text())
            rows = [json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
            ent = [r["entropy"] for r in rows if "entropy" in r][-10:]
            k = summary["config"]["eval_k"]
            results.setdefault(mode, []).append({"seed": seed, "greedy": summary["final_greedy_acc"],
                                                 "avg": summary[f"final_avg{k}"], "entropy": statistics.mean(ent),
                                                 "base_greedy": summary["base_greedy_acc"]})
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print("\n| method | final greedy acc | final avg@k | entropy (last 10 steps) | seeds |\n|---|---|---|---|---|")
    for mode, rs in results.items():
        print(f"| {mode} | {mean_std([r['greedy'] for r in rs])} | {mean_std([r['avg'] for r in rs])} | "
              f"{mean_std([r['entropy'] for r in rs])} | {len(rs)} |")
    print(f"base greedy acc {results['none'][0]['base_greedy']:.3f}; {args.steps} steps each, c = {args.c}")


if __name__ == "__main__":
    main()
