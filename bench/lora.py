"""
LoRA against full fine-tuning on the toy, in both regimes of bench/paper_results.py (fast: the quickstart's
GRPO; paper: a slow drift), and paper 3's rank-1 question asked by training.

The rule for the learning rates, fixed before any result: "LoRA Without Regret" (Thinking Machines, 2025)
finds the best LoRA lr for RL about 10x the full fine-tuning one, nearly the same for every rank at fixed
alpha (32 here, nanorlvr/lora.py). So for each rank r in {1, 8, 64} and each regime, seed 1 runs at 3x,
10x and 30x the regime's full lr (fast 1e-4, paper 1e-5); the lr with the best final greedy accuracy on
the 1,000 held-out problems wins (a tie goes to the one nearest 10x), and seeds 2 and 3 run at it. Full
fine-tuning runs at the regime's own lr, seeds 1-3. Every run is bench/paper_results.py's (150 steps, a
checkpoint and a greedy evaluation every 10) from the step-size map's committed SFT base
(bench/results/step_size_map_base); only --lora_rank and --lr differ. The full fine-tuning runs and their
rank-1 models are paper_results' own jobs (names and commands): in a shared --out they are trained once.

Paper 3 by training, for each seed s (the LoRA rank-1 run and the full run of the same seed sample the
same first rollouts): for every update matrix, with dW_full = W_full(150) - W_0 and dW_lora = W_lora(150)
- W_0 (merged weights minus the base: B A scaled, up to rounding), and u1 s1 v1^T the top singular
component of dW_full,

    cos  = |<vec dW_lora, vec u1 v1^T>| / ||dW_lora||_F      (1: the LoRA update is the full update's top
                                                               direction; chance for a random rank-1
                                                               matrix is ~ 1/sqrt(out x in))
    left = |u_lora . u1|,  right = |v_lora . v1|             (the top singular vectors of dW_lora against
                                                               those of dW_full: column and row spaces)

and, side by side, the held-out greedy accuracy of (a) the rank-1 projection of the full update
(`analyze.py rank1`, paper 3's rank-1 model) and (b) the rank-1 LoRA model itself.

Writes bench/results/lora.json (every run's accuracy, time and trainable parameters, the chosen lrs, the
table's records, the cosines), lora.md (the tables) and lora.png. Built in parts, like the step-size map: as a run
ends, its summary and curve go to bench/results/lora_parts/<run>.json, and each seed's paper-3 comparison to
lora_parts/paper3_<regime>_s<seed>.json (small, committed); a run whose part holds its command is not run
again (unless a missing paper-3 comparison needs its weights), so the bench completes across interrupted
runs, sittings and machines. Two one-thread jobs run at a time.

Time, measured (2026-12-03, 2-core Intel Xeon with AVX-512): 88 minutes for 6 full and 30 LoRA runs of 150
steps (3.6-3.9 job-minutes each in the fast regime, 5-7 in the paper one) and 6 rank-1 analyses, two jobs at
a time; QUICK=1 (10 runs) about a quarter of that.

    python bench/lora.py [--seeds=1,2,3] [--out=out/paper_results]
    QUICK=1 python bench/lora.py        # seed 1, fast regime only: the sweep and its analyses (lora_quick.*)
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import paper_results as P, step_size_map as M  # noqa: E402
from bench.jobs import run_all  # noqa: E402

RANKS = (1, 8, 64)
LR_FACTORS = (3, 10, 30)  # x the regime's full lr; 10x is the rule's centre
CENTRE = 10


def full_lr(regime):
    return float(next(f for f in P.REGIMES[regime] if f.startswith("--lr="))[5:])


def run_flags(regime, rank=0, factor=1):
    """train.py flags of a run: the regime's, with LoRA rank `rank` at `factor` x the regime's lr."""
    if not rank:  # full fine-tuning: the regime's flags as paper_results writes them
        return list(P.REGIMES[regime])
    flags = [f for f in P.REGIMES[regime] if not f.startswith("--lr=")]
    return flags + [f"--lr={full_lr(regime) * factor:g}"] + ([f"--lora_rank={rank}"] if rank else [])


def run_name(regime, rank, factor, seed):
    """Full fine-tuning runs are paper_results' own (same name, same command): with a shared --out they are
    trained once for paper_results, the step-size map and this bench."""
    return f"{regime}/s{seed}" if not rank else f"lora/{regime}/r{rank}_x{factor:g}/s{seed}"


def grpo_job(out, base, regime, rank, factor, seed):
    name = run_name(regime, rank, factor, seed)
    return (name, [P.PY, "train.py", "--stage=grpo", f"--base_dir={base}", f"--out_dir={out}/{name}",
                   f"--seed={seed}", *P.RUN, *run_flags(regime, rank, factor), "--resume=true"])  # a rerun continues


# -----------------------------------------------------------------------------
# the jobs, in three phases: full runs + the seed-1 lr sweep, then seeds 2-3 at the chosen lrs, then analyses


def sweep_jobs(out, base, regimes, seeds):
    jobs = [grpo_job(out, base, regime, 0, 1, s) for regime in regimes for s in seeds]
    jobs += [grpo_job(out, base, regime, r, f, seeds[0]) for regime in regimes for r in RANKS for f in LR_FACTORS]
    return jobs


def seed_jobs(out, base, regimes, seeds, chosen):
    """chosen: {(regime, rank): factor}."""
    return [grpo_job(out, base, regime, r, chosen[regime, r], s) for regime in regimes for r in RANKS
            for s in seeds[1:]]


def analysis_jobs(out, regimes, seeds, steps=150):
    """Paper 3's rank-1 model of each full run: paper_results' rank1 job (analyze.py rank1, steps 0 -> 150,
    the same 1,000 held-out problems), shared with it and the step-size map (a shorter smoke run: its last
    step instead of 150)."""
    last = f"step_{steps:06d}"
    return [(name, [a.replace("step_000150", last) for a in argv]) for regime in regimes for s in seeds
            for name, argv in P.run_analyses(out, regime, s) if name.endswith("/rank1")]

# -----------------------------------------------------------------------------
# the records: pure functions of the runs' summaries (tested on hand-made ones)


def choose_factor(acc_by_factor: dict, centre=CENTRE):
    """The lr factor with the best final accuracy; a tie goes to the one nearest `centre` (in log lr)."""
    return max(acc_by_factor, key=lambda f: (acc_by_factor[f], -abs(math.log(f / centre))))


def variant_record(finals, base_acc, full_finals, seconds, trainable):
    """One row of the table: final greedy accuracy mean +- std over seeds, the gain over the base relative
    to full fine-tuning's mean gain, mean wall seconds, trainable parameters."""
    m, sd, n = P.mean_sd(finals)
    fm, fsd, fn = P.mean_sd(full_finals)
    rel = (m - base_acc) / (fm - base_acc) if fm is not None and fm != base_acc else None
    # against full fine-tuning: the difference of the two means, real only beyond 2 standard errors of it
    se = math.sqrt(sd ** 2 / n + fsd ** 2 / fn) if n > 1 and fn > 1 else None
    diff = m - fm
    verdict = ("1 seed: no verdict" if se is None else "above full" if diff > 2 * se else
               "below full" if diff < -2 * se else "inside the noise")
    return {"final_greedy_acc": finals, "mean": m, "std": sd, "seeds": n, "gain": m - base_acc,
            "gain_vs_full": rel, "minus_full": diff, "minus_full_2se": 2 * se if se is not None else None,
            "vs_full": verdict, "wall_seconds": P.mean_sd(seconds)[0], "trainable": trainable}


