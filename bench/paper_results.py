"""
The three papers' findings on the toy, in two regimes, several seeds each (bench/paper_results.sh runs it).

  fast   the quickstart's GRPO (lr 1e-4, one optimizer step per rollout): the gain comes in a jump
  paper  the papers' kind of run: a slow drift (lr chosen by bench/lr_sweep.py's rule), four optimizer
         steps per rollout (so PPO's clip acts), DAPO's dynamic sampling with refill

Every run starts from the same SFT base (the quickstart's) and differs only in its GRPO seed. Accuracy is
greedy accuracy on 1,000 held-out problems throughout. Writes bench/results/findings.json (one record per
finding and regime: the paper's figure, ours as mean +- std over seeds, a verdict), the results table
bench/results/paper_results.md and the weight-trajectory plot bench/results/weight_trajectories.png.

    python bench/paper_results.py [--seeds=1,2,3] [--quick]    # --quick: one seed (a preview, no verdicts)
"""
import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.jobs import run_all  # noqa: E402

PY = sys.executable
# the two regimes: train.py flags on top of RUN (the README's paper-regime command uses these; a test checks)
FAST = ["--lr=1e-4"]
PAPER = ["--lr=1e-5", "--n_minibatches=4", "--dynamic_sampling=true"]
REGIMES = {"fast": FAST, "paper": PAPER}
TITLES = {"fast": "fast regime: lr 1e-4", "paper": "paper regime: lr 1e-5, 4 optimizer steps per rollout, DAPO sampling"}
# every GRPO run: 150 steps, a checkpoint and a greedy evaluation on 1,000 held-out problems every 10
RUN = ["--steps=150", "--save_every=10", "--eval_every=10", "--n_eval=1000", "--eval_k=0", "--threads=1"]
EVAL = ["--n_eval=1000", "--k=0", "--threads=1"]  # analyze.py: greedy accuracy on the same 1,000 problems


def ensure_base(out):
    """The quickstart's SFT base under out/base (trained if missing, on all threads)."""
    base = Path(out) / "base"
    if not (base / "config.json").exists():
        subprocess.run([PY, "train.py", "--stage=sft", f"--base_dir={base}"], check=True, cwd=ROOT)
    return base


def metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def eval_curve(run_dir, key="greedy_acc"):
    """[(step, greedy accuracy)] of a run's evaluations (step 0 = the base)."""
    return [(r["step"], r["eval"][key]) for r in metrics(run_dir) if "eval" in r]


def ckpt_dir(run_dir, step):
    return Path(run_dir) / f"step_{step:06d}"


def at_step(curve, step):
    return dict(curve)[step]


def mean_sd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None, 0
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else None), len(xs)


# -----------------------------------------------------------------------------
# the jobs: training runs first, then the analyses of each run


def train_jobs(out, base, seeds, extra=()):
    """(name, argv) of every training run, longest first. extra: train.py flags added to every run."""
    jobs = []

    def grpo(name, seed, *flags):
        # --resume=true: a rerun after a crash continues a job's half-done run (train.py refuses to overwrite it)
        jobs.append((name, [PY, "train.py", "--stage=grpo", f"--base_dir={base}", f"--out_dir={out}/{name}",
                            f"--seed={seed}", *RUN, *flags, *extra, "--resume=true"]))
    for s in seeds:
        grpo(f"paper/s{s}", s, *PAPER)
        grpo(f"fast/s{s}", s, *FAST)
    for s in seeds:  # paper 1's token weights: compared with the runs above at the same step
        for mode in ("lowprob", "dominate"):
            grpo(f"reweight_{mode}_paper/s{s}", s, *PAPER, f"--reweight={mode}", "--steps=100", "--eval_every=0",
                 "--save_every=100")
            grpo(f"reweight_{mode}_fast/s{s}", s, *FAST, f"--reweight={mode}", "--steps=40", "--eval_every=0",
                 "--save_every=40")
    for s in seeds:  # paper 2, Eq. 3: RL-Extra (10 real steps, then a jump of 10)
        for opt in ("reset", "keep"):
            grpo(f"rlextra_{opt}_paper/s{s}", s, *PAPER, "--rl_extra=10,10", f"--rl_extra_optimizer={opt}")
        grpo(f"rlextra_reset_fast/s{s}", s, *FAST, "--rl_extra=10,10", "--rl_extra_optimizer=reset")
    return jobs


