"""
Choose the paper regime's learning rate by a rule fixed before any paper metric is computed: the largest
lr at which held-out accuracy is still rising at the end of the run, as in the papers' runs (a slow drift,
still improving when training stops). Each lr trains 150 GRPO steps from the same SFT base with the paper
regime's other settings (paper_results.PAPER), evaluated every 10 steps (greedy, 1,000 held-out problems).

"Still rising": the least-squares slope of greedy accuracy over steps 100..150 (six evaluations), times
the 50 steps, exceeds twice the binomial standard error of one evaluation, 2 sqrt(p (1 - p) / n). Where no lr
passes that, a weaker reading of the same rule decides: the slope over steps 100..150 is positive and the
last evaluation is the run's best (ties included), i.e. the curve has not yet turned down.

    python bench/lr_sweep.py [--lrs=1e-4,3e-5,1e-5,3e-6] [--out=out/lr_sweep]

Writes bench/results/lr_sweep.json and prints the table (also the mean relative weight change per step,
||W_150 - W_0|| / ||W_0|| / 150 over the block matrices, to compare regimes by how far they move).
"""
import argparse
import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.jobs import run_all  # noqa: E402
from bench.paper_results import PAPER, RUN, ensure_base, eval_curve  # noqa: E402
from nanorlvr.infra import checkpoint as ckpt  # noqa: E402
from nanorlvr.papers.extrapolate import is_update_matrix, linear_fit_predict  # noqa: E402


def rise(curve, start=100):
    """(rise of the least-squares line through the evaluations from step `start` on, their mean accuracy)."""
    pts = [(s, a) for s, a in curve if s >= start]
    xs = torch.tensor([s for s, _ in pts], dtype=torch.float64)
    ys = torch.tensor([[a] for _, a in pts], dtype=torch.float64)
    line = [linear_fit_predict(ys, xs, x).item() for x in (xs[0].item(), xs[-1].item())]
    return line[1] - line[0], ys.mean().item()


def relative_change_per_step(run_dir):
    ckpts = ckpt.list_checkpoints(run_dir)
    (s0, p0), (s1, p1) = ckpts[0], ckpts[-1]
    w0, w1 = ckpt.load_model(p0).state_dict(), ckpt.load_model(p1).state_dict()
    num = sum((w1[k] - w0[k]).square().sum() for k in w0 if is_update_matrix(k, w0[k]))
    den = sum(w0[k].square().sum() for k in w0 if is_update_matrix(k, w0[k]))
    return (num / den).sqrt().item() / (s1 - s0)


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--lrs", default="1e-4,3e-5,1e-5,3e-6")
    p.add_argument("--out", default="out/lr_sweep")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "lr_sweep.json"))
    args = p.parse_args()
    out, lrs = Path(args.out), [float(x) for x in args.lrs.split(",")]
    base = ensure_base(out)
    flags = {lr: [a for a in PAPER if not a.startswith("--lr=")] + [f"--lr={lr:g}"] for lr in lrs}
    run_all([(f"lr{lr:g}", [sys.executable, "train.py", "--stage=grpo", f"--base_dir={base}",
                            f"--out_dir={out}/lr{lr:g}", f"--seed={args.seed}", *RUN, *flags[lr], "--resume=true"]) for lr in lrs
             if not (out / f"lr{lr:g}" / "summary.json").exists()],  # a rerun trains only what is missing
            args.parallel, out / "logs")
    rows = []
    for lr in lrs:
        curve = eval_curve(out / f"lr{lr:g}" / "grpo")
        r, p_mean = rise(curve)
        se2 = 2 * math.sqrt(p_mean * (1 - p_mean) / 1000)
        rows.append({"lr": lr, "flags": flags[lr], "curve": curve, "rise_100_150": r, "two_se": se2,
                     "still_rising": r > se2, "acc_0": curve[0][1], "acc_150": curve[-1][1],
                     "not_turned_down": r > 0 and curve[-1][1] >= max(a for _, a in curve),
                     "best": max(a for _, a in curve),
                     "rel_change_per_step": relative_change_per_step(out / f"lr{lr:g}" / "grpo")})
    chosen, rule = max((r["lr"] for r in rows if r["still_rising"]), default=None), "rise > 2 SE"
    if chosen is None:
        chosen, rule = max((r["lr"] for r in rows if r["not_turned_down"]), default=None), "not turned down"
    Path(args.json).write_text(json.dumps({"rule": __doc__.strip().split("\n\n")[1], "seed": args.seed,
                                           "runs": rows, "chosen_lr": chosen, "chosen_by": rule}, indent=1))
    print("\n| lr | greedy step 0 → 150 (best) | rise over steps 100–150 | 2 SE | rise > 2 SE | not turned down | "
          "rel. weight change / step |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['lr']:g} | {r['acc_0']:.3f} → {r['acc_150']:.3f} ({r['best']:.3f}) | {r['rise_100_150']:+.3f} | "
              f"{r['two_se']:.3f} | {'yes' if r['still_rising'] else 'no'} | {'yes' if r['not_turned_down'] else 'no'} "
              f"| {r['rel_change_per_step']:.2e} |")
    print(f"chosen: lr {chosen} ({rule})")


if __name__ == "__main__":
    main()