@torch.no_grad()
def update_alignment(d_full: torch.Tensor, d_lora: torch.Tensor) -> dict:
    """|cos| between vec(d_lora) and the full update's top singular direction u1 v1^T, and the alignments of
    the two updates' top left / right singular vectors (module docstring)."""
    u, _, vh = torch.linalg.svd(d_full.double(), full_matrices=False)
    ul, _, vlh = torch.linalg.svd(d_lora.double(), full_matrices=False)
    u1, v1 = u[:, 0], vh[0]
    norm = d_lora.double().norm()
    cos = (u1 @ d_lora.double() @ v1).abs() / norm if norm > 0 else torch.tensor(float("nan"))
    return {"cos": cos.item(), "left": (ul[:, 0] @ u1).abs().item(), "right": (vlh[0] @ v1).abs().item(),
            "chance": math.sqrt(2 / (math.pi * d_full.numel()))}


def alignments(w0: dict, w_full: dict, w_lora: dict) -> dict:
    """update_alignment of every update matrix (2-D, not an embedding or the head) of three state dicts."""
    out = {}
    for name, t in w0.items():
        if t.ndim == 2 and name.endswith("_proj.weight"):
            out[name] = update_alignment(w_full[name] - t, w_lora[name] - t)
    return out


def mean_of(per_matrix: dict, key) -> float:
    return sum(v[key] for v in per_matrix.values()) / len(per_matrix)