def done(argv):
    """Whether a job's output is already there (a rerun after a crash skips finished jobs)."""
    for a in argv:
        if a.startswith("--out_dir="):
            return (Path(a[10:]) / "summary.json").exists()
        if a.startswith("--out="):
            return Path(a[6:]).is_file() if a.endswith(".json") else (Path(a[6:]) / "report.json").exists()
    return False


def run_analyses(out, name, s):
    """(name, argv) of the analyses of one GRPO run, out/name/s<s>/grpo (bench/step_size_map.py's too)."""
    run, a = f"{out}/{name}/s{s}/grpo", f"{out}/{name}/s{s}/analysis"
    return [
        (f"{name}/s{s}/linearity", [PY, "analyze.py", "linearity", f"--run={run}", "--n_probe=64",
                                    "--threads=1", f"--out={a}/linearity"]),
        # Eq. 2 both ways: steps 50, 100 -> 150 (alpha 2: is the real step 150 on the line?) and
        # 100, 150 -> beyond the run (alpha 1.5, 2: steps 175, 200)
        (f"{name}/s{s}/eq2_inside", [PY, "analyze.py", "extrapolate", f"--run={run}", "--t0=50", "--t1=100",
                                     "--alpha=2", *EVAL, f"--out={a}/eq2_inside"]),
        (f"{name}/s{s}/eq2_beyond", [PY, "analyze.py", "extrapolate", f"--run={run}", "--t0=100",
                                     "--t1=150", "--alpha=1,1.5,2", *EVAL, f"--out={a}/eq2_beyond"]),
        (f"{name}/s{s}/eq1", [PY, "sample.py", "--extrapolate=logits", f"--ckpt0={ckpt_dir(run, 100)}",
                              f"--ckpt1={ckpt_dir(run, 150)}", "--sweep=true", "--alpha_sweep=1.5,2",
                              "--eval=1000", "--k=0", "--threads=1", f"--out={a}/eq1.json"]),
        (f"{name}/s{s}/rank1", [PY, "analyze.py", "rank1", f"--base={ckpt_dir(run, 0)}",
                                f"--rl={ckpt_dir(run, 150)}", *EVAL, f"--out={a}/rank1"]),
        (f"{name}/s{s}/alpharl", [PY, "analyze.py", "alpharl", f"--run={run}", "--window=5,8", *EVAL,
                                  f"--out={a}/alpharl"]),
    ]


def analysis_jobs(out, seeds, dlogp_seed):
    jobs = []
    for regime in REGIMES:
        for s in seeds:
            jobs += run_analyses(out, regime, s)
        run, a = f"{out}/{regime}/s{dlogp_seed}/grpo", f"{out}/{regime}/s{dlogp_seed}/analysis"
        jobs.append((f"{regime}/s{dlogp_seed}/dlogp", [PY, "analyze.py", "dlogp", f"--base={ckpt_dir(run, 0)}",
                                                       f"--rl={ckpt_dir(run, 150)}", "--n_prompts=200", "--n_eval=500",
                                                       "--k=0", "--ratios=0.02,0.05,0.1,0.2", "--threads=1",
                                                       f"--out={a}/dlogp"]))
        # paper 1's test-time extrapolation: base leads, the gate (dlogp <= -0.3) hands the token to the RL
        # model (gamma 0: replace only) or to the extrapolated distribution (gamma 0.1)
        jobs.append((f"{regime}/s{dlogp_seed}/dlogp_extrapolation",
                     [PY, "sample.py", "--extrapolate=dlogp", f"--base={ckpt_dir(run, 0)}", f"--rl={ckpt_dir(run, 150)}",
                      "--sweep=true", "--gamma_sweep=0,0.1", "--tau_sweep=-0.3", "--eval=1000", "--k=0",
                      "--threads=1", f"--out={a}/dlogp_extrapolation.json"]))
    return jobs


