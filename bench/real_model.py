"""
GRPO on a real pretrained model on the CPU, SmolLM2-135M-Instruct, and the three papers measured on its
checkpoints: the toy's findings, same analyses and verdict rules, on a model that was not trained here.

    python data/smollm2/prepare.py              # once: the model as a Hugging Face dir, data/smollm2/hf
    python bench/real_model.py                  # lr sweep, the run, every analysis -> bench/results/smollm2/
    python bench/real_model.py --seeds=1,2      # a second GRPO seed, if the time allows

The task was chosen before any paper metric, by a rule (bench/results/smollm2/task_choice.md): the base's
greedy held-out accuracy between 0.2 and 0.6, and one GRPO step (P x G samples and the update) at most about
a minute on 2 cores. The chosen one: the toy with one operation on operands 1..30, a system prompt asking for
the final answer alone in \\boxed{}, 24 new tokens (TASK below): base greedy 0.22 on 200 held-out problems, under
the reward that refuses arithmetic left undone and the question copied back (nanorlvr/verifier.py). Under the
reward before those two rules the number-only prompt was chosen, and the run learned to copy the question.

Steps, each a job of bench/jobs.py (one thread each, two at a time; a job whose output exists is skipped and
a training run killed midway resumes from its last checkpoint, so an interrupted bench continues where it
stopped):
  1. the runs, the lr sweep at full length: STEPS GRPO steps from --init_from=data/smollm2/hf at each of
     SWEEP_LRS side by side (seed 1), a checkpoint and a greedy evaluation on N_EVAL held-out problems every
     10 steps; step 0's evaluation is the base's. The lr is chosen by choose_lr's rule (stated there) on the
     accuracies at the last step; that run is "the run". With --seeds=1,2 the second seed then runs at it.
  2. on the run's checkpoints: analyze.py dlogp, linearity, rank1, alpharl, extrapolate (Eq. 2 inside and
     beyond) and sample.py --extrapolate=logits and --extrapolate=dlogp, two at a time (each holds at most
     three copies of the model plus a bounded working set; dlogp's token metrics on SmolLM2 peaked at
     2.9 GB, bench/RESULTS.md), each with its peak RSS logged.
As the runs end (before the analyses), their half of the results is written: runs/<lr>_<seed>/ (each run's
metrics.jsonl and summary.json), learning_curve.png and runs.json (the lr rule's rows, whether the run
learned, job seconds, machine). Outputs in bench/results/smollm2/ (metrics.jsonl, summary.json with base_greedy_acc, final_greedy_acc and
n_eval, learning_curve.png with every lr's curve, every analysis' report, findings.json with the
"SmolLM2-135M" column); the checkpoints (540 MB each) stay under --out, never in git.

Time, measured end to end (2026-12-03): 73 minutes for seed 1 on a 2-core Intel Xeon with AVX-512 (the two
runs side by side 21 and 25 min at 12-16 s a step, the analyses 48 min with a second seed's run beside them,
dlogp the longest at 36); the second seed adds a 27-minute run and its analyses. A loaded 2-core AVX2 EPYC
took 60-110 s a step (task_choice.json), so allow several hours there.
Each job's wall time goes into findings.json ("job_seconds"). Disk: about 6 GB of checkpoints per run.
"""
import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import paper_results as P  # noqa: E402
from bench.jobs import run_all  # noqa: E402
from bench.step_size_map import machine  # noqa: E402

PY = P.PY
MODEL = "data/smollm2/hf"
COLUMN = "SmolLM2-135M"
# the task chosen by the rule above (bench/results/smollm2/task_choice.json): toy problems, one operation
TASK = ["--n_ops=1", "--max_num=30", "--n_train=2000", "--n_test=250",
        "--system_prompt=Compute the result. Reply with only the final answer in \\boxed{}, no explanation.",
        "--max_new_tokens=24"]
# rollouts: 8 x 8 samples at temperature 0.5 (of 1.0 / 0.7 / 0.5 the one whose samples were right most often,
# task_choice.json); micro-batches of 16 rows keep an update near 4 GB instead of 9.5, so two jobs fit in RAM
ROLLOUT = ["--prompts_per_step=8", "--group_size=8", "--temperature=0.5", "--micro_batch=16", "--eval_k=0",
           "--threads=1"]