# -----------------------------------------------------------------------------
# report


# -----------------------------------------------------------------------------
# the parts: what the report needs of each run and of each seed's paper-3 comparison (the checkpoints can go)


def part_path(results, name):
    return Path(results) / "lora_parts" / (name.replace("/", "_") + ".json")


def write_part(path, record):
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**record, "machine": M.machine(), "date": time.strftime("%Y-%m-%d")}
    path.write_text(json.dumps(record, indent=1))
    return record


def run_part(results, name, argv):
    """The part of a run if it holds this very command (without the interpreter's path), else None."""
    path = part_path(results, name)
    part = P.read(path) if path.exists() else None
    return part if part and part.get("command") == argv[1:] else None


def save_run(results, out, name, argv, seconds=None):
    """A finished run's part: its summary's accuracies and wall time, its held-out curve, the base's hash."""
    keys = ("base_greedy_acc", "final_greedy_acc", "wall_seconds", "n_eval", "steps", "real_steps")
    s, base = P.read(Path(out) / name / "summary.json"), Path(out) / "base" / "model.safetensors"
    return write_part(part_path(results, name), {
        "name": name, "command": argv[1:], "summary": {k: s[k] for k in keys if k in s},
        "curve": P.eval_curve(Path(out) / name / "grpo"), "job_seconds": seconds,
        "base_sha256": M.sha256(base) if base.exists() else None})


def weights(path):
    from nanorlvr.infra import checkpoint as ckpt
    return ckpt.load_model(path).state_dict()


def trainable_params(base, rank):
    from nanorlvr import lora
    from nanorlvr.infra.hf import config_from_hf
    from nanorlvr.model import GPT
    mcfg = config_from_hf(json.loads((Path(base) / "config.json").read_text()))
    with torch.device("meta"):
        n = GPT(mcfg).num_params()
    return lora.count_adapter_params(mcfg, rank) if rank else n