# -----------------------------------------------------------------------------
# reading the runs back: one number per (finding, regime, seed)


def read(path):
    return json.loads(Path(path).read_text())


def entropy(run_dir, last_step):
    """Mean policy entropy over the 10 steps up to last_step."""
    rows = [r for r in metrics(run_dir) if "entropy" in r and last_step - 10 < r["step"] <= last_step]
    return statistics.mean(r["entropy"] for r in rows) if rows else None


def steps_to(curve, target):
    """The first (real) step whose accuracy reaches target (None if none does)."""
    return next((s for s, a in curve if a >= target), None)


def per_seed(out, regime, s):
    """Every measured number of one regime and seed, by finding."""
    run, a = Path(out) / regime / f"s{s}" / "grpo", Path(out) / regime / f"s{s}" / "analysis"
    curve, rows = eval_curve(run), metrics(run)
    steps = [r for r in rows if "reward" in r]
    lin, rank1, alpharl = read(a / "linearity/report.json"), read(a / "rank1/report.json"), read(a / "alpharl/report.json")
    eq2_in, eq2_out = read(a / "eq2_inside/report.json"), read(a / "eq2_beyond/report.json")
    eq1 = {r["setting"]: r["greedy_acc"] for r in read(a / "eq1.json")["results"]}
    alpha = {r["alpha"]: r["acc"] for r in eq2_out["alphas"]}
    win = {r["window"]: r for r in alpharl["windows"]}
    x = {"base_acc": curve[0][1], "final_acc": curve[-1][1],
         "clip_frac": statistics.mean(r.get("clip_frac", 0.0) for r in steps),
         "zero_var_frac": statistics.mean(r["zero_var_frac"] for r in steps),
         "sample_rounds": statistics.mean(r.get("sample_rounds", 1) for r in steps),
         "weight_r2_median": lin["weights"]["median"], "weight_r2_share_0.7": lin["weights"]["share_above_0.7"],
         "logprob_r2_median": lin["logprobs"]["median"],
         "eq2_inside": eq2_in["alphas"][0]["acc"] - eq2_in["acc_last"],
         "eq2_beyond_1.5": alpha[1.5] - alpha[1.0], "eq2_beyond_2": alpha[2.0] - alpha[1.0],
         "eq1_1.5": eq1["alpha=1.5"] - eq1["plain b"], "eq1_2": eq1["alpha=2"] - eq1["plain b"],
         "rank1_recovery": rank1["recovery"], "rank1_top1_share": rank1["top1_share"]["median"]}
    for K, name in ((5, "w50"), (8, "w80")):
        r = win[K]
        x[f"alpharl_{name}"], x[f"alpharl_{name}_rescaled"] = r["retained"], r["retained_rescaled"]
        x[f"alpharl_{name}_window"] = r["acc_window"] / alpharl["acc_final"] if alpharl["acc_final"] else None
    # paper 1's token weights, against this run at the same step
    at = 100 if regime == "paper" else 40
    for mode in ("lowprob", "dominate"):
        rw = Path(out) / f"reweight_{mode}_{regime}" / f"s{s}"
        x[f"reweight_{mode}"] = read(rw / "summary.json")["final_greedy_acc"] - at_step(curve, at)
        e_rw, e_plain = entropy(rw / "grpo", at), entropy(run, at)
        x[f"reweight_{mode}_entropy"] = e_rw - e_plain if None not in (e_rw, e_plain) else None
    # RL-Extra: real steps to 90% of this run's gain, and the final accuracy at the same total steps
    target = curve[0][1] + 0.9 * (curve[-1][1] - curve[0][1])
    for opt in (("reset", "keep") if regime == "paper" else ("reset",)):
        rx_rows = metrics(Path(out) / f"rlextra_{opt}_{regime}" / f"s{s}" / "grpo")
        real = {0: 0, **{r["step"]: r["real_steps"] for r in rx_rows if "real_steps" in r}}
        rx = [r for r in rx_rows if "eval" in r]
        rx_curve = [(real[r["step"]], r["eval"]["greedy_acc"]) for r in rx]
        n_std, n_rx = steps_to(curve, target), steps_to(rx_curve, target)
        x[f"rlextra_{opt}_speedup"] = n_std / n_rx if n_std and n_rx else None
        x[f"rlextra_{opt}_final"] = rx[-1]["eval"]["greedy_acc"] - curve[-1][1]
    return x