N_EVAL, STEPS, EVERY = 200, 100, 10
SWEEP_LRS = ("3e-6", "1e-5")  # the sweep at full length: each lr runs all STEPS, side by side
EVAL = [f"--n_eval={N_EVAL}", "--k=0", "--threads=1"]  # analyze.py: greedy accuracy on the run's held-out problems


def grpo(out, name, seed, lr, steps, save_every, eval_every, data_dir):
    return (name, [PY, "train.py", "--stage=grpo", f"--init_from={MODEL}", f"--out_dir={out}/{name}",
                   f"--data_dir={data_dir}", f"--seed={seed}", f"--lr={lr}", f"--steps={steps}",
                   f"--save_every={save_every}", f"--eval_every={eval_every}", f"--n_eval={N_EVAL}", *TASK, *ROLLOUT])


def pending(jobs):
    """The jobs still to run: a finished one (its output exists) is skipped, a training run killed midway
    continues from its last checkpoint (train.py --resume=true: exactly as if never stopped)."""
    todo = []
    for name, argv in jobs:
        if P.done(argv):
            continue
        run_dir = Path(next(a[10:] for a in argv if a.startswith("--out_dir="))) / "grpo" if argv[1] == "train.py" else None
        todo.append((name, argv + (["--resume=true"] if run_dir and (run_dir / "trainer_state.pt").exists() else [])))
    return todo


# a job run under this wrapper ends its log with its peak RSS (issue 27 asks each analysis' memory)
RSS = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
       "print('peak_rss_mb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); sys.exit(rc)")


def with_rss(jobs):
    return [(name, [PY, "-c", RSS, *argv]) for name, argv in jobs]


def peak_rss_mb(log_dir, names):
    """{job: peak RSS in MB} read back from the logs of jobs run with_rss."""
    peaks = {}
    for name in names:
        log = Path(log_dir) / f"{name.replace('/', '_')}.log"
        lines = [ln for ln in (log.read_text().splitlines() if log.exists() else []) if ln.startswith("peak_rss_mb")]
        if lines:
            peaks[name] = float(lines[-1].split()[1])
    return peaks


def run_name(lr, seed):
    return f"run/lr{lr}/s{seed}"


def sweep_jobs(out, seed=1):
    """The runs of the lr sweep: STEPS steps at each of SWEEP_LRS, side by side."""
    return run_jobs(out, [seed], SWEEP_LRS)


def sweep_rows(out, seed=1):
    """(lr, base accuracy, accuracy at the last step) of each sweep run, for choose_lr."""
    curves = {lr: P.eval_curve(Path(out) / run_name(lr, seed) / "grpo") for lr in SWEEP_LRS}
    return [(lr, c[0][1], c[-1][1]) for lr, c in curves.items()]


def choose_lr(rows):
    """The lr rule, fixed before the run: rows are (lr, base accuracy, accuracy after the sweep's steps) on the
    same N_EVAL problems. An lr whose accuracy fell below the base's by more than 2 standard errors
    (binomial, of one evaluation) has broken the model and is out; of the rest, the highest accuracy after
    the sweep wins, the larger lr on a tie (the faster drift, as the papers' runs are still rising); if
    every lr broke the model, the smallest."""
    def two_se(p):
        return 2 * math.sqrt(p * (1 - p) / N_EVAL)
    kept = [(acc, float(lr), lr) for lr, base, acc in rows if acc >= base - two_se(base)]
    if not kept:
        return min(rows, key=lambda r: float(r[0]))[0]
    return max(kept)[2]


def run_jobs(out, seeds, lrs):
    return [grpo(out, run_name(lr, s), s, lr, STEPS, EVERY, EVERY, f"{out}/data") for lr in lrs for s in seeds]