def report(out, base, regimes, seeds, chosen, summary, paper3_seed):
    """summary(name): a run's summary (from its part); paper3_seed(regime, s): one seed's paper-3 record."""
    recs = {"lr_rule": f"seed {seeds[0]}: {', '.join(f'{f}x' for f in LR_FACTORS)} the regime's full lr, best final "
                       f"greedy accuracy (tie: nearest {CENTRE}x); other seeds at the winner",
            "chosen_lr": {}, "sweep": {}, "table": {}, "paper3": {}}
    for regime in regimes:
        full = [summary(run_name(regime, 0, 1, s)) for s in seeds]
        base_acc = full[0]["base_greedy_acc"]
        full_finals = [x["final_greedy_acc"] for x in full]
        rows = {"full": variant_record(full_finals, base_acc, full_finals, [x["wall_seconds"] for x in full],
                                       trainable_params(base, 0)) | {"lr": full_lr(regime)}}
        for r in RANKS:
            f = chosen[regime, r]
            recs["sweep"][f"{regime}/r{r}"] = {f"{g}x": summary(run_name(regime, r, g, seeds[0]))["final_greedy_acc"]
                                               for g in LR_FACTORS}
            recs["chosen_lr"][f"{regime}/r{r}"] = full_lr(regime) * f
            runs = [summary(run_name(regime, r, f, s)) for s in seeds]
            rows[f"r{r}"] = variant_record([x["final_greedy_acc"] for x in runs], base_acc, full_finals,
                                           [x["wall_seconds"] for x in runs], trainable_params(base, r)) | {
                                               "lr": full_lr(regime) * f}
        recs["table"][regime] = {"base_greedy_acc": base_acc, "rows": rows}
        per_seed = [paper3_seed(regime, s) for s in seeds]  # paper 3: the rank-1 LoRA update vs the full one
        recs["paper3"][regime] = {"per_seed": per_seed, **{
            k: P.mean_sd([x[k] for x in per_seed])[:2]
            for k in ("rank1_projection_acc", "lora_r1_acc", "full_acc", "mean_cos", "mean_left", "mean_right")}}
    return recs


def paper3_record(out, regime, s, lora_name, lora_acc, steps=150):
    """Paper 3 for one seed: the rank-1 LoRA update against the full update's top direction, matrix by matrix,
    and the accuracies of the rank-1 projection of the full update, the full run and the rank-1 LoRA run."""
    full_run, lora_run = Path(out) / run_name(regime, 0, 1, s) / "grpo", Path(out) / lora_name / "grpo"
    al = alignments(weights(P.ckpt_dir(full_run, 0)), weights(P.ckpt_dir(full_run, steps)),
                    weights(P.ckpt_dir(lora_run, steps)))
    r1 = P.read(Path(out) / regime / f"s{s}" / "analysis" / "rank1" / "report.json")
    return {"seed": s, "lora_run": lora_name, "steps": steps, "rank1_projection_acc": r1["acc"]["rank1"],
            "full_acc": r1["acc"]["rl"], "lora_r1_acc": lora_acc,
            **{f"mean_{k}": mean_of(al, k) for k in ("cos", "left", "right", "chance")}, "per_matrix": al}