# -----------------------------------------------------------------------------
# findings: the paper's figure, ours (mean +- std over seeds) and a verdict by a rule fixed in advance

# (key, paper, finding, the paper's figure, verdict rule (see verdict), the command that measures it)
FINDINGS = [
    ("weight_r2_share_0.7", 2, "weights: share of entries with R² > 0.7", "> 0.70", ("level", 0.7, 0.5),
     "analyze.py linearity"),
    ("weight_r2_median", 2, "weights: median R² vs step", "~0.9 (peak)", ("level", 0.8, 0.6), "analyze.py linearity"),
    ("logprob_r2_median", 2, "log-probs: median R² vs step", "~0.9 (peak)", ("level", 0.8, 0.6),
     "analyze.py linearity"),
    ("eq2_inside", 2, "Eq. 2: W₅₀ + 2 (W₁₀₀ − W₅₀) minus the real step 150", "≈ 0 (the path is a line)",
     ("match", 0.03), "analyze.py extrapolate --t0=50 --t1=100"),
    ("eq2_beyond_1.5", 2, "Eq. 2: W₁₀₀ + 1.5 (W₁₅₀ − W₁₀₀) minus step 150", "gain for α 1.3–3", ("gain",),
     "analyze.py extrapolate --t0=100 --t1=150"),
    ("eq1_1.5", 2, "Eq. 1: logits z₁₀₀ + 1.5 (z₁₅₀ − z₁₀₀) minus step 150", "+0.019 (0.448 → 0.467)", ("gain",),
     "sample.py --extrapolate=logits"),
    ("rlextra_reset_speedup", 2, "Eq. 3, RL-Extra (10, 10), optimizer reset: real steps to 90% of the gain, "
     "standard / RL-Extra", "6.1× (1100 vs 180)", ("level", 1.5, 1.1), "train.py --rl_extra=10,10"),
    ("rlextra_reset_final", 2, "Eq. 3, RL-Extra (10, 10), reset: accuracy at step 150 (75 real) minus standard",
     "+2–6% relative at fixed budgets", ("gain",), "train.py --rl_extra=10,10"),
    ("rlextra_keep_speedup", 2, "Eq. 3, RL-Extra (10, 10), optimizer kept: speedup as above", "(not in the paper)",
     ("level", 1.5, 1.1), "train.py --rl_extra=10,10 --rl_extra_optimizer=keep"),
    ("rlextra_keep_final", 2, "Eq. 3, RL-Extra (10, 10), kept: accuracy at step 150 minus standard",
     "(not in the paper)", ("gain",), "train.py --rl_extra=10,10 --rl_extra_optimizer=keep"),
    ("rank1_recovery", 3, "rank-1 update (norm-matched): share of the RL gain recovered", "> 0.99",
     ("level", 0.9, 0.6), "analyze.py rank1"),
    ("rank1_top1_share", 3, "top singular component's share of each update's energy (median)", "(dominant)",
     ("none",), "analyze.py rank1"),
    ("alpharl_w80", 3, "AlphaRL from steps 10–80 (1.9×): predicted / final accuracy", "> 0.96 at up to 2.5×",
     ("level", 0.96, 0.9), "analyze.py alpharl --window=5,8"),
    ("alpharl_w80_rescaled", 3, "AlphaRL from steps 10–80, norm-rescaled: predicted / final", "(not in the paper)",
     ("level", 0.96, 0.9), "analyze.py alpharl --window=5,8"),
    ("alpharl_w80_window", 3, "… the step-80 checkpoint itself / final (stopping early)", "(baseline)", ("none",),
     "analyze.py alpharl --window=5,8"),
    ("alpharl_w50", 3, "AlphaRL from steps 10–50 (3×): predicted / final", "> 0.96 at up to 2.5×",
     ("level", 0.96, 0.9), "analyze.py alpharl --window=5,8"),
    ("alpharl_w50_rescaled", 3, "AlphaRL from steps 10–50, norm-rescaled: predicted / final", "(not in the paper)",
     ("level", 0.96, 0.9), "analyze.py alpharl --window=5,8"),
    ("reweight_lowprob", 1, "low-prob. reweighting (c 0.2) minus plain GRPO, same step (fast 40, paper 100)",
     "+3 to +6 AIME points", ("gain",), "train.py --reweight=lowprob"),
    ("reweight_dominate", 1, "'Dominate' weights minus plain GRPO, same step", "below lowprob", ("gain",),
     "train.py --reweight=dominate"),
    ("reweight_lowprob_entropy", 1, "low-prob. reweighting: policy entropy minus plain's (last 10 steps)",
     "entropy does not collapse", ("none",), "train.py --reweight=lowprob"),
]
CONTEXT = [("base_acc", "SFT base, greedy accuracy"), ("final_acc", "after 150 GRPO steps"),
           ("clip_frac", "PPO clip fraction (mean over steps)"), ("zero_var_frac", "groups with equal rewards"),
           ("sample_rounds", "rollouts per step (dynamic sampling)")]


