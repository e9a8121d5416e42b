"""
What would the toy need for paper 3's rank-1 dominance? The rank-1 model's recovery of the RL gain and the
top singular component's share of each update's energy (`analyze.py rank1`, greedy accuracy on 1,000
held-out problems) as one thing changes at a time:

  lr      the runs of bench/lr_sweep.py (1e-4 ... 3e-6, the paper regime's other settings), step 0 -> 150
  steps   the paper regime's seed-1 run of bench/paper_results.py, step 0 -> 50, 100, 150
  base    a base trained 3x longer (1,800 SFT steps), then the paper regime's 150 GRPO steps
  width   a model twice as wide (n_embd 256, 8 heads: 3.2M parameters), SFT as the default's, then 50 GRPO
          steps of the paper regime (compare with the default width's step 50: four times the compute per step)

    python bench/rank1_probe.py [--sweep=out/lr_sweep] [--runs=out/paper_results] [--train=base,width]

Writes bench/results/rank1_probe.json and prints the table.
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.jobs import run_all  # noqa: E402
from bench.paper_results import EVAL, PAPER, PY, RUN, ckpt_dir, read  # noqa: E402

# variant: (SFT flags, GRPO steps)
VARIANTS = {"base": (["--sft_steps=1800"], 150), "width": (["--n_embd=256", "--n_head=8"], 50)}


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--sweep", default="out/lr_sweep")
    p.add_argument("--runs", default="out/paper_results")
    p.add_argument("--train", default="base,width", help="variants to train ('' for none)")
    p.add_argument("--out", default="out/rank1_probe")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "rank1_probe.json"))
    args = p.parse_args()
    out = Path(args.out)
    pairs = []  # (what, setting, base checkpoint, RL checkpoint)
    for run in sorted(Path(args.sweep).glob("lr*/grpo"), key=lambda r: -float(r.parent.name[2:])):
        pairs.append(("lr", run.parent.name[2:], ckpt_dir(run, 0), ckpt_dir(run, 150)))
    paper = Path(args.runs) / "paper" / "s1" / "grpo"
    pairs += [("steps", str(s), ckpt_dir(paper, 0), ckpt_dir(paper, s)) for s in (50, 100, 150) if ckpt_dir(paper, s).exists()]
    variants = [v for v in args.train.split(",") if v]
    jobs = []
    for v in variants:
        base, run = out / v / "base", out / v / "grpo_run"
        sft, steps = VARIANTS[v]
        if not (run / "summary.json").exists():
            jobs.append((f"{v}", ["sh", "-c", f"{PY} train.py --stage=sft --base_dir={base} --threads=1 "
                                  + " ".join(sft) + f" && {PY} train.py --stage=grpo --base_dir={base} "
                                  f"--out_dir={run} --seed=1 --resume=true " + " ".join(RUN + PAPER) + f" --steps={steps}"]))
        pairs.append(("model", f"{v} (step {steps})", ckpt_dir(run / "grpo", 0), ckpt_dir(run / "grpo", steps)))
    run_all(jobs, args.parallel, out / "logs")
    analyses = []
    for what, setting, b, r in pairs:
        a = out / "analysis" / f"{what}_{setting.split()[0]}"
        if not (a / "report.json").exists():
            analyses.append((f"{what}_{setting.split()[0]}", [PY, "analyze.py", "rank1", f"--base={b}", f"--rl={r}", *EVAL,
                                                   f"--out={a}"]))
    run_all(analyses, args.parallel, out / "logs")
    rows = []
    for what, setting, b, r in pairs:
        rep = read(out / "analysis" / f"{what}_{setting.split()[0]}" / "report.json")
        rows.append({"what": what, "setting": setting, "base": str(b), "rl": str(r), "acc": rep["acc"],
                     "recovery": rep["recovery"], "top1_share_median": rep["top1_share"]["median"]})
    Path(args.json).write_text(json.dumps(rows, indent=1))
    print("| varied | setting | base → RL → rank-1 (greedy) | recovery | top-1 energy share (median) |\n|---|---|---|---|---|")
    for r in rows:
        a = r["acc"]
        rec = "n/a" if r["recovery"] is None else f"{r['recovery']:.3f}"
        print(f"| {r['what']} | {r['setting']} | {a['base']:.3f} → {a['rl']:.3f} → {a['rank1']:.3f} | {rec} | "
              f"{r['top1_share_median']:.3f} |")


if __name__ == "__main__":
    main()