def table_md(recs):
    """The results as markdown, from the json alone: per regime a row per variant (the seed-1 sweep beside
    it), then paper 3 seed by seed."""
    lines = []
    for regime, t in recs["table"].items():
        lines += [f"\n{P.TITLES[regime]}; base greedy {t['base_greedy_acc']:.3f}\n",
                  "| variant | lr | seed 1 at " + " / ".join(f"{f}x" for f in LR_FACTORS) + " | trainable | "
                  "final greedy (mean ± std) | gain vs full's | minus full (± 2 SE) | wall time |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in t["rows"].items():
            sd = f" ± {r['std']:.3f}" if r["std"] is not None else ""
            rel = f"{r['gain_vs_full']:.2f}" if r["gain_vs_full"] is not None else "-"
            sweep = recs["sweep"].get(f"{regime}/{name}")
            sweep = " / ".join(f"{a:.3f}" for a in sweep.values()) if sweep else "-"
            diff = ("-" if name == "full" else f"{r['minus_full']:+.3f}" + (
                f" ± {r['minus_full_2se']:.3f}" if r.get("minus_full_2se") is not None else "") + f" ({r['vs_full']})")
            lines.append(f"| {name} | {r['lr']:g} | {sweep} | {r['trainable']:,} | {r['mean']:.3f}{sd} (n={r['seeds']}) | "
                         f"{rel} | {diff} | {r['wall_seconds'] / 60:.1f} min |")
    for regime, r in recs["paper3"].items():
        lines += [f"\nPaper 3 by training, {regime} regime: greedy accuracy of the rank-1 projection of the full "
                  "update, of the rank-1 LoRA run and of the full run; mean over matrices of |cos(ΔW_lora, u1 v1ᵀ)| "
                  "and of the top singular vectors' alignments\n",
                  "| seed | rank-1 projection of full | LoRA rank 1 | full | mean cos | left | right | cos by chance |",
                  "|---|---|---|---|---|---|---|---|"]
        for x in r["per_seed"]:
            lines.append(f"| {x['seed']} | {x['rank1_projection_acc']:.3f} | {x['lora_r1_acc']:.3f} | {x['full_acc']:.3f} | "
                         f"{x['mean_cos']:.3f} | {x['mean_left']:.3f} | {x['mean_right']:.3f} | {x['mean_chance']:.4f} |")
    return "\n".join(lines) + "\n"


def plot(recs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    regimes = list(recs["table"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for i, regime in enumerate(regimes):  # final accuracy per variant, then paper 3's rank-1 projection of full
        rows = recs["table"][regime]["rows"]
        p3 = recs["paper3"][regime]
        means = [r["mean"] for r in rows.values()] + [p3["rank1_projection_acc"][0]]
        stds = [r["std"] or 0 for r in rows.values()] + [p3["rank1_projection_acc"][1] or 0]
        xs = [j + 0.4 * i for j in range(len(means))]
        axes[0].bar(xs, means, 0.4, yerr=stds, capsize=2, label=regime)
        axes[0].set_xticks([j + 0.2 for j in range(len(means))], [*rows, "rank-1 proj.\nof full"])
    base = recs["table"][regimes[0]]["base_greedy_acc"]
    axes[0].axhline(base, color="grey", ls="--", lw=1)
    axes[0].set_ylim(base - 0.02, None)  # from the SFT base (dashed): the gains, not the base, are compared
    axes[0].set_ylabel("final greedy accuracy (mean ± std)")
    axes[0].legend(loc="lower right", fontsize=8)
    for regime in regimes:  # paper 3: |cos| of each matrix, seed 1
        al = recs["paper3"][regime]["per_seed"][0]["per_matrix"]
        axes[1].hist([v["cos"] for v in al.values()], bins=20, range=(0, 1), alpha=0.6, label=regime)
    chance = recs["paper3"][regimes[0]]["per_seed"][0]["mean_chance"]
    axes[1].set_xlabel("|cos(dW_lora r=1, u1 v1^T of dW_full)| per matrix")
    axes[1].set_title(f"seed 1; 1 = the full update's top direction, chance ~{chance:.3f}", fontsize=9)
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--quick", action="store_true", default=bool(os.environ.get("QUICK")),
                   help="seed 1, fast regime only (also QUICK=1)")
    p.add_argument("--out", default="out/paper_results", help="runs (shared with paper_results and the "
                   "step-size map: the full fine-tuning runs are theirs)")
    p.add_argument("--parallel", type=int, default=2, help="jobs at once (each on one thread)")
    p.add_argument("--results", default=str(ROOT / "bench" / "results"))
    p.add_argument("--steps", type=int, default=150, help="GRPO steps of every run")
    p.add_argument("--n_eval", type=int, default=1000, help="held-out problems of every evaluation")
    p.add_argument("--train_flags", default="", help="train.py flags added to every run (a smoke test: "
                                                     "--prompts_per_step=4 --group_size=4)")
    args = p.parse_args()
    seeds = [int(s) for s in ("1" if args.quick else args.seeds).split(",")]
    regimes = ["fast"] if args.quick else list(P.REGIMES)
    out, t0, extra = Path(args.out), time.time(), args.train_flags.split() + [f"--steps={args.steps}"]
    n_eval = [f"--n_eval={args.n_eval}"]
    results, argvs = Path(args.results), {}

    def with_options(jobs):  # the later of two equal flags wins: the options above override P.RUN and P.EVAL
        jobs = [(n, argv + (extra if argv[1] == "train.py" else []) + n_eval) for n, argv in jobs]
        argvs.update(jobs)
        return jobs

    def go(jobs, keep=()):
        """Run the jobs not finished in --out whose part (a run's) is missing or holds another command;
        `keep`: runs whose weights a missing paper-3 comparison needs, rerun if their folder is gone."""
        for n, argv in jobs:  # finished before their part was written
            if argv[1] == "train.py" and P.done(argv) and not run_part(results, n, argv):
                save_run(results, out, n, argv)
        todo = [(n, argv) for n, argv in jobs if not P.done(argv) and (
            argv[1] != "train.py" or n in keep or not run_part(results, n, argv))]
        run_all(todo, args.parallel, out / "logs", on_done=lambda n, sec: (
            save_run(results, out, n, argvs[n], sec) if argvs[n][1] == "train.py" else None))

    def summary(name):
        return run_part(results, name, argvs[name])["summary"]

    # 1. full runs and the seed-1 lr sweep; the sweep's parts suffice to choose each rank's lr
    # the step-size map's committed SFT base (bench/results/step_size_map_base): one base for every toy bench
    base = M.ensure_map_base(out, ROOT / "bench" / "results")
    sweep = with_options(sweep_jobs(out, base, regimes, seeds))
    go(sweep)
    chosen = {(regime, r): choose_factor({f: summary(run_name(regime, r, f, seeds[0]))["final_greedy_acc"]
                                          for f in LR_FACTORS}) for regime in regimes for r in RANKS}
    r1_name = {(regime, s): run_name(regime, 1, chosen[regime, 1], s) for regime in regimes for s in seeds}
    later = with_options(seed_jobs(out, base, regimes, seeds, chosen))

    # 2. seeds 2-3 at the chosen lrs; a missing paper-3 part (of these two very runs) needs their weights
    def paper3_path(regime, s):
        return part_path(results, f"paper3_{regime}_s{s}")

    def paper3_commands(regime, s):
        return [argvs[run_name(regime, 0, 1, s)][1:], argvs[r1_name[regime, s]][1:]]
    todo3 = [(regime, s) for regime in regimes for s in seeds if not (
        paper3_path(regime, s).exists() and P.read(paper3_path(regime, s)).get("commands") == paper3_commands(regime, s))]
    go(sweep + later, keep={n for regime, s in todo3 for n in (run_name(regime, 0, 1, s), r1_name[regime, s])})

    # 3. paper 3: the rank-1 model of each full run, then the alignments, each seed's into its part
    go(with_options([job for regime, s in todo3 for job in analysis_jobs(out, [regime], [s], args.steps)]))

    def paper3_seed(regime, s):
        if (regime, s) in todo3:
            write_part(paper3_path(regime, s), {"commands": paper3_commands(regime, s), **paper3_record(
                out, regime, s, r1_name[regime, s], summary(r1_name[regime, s])["final_greedy_acc"], args.steps)})
        return P.read(paper3_path(regime, s))
    recs = report(out, base, regimes, seeds, chosen, summary, paper3_seed)
    recs.update(seeds=seeds, regimes={r: P.RUN + P.REGIMES[r] for r in regimes}, steps=args.steps,
                n_eval=args.n_eval, train_flags=args.train_flags, wall_seconds=time.time() - t0)
    suffix = "_quick" if args.quick else ""
    results.mkdir(parents=True, exist_ok=True)
    (results / f"lora{suffix}.json").write_text(json.dumps(recs, indent=1))
    (results / f"lora{suffix}.md").write_text(table_md(recs))
    plot(recs, results / f"lora{suffix}.png")
    print(table_md(recs))
    for regime, r in recs["paper3"].items():
        print(f"paper 3, {regime}: rank-1 projection of the full update {r['rank1_projection_acc'][0]:.3f}, rank-1 "
              f"LoRA {r['lora_r1_acc'][0]:.3f}, full {r['full_acc'][0]:.3f}; mean |cos| {r['mean_cos'][0]:.3f}")
    print(f"bench/lora.py: {len(seeds)} seed(s), {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