def verdict(kind, m, sd, n):
    """level (hi, lo): yes if the mean reaches hi, partly if lo, else no. match (tol): the two points agree
    within tol (2 binomial standard errors of one evaluation on 1,000 problems). gain: a paired difference,
    real only beyond 2 standard errors of its mean over seeds."""
    if kind[0] == "none":
        return "-"
    if m is None:
        return "not reached"
    if kind[0] == "level":
        return "yes" if m >= kind[1] else "partly" if m >= kind[2] else "no"
    if kind[0] == "match":
        return "yes" if abs(m) <= kind[1] else "partly" if abs(m) <= 2 * kind[1] else "no"
    if n < 2:
        return "1 seed: no verdict"
    se = sd / n ** 0.5
    return "yes" if m > 2 * se else "no" if m < -2 * se else "inside the noise"


def findings(per_regime):
    """per_regime: {regime: [per_seed dict]} -> findings.json records."""
    records = []
    for key, paper, what, figure, kind, command in FINDINGS:
        for regime, seeds in per_regime.items():
            xs = [x.get(key) for x in seeds]
            if all(v is None for v in xs) and key not in seeds[0]:
                continue  # not measured in this regime (RL-Extra with the optimizer kept: paper regime only)
            m, sd, n = mean_sd(xs)
            records.append({"finding": key, "paper": paper, "what": what, "regime": regime, "paper_figure": figure,
                            "mean": m, "std": sd, "seeds": n, "per_seed": xs,
                            "verdict": verdict(kind, m, sd, n), "rule": list(kind), "command": command})
    return records