def analysis_jobs(out, seed, lr):
    """Every analysis the toy gets, on one run's checkpoints (sizes explicit, not analyze.py's defaults)."""
    run, a = f"{out}/{run_name(lr, seed)}/grpo", f"{out}/{run_name(lr, seed)}/analysis"
    first, last = P.ckpt_dir(run, 0), P.ckpt_dir(run, STEPS)
    mid = P.ckpt_dir(run, STEPS // 2)
    return [
        (f"s{seed}/linearity", [PY, "analyze.py", "linearity", f"--run={run}", "--n_probe=32", "--threads=1",
                                f"--out={a}/linearity"]),
        (f"s{seed}/rank1", [PY, "analyze.py", "rank1", f"--base={first}", f"--rl={last}", *EVAL, f"--out={a}/rank1"]),
        # Eq. 2 inside the run (steps 40, 70 -> 100, alpha 2) and beyond it (50, 100 -> alpha 1.5, 2)
        (f"s{seed}/eq2_inside", [PY, "analyze.py", "extrapolate", f"--run={run}", f"--t0={STEPS - 6 * EVERY}",
                                 f"--t1={STEPS - 3 * EVERY}", "--alpha=2", *EVAL, f"--out={a}/eq2_inside"]),
        (f"s{seed}/eq2_beyond", [PY, "analyze.py", "extrapolate", f"--run={run}", f"--t0={STEPS // 2}",
                                 f"--t1={STEPS}", "--alpha=1,1.5,2", *EVAL, f"--out={a}/eq2_beyond"]),
        (f"s{seed}/alpharl", [PY, "analyze.py", "alpharl", f"--run={run}", "--window=5,8", *EVAL, f"--out={a}/alpharl"]),
        (f"s{seed}/eq1", [PY, "sample.py", "--extrapolate=logits", f"--ckpt0={mid}", f"--ckpt1={last}", "--sweep=true",
                          "--alpha_sweep=1.5,2", f"--eval={N_EVAL}", "--k=0", "--threads=1", f"--out={a}/eq1.json"]),
        (f"s{seed}/dlogp", [PY, "analyze.py", "dlogp", f"--base={first}", f"--rl={last}", "--n_prompts=100",
                            "--samples=4", f"--n_eval={N_EVAL}", "--k=0", "--ratios=0.02,0.05,0.1,0.2", "--threads=1",
                            f"--out={a}/dlogp"]),
        (f"s{seed}/dlogp_extrapolation", [PY, "sample.py", "--extrapolate=dlogp", f"--base={first}", f"--rl={last}",
                                          "--sweep=true", "--gamma_sweep=0,0.1", "--tau_sweep=-0.3", f"--eval={N_EVAL}",
                                          "--k=0", "--threads=1", f"--out={a}/dlogp_extrapolation.json"]),
    ]


# -----------------------------------------------------------------------------
# the findings: paper_results' keys and verdict rules, in one column


def per_seed(out, seed, lr):
    """One run's numbers under findings.json's keys (RL-Extra and reweighting are not run here: absent)."""
    run, a = Path(out) / run_name(lr, seed) / "grpo", Path(out) / run_name(lr, seed) / "analysis"
    return measured(P.eval_curve(run), {name: P.read(a / name / "report.json") for name in
                                        ("linearity", "rank1", "alpharl", "eq2_inside", "eq2_beyond")},
                    P.read(a / "eq1.json"))


def measured(curve, reports, eq1_json):
    """The per-seed dict of findings.json from a run's evaluation curve and its analyses' reports."""
    lin, rank1, alpharl = reports["linearity"], reports["rank1"], reports["alpharl"]
    eq1 = {r["setting"]: r["greedy_acc"] for r in eq1_json["results"]}
    alpha = {r["alpha"]: r["acc"] for r in reports["eq2_beyond"]["alphas"]}
    x = {"base_acc": curve[0][1], "final_acc": curve[-1][1],
         "weight_r2_median": lin["weights"]["median"], "weight_r2_share_0.7": lin["weights"]["share_above_0.7"],
         "logprob_r2_median": lin["logprobs"]["median"],
         "eq2_inside": reports["eq2_inside"]["alphas"][0]["acc"] - reports["eq2_inside"]["acc_last"],
         "eq2_beyond_1.5": alpha[1.5] - alpha[1.0], "eq2_beyond_2": alpha[2.0] - alpha[1.0],
         "eq1_1.5": eq1["alpha=1.5"] - eq1["plain b"], "eq1_2": eq1["alpha=2"] - eq1["plain b"],
         "rank1_recovery": rank1["recovery"], "rank1_top1_share": rank1["top1_share"]["median"],
         "rank1_top1_norm_ratio": rank1.get("top1_norm_ratio")}
    win = {r["window"]: r for r in alpharl["windows"]}
    for K, name in ((5, "w50"), (8, "w80")):
        x[f"alpharl_{name}"], x[f"alpharl_{name}_rescaled"] = win[K]["retained"], win[K]["retained_rescaled"]
        x[f"alpharl_{name}_window"] = win[K]["acc_window"] / alpharl["acc_final"] if alpharl["acc_final"] else None
    return x


def column(seeds_x):
    """findings.json records of the "SmolLM2-135M" column: paper_results.findings (its rules, its skipping
    of findings not measured), the accuracy gain (a paired difference, the "gain" rule), and AlphaRL's
    printed ratio beside the energy share."""
    records = P.findings({COLUMN: seeds_x})
    gains = [x["final_acc"] - x["base_acc"] for x in seeds_x]
    ratios = [x.get("rank1_top1_norm_ratio") for x in seeds_x]
    for key, xs, kind, what in (("accuracy_gain", gains, ("gain",), "greedy held-out accuracy, last step minus base"),
                                ("rank1_top1_norm_ratio", ratios, ("none",), "AlphaRL's printed ratio Σs1 / Σ‖ΔW‖_F")):
        m, sd, n = P.mean_sd(xs)
        records.append({"finding": key, "paper": 3 if key.startswith("rank1") else 0, "what": what,
                        "regime": COLUMN, "paper_figure": "", "mean": m, "std": sd, "seeds": n, "per_seed": xs,
                        "verdict": P.verdict(kind, m, sd, n), "rule": list(kind), "command": "bench/real_model.py"})
    return records


def learning_ok(curve):
    """Whether the held-out accuracy rose by more than two standard errors (of the difference of two
    evaluations on the same N problems, each binomial) from step 0 to the last step."""
    (_, p0), (_, p1) = curve[0], curve[-1]
    se = math.sqrt((p0 * (1 - p0) + p1 * (1 - p1)) / N_EVAL)
    return p1 - p0 > 2 * se


def plot_curve(curves, path, exact=None):
    """Held-out greedy accuracy against step, +- 2 standard errors, one line per run ({label: curve}); with
    `exact` ({label: curve}) each run's exact-match accuracy dashed beside it (the verifier's figure can rise
    by a hack its exact match does not share)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for label, curve in curves.items():
        steps, accs = [s for s, _ in curve], [a for _, a in curve]
        err = [2 * math.sqrt(a * (1 - a) / N_EVAL) for a in accs]
        line = ax.errorbar(steps, accs, yerr=err, fmt="o-", ms=3, lw=1, capsize=2, label=label)
        if exact and label in exact:
            ax.plot([s for s, _ in exact[label]], [a for _, a in exact[label]], "--", lw=1,
                    color=line[0].get_color(), label=f"{label}: exact match")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel(f"greedy accuracy, {N_EVAL} held-out problems")
    ax.set_title(f"{COLUMN}-Instruct, GRPO on the CPU (± 2 SE)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_runs(out, results, seeds, sweep, lr, seconds):
    """The runs' half of the results, written as soon as the runs end (the analyses take another 40 minutes
    and need the checkpoints, which do not outlive the machine): every run's metrics.jsonl and summary.json,
    the learning curves, the lr rule's rows and whether the run learned."""
    results.mkdir(parents=True, exist_ok=True)
    names = {(x, seeds[0]) for x in SWEEP_LRS} | {(lr, s) for s in seeds}
    for x, s in sorted(names):
        d = results / "runs" / f"lr{x}_s{s}"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / run_name(x, s) / "grpo" / "metrics.jsonl", d / "metrics.jsonl")
        shutil.copy(out / run_name(x, s) / "summary.json", d / "summary.json")
    runs = {**{f"lr {lr}, seed {s} (the run)": (lr, s) for s in seeds},
            **{f"lr {x}, seed {seeds[0]}": (x, seeds[0]) for x in SWEEP_LRS if x != lr}}
    acc = {k: P.eval_curve(out / run_name(*v) / "grpo") for k, v in runs.items()}
    exact = {k: P.eval_curve(out / run_name(*v) / "grpo", "greedy_exact_match") for k, v in runs.items()}
    plot_curve(acc, results / "learning_curve.png", exact=exact)
    the_run = {s: f"lr {lr}, seed {s} (the run)" for s in seeds}
    learned = {"learned": {s: learning_ok(acc[k]) for s, k in the_run.items()},
               "learned_exact_match": {s: learning_ok(exact[k]) for s, k in the_run.items()}}
    path = results / "runs.json"  # a --report_only rewrite keeps the seconds the runs took
    kept = P.read(path).get("job_seconds", {}) if path.exists() and not seconds else {}
    path.write_text(json.dumps(
        {"lr_sweep": {"rows": sweep, "chosen": lr, "steps": STEPS}, "flags": TASK + ROLLOUT, **learned,
         "job_seconds": seconds or kept, "machine": machine(), "date": time.strftime("%Y-%m-%d")}, indent=1))
    return {s: acc[k] for s, k in the_run.items()}, learned


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--seeds", default="1", help="GRPO seeds of the run (the sweep uses the first)")
    p.add_argument("--out", default="out/real_model", help="runs and checkpoints (never committed)")
    p.add_argument("--parallel", type=int, default=2, help="training jobs at once (each on one thread, ~4 GB)")
    p.add_argument("--analysis_parallel", type=int, default=2, help="analyses at once (each ~3 GB on SmolLM2)")
    p.add_argument("--results", default=str(ROOT / "bench" / "results" / "smollm2"))
    p.add_argument("--report_only", action="store_true", help="re-read finished runs, train nothing")
    args = p.parse_args(argv)
    seeds, out, results, t0 = [int(s) for s in args.seeds.split(",")], Path(args.out), Path(args.results), time.time()
    if not args.report_only and not (ROOT / MODEL / "model.safetensors").exists():
        sys.exit(f"error: {MODEL} is missing: build it with `python data/smollm2/prepare.py`")
    seconds = {}
    if not args.report_only:
        seconds.update(run_all(pending(sweep_jobs(out, seeds[0])), args.parallel, out / "logs"))
    sweep = sweep_rows(out, seeds[0])
    lr = choose_lr(sweep)
    print(f"lr sweep (lr, base, after {STEPS} steps): {sweep} -> lr {lr}")
    analyses = [j for s in seeds for j in analysis_jobs(out, s, lr)]
    if not args.report_only:
        seconds.update(run_all(pending(run_jobs(out, seeds[1:], [lr])), args.parallel, out / "logs"))
    curves, learned = write_runs(out, results, seeds, sweep, lr, seconds)
    if not args.report_only:
        seconds.update(run_all(with_rss(pending(analyses)), args.analysis_parallel, out / "logs"))
    # the results: the first seed's run files and reports (no checkpoints), the column
    first = out / run_name(lr, seeds[0])
    shutil.copy(first / "grpo" / "metrics.jsonl", results / "metrics.jsonl")
    shutil.copy(first / "summary.json", results / "summary.json")
    shutil.copytree(first / "analysis", results / "reports", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.pt", "*.safetensors"))
    xs = [per_seed(out, s, lr) for s in seeds]
    records = column(xs)
    a = first / "analysis"
    records += P.dlogp_findings({COLUMN: P.read(a / "dlogp/report.json")}, seeds[0], {COLUMN: {
        r["setting"]: r["greedy_acc"] for r in P.read(a / "dlogp_extrapolation.json")["results"]}})
    path = results / "findings.json"  # a --report_only rewrite keeps the seconds and machine of the jobs
    kept = {k: v for k, v in P.read(path).items() if k in ("job_seconds", "wall_seconds", "machine")} \
        if args.report_only and path.exists() else {}
    path.write_text(json.dumps(
        {"column": COLUMN, "seeds": seeds, "lr": lr,
         "lr_sweep": {"rows": sweep, "chosen": lr, "steps": STEPS,
                      "curves": {x: P.eval_curve(out / run_name(x, seeds[0]) / "grpo") for x in SWEEP_LRS}},
         "flags": TASK + ROLLOUT, **learned,  # learned_exact_match false beside a true learned: a reward hack
         "findings": records, "per_seed": xs, "job_peak_rss_mb": peak_rss_mb(out / "logs", [n for n, _ in analyses]),
         **(kept if args.report_only else {"job_seconds": seconds, "wall_seconds": time.time() - t0,
                                            "machine": machine()})}, indent=1))
    for r in records:
        m = r.get("mean")
        print(f"{r['finding']:>26}: {m if m is None else round(m, 3)} ({r['verdict']})")
    print(f"real_model: held-out {statistics.mean(c[0][1] for c in curves.values()):.3f} -> "
          f"{statistics.mean(c[-1][1] for c in curves.values()):.3f}; {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