def dlogp_findings(dlogp, seed, extrapolation):
    """Paper 1's token analysis (one seed per regime): how well each per-token statistic separates RL-generated
    from base-generated text, and the replacement ratio each gate needs for 90% of the base -> RL gap."""
    records = []
    for regime, d in dlogp.items():
        sep = {m: v["separation"] for m, v in d["separability"].items()}
        reach = d["replacement"]["ratio_to_90pct_gap"]
        others = [v for c, v in reach.items() if c != "dlogp"]
        best = reach["dlogp"] is not None and all(v is None or reach["dlogp"] < v for v in others)
        records += [
            {"finding": "dlogp_separation", "paper": 1, "regime": regime, "seeds": 1, "per_seed": [sep],
             "what": "separation of RL from base text, 2 abs(AUC − 0.5) (dlogp vs KL vs entropy)",
             "paper_figure": "dlogp separates, KL / entropy barely", "seed": seed,
             "verdict": "yes" if sep["dlogp"] > max(v for m, v in sep.items() if m != "dlogp") else "no"},
            {"finding": "dlogp_replacement", "paper": 1, "regime": regime, "seeds": 1, "per_seed": [reach],
             "what": "replacement ratio reaching 90% of the base -> RL gap, by gate",
             "paper_figure": "dlogp ~0.05, KL ~0.14, entropy ~0.19, random never", "seed": seed,
             "verdict": "yes" if best else "no"}]
        x = extrapolation[regime]
        accs = {"replace only": x["gate dlogp tau=-0.3 gamma=0"], "RL model": x["plain b"],
                "extrapolate γ 0.1": x["gate dlogp tau=-0.3 gamma=0.1"]}
        gain = accs["extrapolate γ 0.1"] - max(accs["replace only"], accs["RL model"])
        two_se = 2 * (accs["RL model"] * (1 - accs["RL model"]) / 1000) ** 0.5  # one evaluation on 1,000 problems
        records.append({"finding": "dlogp_extrapolation", "paper": 1, "regime": regime, "seeds": 1,
                        "per_seed": [accs], "seed": seed, "what": "test-time extrapolation, base leads, gate "
                        "dlogp <= -0.3: greedy accuracy (replace only / RL model / extrapolate γ 0.1)",
                        "paper_figure": "43.3 / 46.2 / 47.5 (ORZ-32B, AIME24)",
                        "verdict": "yes" if gain > two_se else "no" if gain < -two_se else "inside the noise"})
    return records


def dlogp_table(records):
    rows = {(r["finding"], r["regime"]): r for r in records if r["finding"].startswith("dlogp_")}
    if not rows:
        return ""
    def show(x):
        return " / ".join(f"{k} {v:.3f}" if v is not None else f"{k} never" for k, v in x.items())
    lines = ["", "Paper 1, token analysis and test-time extrapolation (one seed per regime; `analyze.py dlogp`, `sample.py --extrapolate=dlogp`):", "",
             "| finding | paper's figure | fast | paper regime | verdict fast / paper |", "|---|---|---|---|---|"]
    for key in ("dlogp_separation", "dlogp_replacement", "dlogp_extrapolation"):
        f, p = rows[(key, "fast")], rows[(key, "paper")]
        lines.append(f"| {f['what']} | {f['paper_figure']} | {show(f['per_seed'][0])} | {show(p['per_seed'][0])} | "
                     f"{f['verdict']} / {p['verdict']} |")
    return "\n".join(lines) + "\n"


def cell(rec):
    if rec is None:
        return "—"
    if rec["mean"] is None:
        return "not reached"
    s = f"{rec['mean']:+.3f}" if rec["rule"][0] in ("gain", "match") else f"{rec['mean']:.3f}"
    return s + (f" ± {rec['std']:.3f}" if rec["std"] is not None else "")


def table(records, per_regime):
    """The README's results table (markdown), rendered from the records."""
    by = {(r["finding"], r["regime"]): r for r in records}
    lines = ["| paper | finding | paper's figure | fast (lr 1e-4) | paper regime | verdict fast / paper | command |",
             "|---|---|---|---|---|---|---|"]
    for key, paper, what, figure, kind, command in FINDINGS:
        f, p = by.get((key, "fast")), by.get((key, "paper"))
        lines.append(f"| {paper} | {what} | {figure} | {cell(f)} | {cell(p)} | "
                     f"{f['verdict'] if f else '—'} / {p['verdict'] if p else '—'} | `{command}` |")
    for key, what in CONTEXT:
        vals = {reg: mean_sd([x[key] for x in xs]) for reg, xs in per_regime.items()}
        spec = ".1e" if key == "clip_frac" else ".3f"  # the clip fraction is small: show its size
        lines.append(f"| | {what} | | " + " | ".join(f"{m:{spec}}" + (f" ± {sd:{spec}}" if sd is not None else "")
                                                    for m, sd, _ in vals.values()) + " | | |")
    return "\n".join(lines) + "\n"


# the README's short table: one row per headline finding (the whole table is docs/results.md's)
SHORT = ("weight_r2_median", "logprob_r2_median", "eq2_beyond_1.5", "eq1_1.5", "rlextra_reset_final",
         "rank1_recovery", "alpharl_w80", "reweight_lowprob", "dlogp_separation", "dlogp_replacement")


def short_table(records, where=None, real=None):
    """The README's results table: the finding, the paper's figure, ours in both regimes, the verdicts; with
    `where` ({finding: text}, bench/step_size_map.where_it_holds) where it holds on the step-size map; with
    `real` (the records of bench/results/smollm2/findings.json) the pretrained model's column."""
    by = {(r["finding"], r["regime"]): r for r in records}
    real_by = {r["finding"]: r for r in real or []}
    what = {key: (paper, w) for key, paper, w, *_ in FINDINGS}

    def show(x):  # Δlog p's figure beside the other gates'
        return ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} never" for k, v in x.items()
                         if k in ("dlogp", "kl", "entropy"))

    def real_cell(key):
        r = real_by.get(key)
        if r is None:
            return "not run"
        return f"{show(r['per_seed'][0]) if key.startswith('dlogp_') else cell(r)} ({r['verdict']})"

    seeds = max((r["seeds"] for r in real or []), default=0)
    lines = ["| paper | finding | paper's figure | ours: fast / paper regime | verdict fast / paper |"
             + (" holds at (update per rollout) |" if where else "")
             + (f" SmolLM2-135M ({seeds} seed{'s' * (seeds > 1)}) |" if real else ""),
             "|---|---|---|---|---|" + ("---|" if where else "") + ("---|" if real else "")]
    for key in SHORT:
        f, p = by[(key, "fast")], by[(key, "paper")]
        if key.startswith("dlogp_"):  # one seed, several gates
            paper, w, ours = 1, f["what"], f"fast: {show(f['per_seed'][0])}; paper: {show(p['per_seed'][0])}"
        else:
            (paper, w), ours = what[key], f"{cell(f)} / {cell(p)}"
        holds = f" {where.get(key, '(not mapped)')} |" if where else ""
        extra = f" {real_cell(key)} |" if real else ""
        lines.append(f"| {paper} | {w} | {f['paper_figure']} | {ours} | {f['verdict']} / {p['verdict']} |{holds}{extra}")
    return "\n".join(lines) + "\n"


def plot_trajectories(out, path, seed, matrix="model.layers.1.mlp.up_proj.weight", n=4):
    """A few weight entries of one matrix against step, in both regimes: the n entries (of a fixed random
    sample of 2,000) that moved most by step 150, each as its change from step 0."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nanorlvr.infra import checkpoint as ckpt
    fig, axes = plt.subplots(1, len(REGIMES), figsize=(5 * len(REGIMES), 3.4))
    for ax, regime in zip(axes, REGIMES):
        ckpts = ckpt.list_checkpoints(Path(out) / regime / f"s{seed}" / "grpo")
        w = torch.stack([next(ckpt.stream_tensors([p], matrix)).flatten() for _, p in ckpts])  # (steps, entries)
        sample = torch.randperm(w.size(1), generator=torch.Generator().manual_seed(0))[:2000]
        moved = sample[(w[-1, sample] - w[0, sample]).abs().argsort(descending=True)[:n]]
        for i in moved.tolist():
            ax.plot([s for s, _ in ckpts], (w[:, i] - w[0, i]).tolist(), "o-", ms=2.5, lw=1)
        ax.set_title(TITLES[regime], fontsize=9)
        ax.set_xlabel("GRPO step")
        ax.axhline(0, color="grey", lw=0.5)
    axes[0].set_ylabel(f"change of the weight since step 0\n({matrix.replace('model.', '')})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--quick", action="store_true", help="one seed: a preview (no verdict on a difference)")
    p.add_argument("--out", default="out/paper_results")
    p.add_argument("--parallel", type=int, default=2, help="jobs at once (each on one thread)")
    p.add_argument("--results", default=str(ROOT / "bench" / "results"), help="where findings.json etc. go")
    p.add_argument("--report_only", action="store_true", help="re-read finished runs, train nothing")
    p.add_argument("--train_flags", default="", help="train.py flags added to every run (e.g. a smaller batch "
                                                     "to try the pipeline: --prompts_per_step=4 --group_size=4)")
    args = p.parse_args()
    seeds = [int(s) for s in ("1" if args.quick else args.seeds).split(",")]
    out, results, t0 = Path(args.out), Path(args.results), time.time()
    if not args.report_only:
        base = ensure_base(out)
        for jobs in (train_jobs(out, base, seeds, args.train_flags.split()), analysis_jobs(out, seeds, seeds[0])):
            run_all([j for j in jobs if not done(j[1])], args.parallel, out / "logs")
    per_regime = {regime: [per_seed(out, regime, s) for s in seeds] for regime in REGIMES}
    records = findings(per_regime)
    dlogp = {regime: read(out / regime / f"s{seeds[0]}" / "analysis/dlogp/report.json") for regime in REGIMES}
    records += dlogp_findings(dlogp, seeds[0], {
        regime: {r["setting"]: r["greedy_acc"] for r in
                 read(out / regime / f"s{seeds[0]}" / "analysis/dlogp_extrapolation.json")["results"]}
        for regime in REGIMES})
    results.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (results / f"findings{suffix}.json").write_text(json.dumps(
        {"seeds": seeds, "regimes": {r: RUN + f for r, f in REGIMES.items()}, "findings": records,
         "per_seed": per_regime,
         "dlogp": {r: {"separability": d["separability"], "ratio_to_90pct_gap": d["replacement"]["ratio_to_90pct_gap"]}
                   for r, d in dlogp.items()},
         **({} if args.report_only else {"wall_seconds": time.time() - t0})}, indent=1))
    md = table(records, per_regime) + dlogp_table(records)
    (results / f"paper_results{suffix}.md").write_text(md)
    plot_trajectories(out, results / f"weight_trajectories{suffix}.png", seeds[0])
    if not args.quick:  # the first seed's reports and plots, kept beside the table
        for regime in REGIMES:
            run = out / regime / f"s{seeds[0]}"
            dest = results / f"{regime}_s{seeds[0]}"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(run / "analysis", dest, ignore=shutil.ignore_patterns("*.pt", "*.safetensors"))
            shutil.copy(run / "grpo" / "curves.png", dest / "curves.png")
    print(md)
    for regime, d in dlogp.items():
        sep = {m: round(v["separation"], 3) for m, v in d["separability"].items()}
        print(f"paper 1, {regime}: separation RL vs base text {sep}; ratio to 90% of the gap "
              f"{d['replacement']['ratio_to_90pct_gap']}")
    print(f"paper_results: {len(seeds)} seed(s), {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
