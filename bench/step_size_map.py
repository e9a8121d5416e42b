"""
When do the three papers' findings hold? Every finding of bench/paper_results.py against the size of the
update per rollout, lr x optimizer steps per rollout, on the toy, three GRPO seeds per point.

    python bench/step_size_map.py            # all points, seeds 1,2,3 -> bench/results/step_size_map.json + .png
    QUICK=1 python bench/step_size_map.py    # seed 1 only (a preview, no verdict on a difference): *_quick.*

The points (every other train.py flag the quickstart's, 150 GRPO steps from the same SFT base):
  lr 3e-6, 1e-5, 3e-5, 1e-4 with one optimizer step per rollout (lr 1e-4 is paper_results' "fast" regime),
  lr 2.5e-6 and 1e-5 with four (--n_minibatches=4; 2.5e-6 x 4 has the product of 1e-5 x 1: do lr and steps
  per rollout trade one for one?), and 1e-5 x 4 with DAPO's dynamic sampling, a separate flag on one point:
  the README's paper regime (paper_results' "paper").
At every point and seed: the run itself (a checkpoint and a greedy evaluation on 1,000 held-out problems
every 10 steps), paper 1's low-probability reweighting, paper 2's RL-Extra (10, 10) with the optimizer reset
and kept, then analyze.py linearity / extrapolate / rank1 / alpharl and sample.py --extrapolate=logits.
A point whose accuracy is still rising at step 150 (bench/lr_sweep.py's rule) gets one run of 300 steps
(seed 1), recorded beside it as "long_run". Eq. 2 beyond the run uses alpha 1.5 and 2 (paper 2 reports
gains for alpha about 1.3-3 and names no single best one; 2 is what findings.json measures). Each finding
gets the verdict rule it has in findings.json.

Jobs are bench/jobs.py's (two one-thread jobs at a time), seed by seed (seed 1 of every point first). The map
is built in parts: as the last job of a (point, seed) ends, its findings and curve go to
bench/results/step_size_map_parts/<point>_s<seed>.json (small, committed); a part that exists is not run
again, so the map can be completed across interrupted runs and machines, and a job whose output exists in
--out is skipped too. Every part starts from one SFT base, kept in bench/results/step_size_map_base/ (3 MB,
committed): the same command trains other bits on a CPU with other vector units (AVX2, AVX-512), and the
update size is to be the map's only variable. The two points equal to paper_results' regimes use its job names and commands: with
the same --out (default out/paper_results) their finished runs are shared.

Time: the 21 parts and the one 300-step run took 5.5 job-hours on 2-core CPUs (2026-12-03), so about 2.8 h
of wall time from scratch, two jobs at a time (about 8 min per (point, seed), 6 min per 300-step run). QUICK=1 runs seed 1 only (7 parts, ~55 min) and writes *_quick.*;
its parts are the full map's seed-1 parts. Each part keeps its jobs' seconds; the map sums them.
"""
import argparse
import json
import math
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import paper_results as P  # noqa: E402
from bench.jobs import run_all  # noqa: E402
from bench.lr_sweep import rise  # noqa: E402
from bench.step_size_map_render import holds_md, plot, table_md, verdicts  # noqa: E402

PY = P.PY
# (name, lr as written in the flag, optimizer steps per rollout, dynamic sampling); paper_results' regimes
# keep their names, so their runs are shared
POINTS = [("lr3e-6", "3e-6", 1, False), ("lr1e-5", "1e-5", 1, False), ("lr3e-5", "3e-5", 1, False),
          ("fast", "1e-4", 1, False), ("lr2.5e-6x4", "2.5e-6", 4, False), ("lr1e-5x4", "1e-5", 4, False),
          ("paper", "1e-5", 4, True)]


def flags(lr, spr, ds):
    """train.py flags of a point on top of P.RUN (the paper point's are exactly P.PAPER, fast's P.FAST)."""
    return [f"--lr={lr}"] + ([f"--n_minibatches={spr}"] if spr > 1 else []) + (["--dynamic_sampling=true"] if ds else [])


def update_size(lr, spr):
    return float(lr) * spr


def reweight_step(lr, spr):
    """Paper 1's reweighting is compared with the plain run at the same step: 40 where the gain comes in its
    first 20-30 steps (update size >= 1e-4, paper_results' fast regime), 100 for the slower drifts."""
    return 40 if update_size(lr, spr) >= 1e-4 else 100


# -----------------------------------------------------------------------------
# the jobs: training runs first, then the analyses of each run


def train_jobs(out, base, seeds, points=POINTS):
    """(name, argv) of every training run: the points' runs, then reweighting, then RL-Extra (paper_results'
    names and argv for its two regimes: a test checks)."""
    jobs = []

    def grpo(name, seed, *fl):
        jobs.append((name, [PY, "train.py", "--stage=grpo", f"--base_dir={base}", f"--out_dir={out}/{name}",
                            f"--seed={seed}", *P.RUN, *fl, "--resume=true"]))  # (as paper_results': a rerun continues)
    for name, lr, spr, ds in points:
        for s in seeds:
            grpo(f"{name}/s{s}", s, *flags(lr, spr, ds))
    for name, lr, spr, ds in points:  # paper 1's token weights, shorter: compared at the same step
        at = reweight_step(lr, spr)
        for s in seeds:
            grpo(f"reweight_lowprob_{name}/s{s}", s, *flags(lr, spr, ds), "--reweight=lowprob", f"--steps={at}",
                 "--eval_every=0", f"--save_every={at}")
    for name, lr, spr, ds in points:  # paper 2, Eq. 3: RL-Extra (10 real steps, then a jump of 10)
        for s in seeds:
            for opt in ("reset", "keep"):
                grpo(f"rlextra_{opt}_{name}/s{s}", s, *flags(lr, spr, ds), "--rl_extra=10,10",
                     f"--rl_extra_optimizer={opt}")
    return jobs


LONG_STEPS = 300


def long_jobs(out, base, points):
    """A point still rising at step 150 gets one longer run (seed 1, LONG_STEPS steps): where does it level?"""
    return [(f"{name}_long/s1", [PY, "train.py", "--stage=grpo", f"--base_dir={base}", f"--out_dir={out}/{name}_long/s1",
                                 "--seed=1", *P.RUN, *flags(lr, spr, ds), f"--steps={LONG_STEPS}", "--resume=true"])
            for name, lr, spr, ds in points]


def analysis_jobs(out, seeds, points=POINTS):
    """paper_results' analyses of each run (P.run_analyses), paper 1's dlogp left out."""
    return [job for name, *_ in points for s in seeds for job in P.run_analyses(out, name, s)]


def done(argv):
    """paper_results' rule (the job's output exists), except a rank1 report written before it carried
    AlphaRL's norm ratio: that job is run again."""
    out = next((a[6:] for a in argv if a.startswith("--out=")), None)
    if "rank1" in argv and out and (Path(out) / "report.json").exists():
        return "top1_norm_ratio" in P.read(Path(out) / "report.json")
    return P.done(argv)


# -----------------------------------------------------------------------------
# reading the runs back: one number per (finding, point, seed)

# (name, paper_results' key whose verdict rule it takes, paper, what, the paper's figure, its value as a line)
FINDINGS = [
    ("accuracy_gain", None, 0, "greedy accuracy, step 150 minus step 0", "(the RL gain)", None),
    ("weight_r2_median", "weight_r2_median", 2, "weights: median R² vs step", "~0.9 (peak)", 0.9),
    ("weight_r2_share07", "weight_r2_share_0.7", 2, "weights: share of entries with R² > 0.7", "> 0.70", 0.7),
    ("logprob_r2_median", "logprob_r2_median", 2, "log-probs: median R² vs step", "~0.9 (peak)", 0.9),
    ("eq2_inside_gain", "eq2_inside", 2, "Eq. 2: W₅₀ + 2 (W₁₀₀ − W₅₀) minus the real step 150", "≈ 0", 0.0),
    ("eq2_beyond_gain_1.5", "eq2_beyond_1.5", 2, "Eq. 2: W₁₀₀ + 1.5 (W₁₅₀ − W₁₀₀) minus step 150",
     "gain for α 1.3–3", None),
    ("eq2_beyond_gain_2", "eq2_beyond_1.5", 2, "Eq. 2: W₁₀₀ + 2 (W₁₅₀ − W₁₀₀) minus step 150", "gain for α 1.3–3",
     None),
    ("eq1_logits_gain", "eq1_1.5", 2, "Eq. 1: logits z₁₀₀ + 1.5 (z₁₅₀ − z₁₀₀) minus step 150", "+0.019", 0.019),
    ("rl_extra_reset_gain", "rlextra_reset_final", 2, "RL-Extra (10, 10), optimizer reset: accuracy at step 150 "
     "minus standard", "+2–6% relative", None),
    ("rl_extra_reset_speedup", "rlextra_reset_speedup", 2, "RL-Extra, reset: real steps to 90% of the gain, "
     "standard / RL-Extra", "6.1×", 6.1),
    ("rl_extra_keep_gain", "rlextra_keep_final", 2, "RL-Extra (10, 10), optimizer kept: accuracy at step 150 "
     "minus standard", "(not in the paper)", None),
    ("rl_extra_keep_speedup", "rlextra_keep_speedup", 2, "RL-Extra, kept: speedup as above", "(not in the paper)",
     None),
    ("rank1_recovery", "rank1_recovery", 3, "rank-1 update: share of the RL gain recovered", "> 0.99", 0.99),
    ("top1_energy_share", "rank1_top1_share", 3, "top singular component's energy share s1²/Σsᵢ² (median)",
     "(dominant)", None),
    ("top1_norm_ratio", "rank1_top1_share", 3, "AlphaRL's printed ratio Σs1 / Σ‖ΔW‖_F", "(dominant)", None),
    ("alpharl_ratio", "alpharl_w80", 3, "AlphaRL from steps 10–80: predicted / final accuracy", "> 0.96", 0.96),
    ("reweight_lowprob_gain", "reweight_lowprob", 1, "low-prob. reweighting minus plain GRPO at the same step",
     "+3 to +6 AIME points", None),
]
RULES = {key: kind for key, _, _, _, kind, _ in P.FINDINGS}
KEY = {f[0]: f[1] for f in FINDINGS}


def rule(name):
    """findings.json's verdict rule of a finding (the accuracy gain: a paired difference like the others)."""
    return ("gain",) if name == "accuracy_gain" else RULES[KEY[name]]


def steps90(curve, base, final):
    """The first step reaching 90% of the way from base to final accuracy (None if none does)."""
    return P.steps_to(curve, base + 0.9 * (final - base))


def point_seed(out, point, s):
    """Every finding of one point and seed, from its runs' reports (the same numbers as P.per_seed)."""
    name, lr, spr, _ = point
    run, a = Path(out) / name / f"s{s}" / "grpo", Path(out) / name / f"s{s}" / "analysis"
    curve = P.eval_curve(run)
    lin, rank1, alpharl = P.read(a / "linearity/report.json"), P.read(a / "rank1/report.json"), P.read(a / "alpharl/report.json")
    eq2_in, eq2_out = P.read(a / "eq2_inside/report.json"), P.read(a / "eq2_beyond/report.json")
    eq1 = {r["setting"]: r["greedy_acc"] for r in P.read(a / "eq1.json")["results"]}
    alpha = {r["alpha"]: r["acc"] for r in eq2_out["alphas"]}
    w80 = next(r for r in alpharl["windows"] if r["window"] == 8)
    base, final = curve[0][1], curve[-1][1]
    x = {"accuracy_gain": final - base, "base_acc": base, "final_acc": final,
         "weight_r2_median": lin["weights"]["median"], "weight_r2_share07": lin["weights"]["share_above_0.7"],
         "logprob_r2_median": lin["logprobs"]["median"],
         "eq2_inside_gain": eq2_in["alphas"][0]["acc"] - eq2_in["acc_last"],
         "eq2_beyond_gain_1.5": alpha[1.5] - alpha[1.0], "eq2_beyond_gain_2": alpha[2.0] - alpha[1.0],
         "eq1_logits_gain": eq1["alpha=1.5"] - eq1["plain b"],
         "rank1_recovery": rank1["recovery"], "top1_energy_share": rank1["top1_share"]["median"],
         "top1_norm_ratio": rank1.get("top1_norm_ratio"),
         "alpharl_ratio": w80["retained"], "rise_100_150": rise(curve)[0],
         "grpo_steps90": steps90(curve, base, final)}
    at = reweight_step(lr, spr)
    x["reweight_lowprob_gain"] = (P.read(Path(out) / f"reweight_lowprob_{name}" / f"s{s}" / "summary.json")
                                  ["final_greedy_acc"] - P.at_step(curve, at))
    for opt in ("reset", "keep"):  # RL-Extra: accuracy at the same total step, and real steps to 90% of the gain
        rows = P.metrics(Path(out) / f"rlextra_{opt}_{name}" / f"s{s}" / "grpo")
        real = {0: 0, **{r["step"]: r["real_steps"] for r in rows if "real_steps" in r}}
        rx = [(real[r["step"]], r["eval"]["greedy_acc"]) for r in rows if "eval" in r]
        n_rx = steps90(rx, base, final)
        x[f"rl_extra_{opt}_gain"] = rx[-1][1] - final
        x[f"rl_extra_{opt}_steps90"] = n_rx
        x[f"rl_extra_{opt}_speedup"] = x["grpo_steps90"] / n_rx if x["grpo_steps90"] and n_rx else None
    return x


def two_se(p, n=1000):
    return 2 * math.sqrt(p * (1 - p) / n)


def is_rising(per_seed):
    """bench/lr_sweep.py's rule: the rise of the line through steps 100-150 beyond 2 SE of one evaluation."""
    return (statistics.mean(x["rise_100_150"] for x in per_seed)
            > two_se(statistics.mean(x["final_acc"] for x in per_seed)))


def point_record(point, seeds, per_seed, commands, long_curve=None):
    """One point of step_size_map.json: each finding as mean, std, per seed and findings.json's verdict."""
    name, lr, spr, ds = point
    found = {}
    for fname, *_ in FINDINGS:
        xs = [x.get(fname) for x in per_seed]
        m, sd, n = P.mean_sd(xs)
        found[fname] = {"mean": m, "std": sd, "per_seed": xs, "verdict": P.verdict(rule(fname), m, sd, n),
                        "rule": list(rule(fname))}
    for fname in ("rl_extra_reset_steps90", "rl_extra_keep_steps90", "grpo_steps90", "rise_100_150"):
        xs = [x.get(fname) for x in per_seed]  # context: no verdict of their own
        m, sd, _ = P.mean_sd(xs)
        found[fname] = {"mean": m, "std": sd, "per_seed": xs}
    return {"name": name, "lr": float(lr), "steps_per_rollout": spr, "dynamic_sampling": ds,
            "update_size": update_size(lr, spr),
            "seeds": list(seeds), "findings": found, "still_rising": is_rising(per_seed),
            "commands": commands, **({"long_run": {"steps": LONG_STEPS, "seed": 1, "curve": long_curve}}
                                     if long_curve else {})}


def commands_of(point, seeds, out, base):
    """Every command of one point, as a user would type it."""
    jobs = train_jobs(out, base, seeds, [point]) + analysis_jobs(out, seeds, [point])
    return [shlex.join(["python", *argv[1:]]) for _, argv in jobs]


def where_it_holds(data):
    """{findings.json key: where it holds on the map}, the README results table's last column
    (P.short_table): the points whose verdict is yes, then those where it is partly."""
    out = {}
    for name, key, *_ in FINDINGS:
        found = verdicts(data, name)
        if key is None or key in out or found is None:
            continue

        def at(which):
            labs = [lab for lab, v in found if v == which]
            return "every point" if len(labs) == len(found) else ", ".join(labs)
        out[key] = (at("yes") or "nowhere") + (f"; partly {at('partly')}" if at("partly") else "")
    return out


def machine():
    """The CPU model, its core count, the vector unit torch's kernels use (AVX2 and AVX-512 compute other
    bits, so a run repeats bit for bit only on the same one) and torch's version, for the record."""
    import platform
    import torch
    info = Path("/proc/cpuinfo")
    names = [ln.split(":", 1)[1].strip() for ln in (info.read_text().splitlines() if info.exists() else [])
             if ln.startswith("model name")]
    return (f"{names[0] if names else platform.processor()}, {os.cpu_count()} cores, "
            f"{torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}")


# -----------------------------------------------------------------------------
# the parts: one small json per (point, seed), committed, so the map is built in parts on any machine


def part_path(results, name, s):
    return Path(results) / "step_size_map_parts" / f"{name}_s{s}.json"


def sha256(path):
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ensure_map_base(out, results):
    """The SFT base every part starts from: committed beside the parts (3 MB), since CPUs with other vector
    units train other bits from the same command, and the map's one controlled variable is the update size.
    The first run trains it (paper_results' ensure_base) and keeps a copy there; a later run, on any
    machine, copies it into --out. An --out whose base differs is refused (its runs belong to another map)."""
    import shutil
    kept, base = Path(results) / "step_size_map_base", Path(out) / "base"
    if not (kept / "model.safetensors").exists():
        shutil.copytree(P.ensure_base(out), kept, dirs_exist_ok=True)
    elif not (base / "model.safetensors").exists():
        shutil.copytree(kept, base, dirs_exist_ok=True)
    elif sha256(base / "model.safetensors") != sha256(kept / "model.safetensors"):
        sys.exit(f"step_size_map: {base} is not the map's base ({kept}): its runs started elsewhere; use "
                 "another --out")
    return base


def write_part(results, out, point, s, seconds):
    """Everything the map needs of one point and seed, read from its finished runs (the checkpoints can go)."""
    name = point[0]
    part = {"point": name, "seed": s, "findings": point_seed(out, point, s),
            "curve": P.eval_curve(Path(out) / name / f"s{s}" / "grpo"), "job_seconds": seconds,
            "base_sha256": sha256(base) if (base := Path(out) / "base" / "model.safetensors").exists() else None,
            "machine": machine(), "date": time.strftime("%Y-%m-%d")}
    path = part_path(results, name, s)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(part, indent=1))
    print(f"part {path.name}: gain {part['findings']['accuracy_gain']:+.3f} in {sum(seconds.values()) / 60:.0f} "
          f"job-min", flush=True)


def unit_jobs(out, base, point, s):
    """The jobs of one point and seed and what each waits for (an analysis: its training run)."""
    train, analyses = train_jobs(out, base, [s], [point]), analysis_jobs(out, [s], [point])
    return train + analyses, {n: {f"{point[0]}/s{s}"} for n, _ in analyses}


def run_units(out, base, results, units, parallel):
    """Runs every unfinished job of the (point, seed) units, seed by seed, two at a time, and writes each
    unit's part as soon as its last job ends (an interrupted run loses at most the jobs in flight)."""
    jobs, needs, unit_of, seconds = [], {}, {}, {}
    for point, s in units:
        js, nd = unit_jobs(out, base, point, s)
        jobs += [j for j in js if not done(j[1])]
        needs.update(nd)
        unit_of.update({n: (point, s) for n, _ in js})
        seconds[point, s] = {}
    left = {u: sum(unit_of[n] == u for n, _ in jobs) for u in units}
    for u in units:
        if not left[u]:  # its runs are all there already
            write_part(results, out, *u, seconds[u])

    def finished(name, sec):
        u = unit_of[name]
        seconds[u][name], left[u] = round(sec, 1), left[u] - 1
        if not left[u]:
            write_part(results, out, *u, seconds[u])
    run_all(jobs, parallel, Path(out) / "logs", needs, finished)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--quick", action="store_true", default=os.environ.get("QUICK", "") not in ("", "0"),
                   help="seed 1 only (also QUICK=1): a preview without verdicts on differences")
    p.add_argument("--out", default="out/paper_results", help="runs (shared with bench/paper_results.py)")
    p.add_argument("--parallel", type=int, default=2, help="jobs at once (each on one thread)")
    p.add_argument("--results", default=str(ROOT / "bench" / "results"))
    p.add_argument("--report_only", action="store_true", help="build the map from the parts (and finished "
                   "runs in --out), train nothing")
    p.add_argument("--plot_only", action="store_true", help="re-render the figure from the json")
    args = p.parse_args(argv)
    seeds = [1] if args.quick else [int(s) for s in args.seeds.split(",")]
    out, results, t0 = Path(args.out), Path(args.results), time.time()
    # the map proper is seeds 1-3; a preview says which seeds it holds (QUICK: seed 1)
    suffix = "_quick" if args.quick else "" if seeds == [1, 2, 3] else "_seeds" + "".join(map(str, seeds))
    json_path, png_path = results / f"step_size_map{suffix}.json", results / f"step_size_map{suffix}.png"
    if args.plot_only:
        return plot(P.read(json_path), png_path)
    units = [(pt, s) for s in seeds for pt in POINTS if not part_path(results, pt[0], s).exists()]
    if args.report_only:  # parts from runs that finished but were never written up
        for pt, s in units:
            if all(done(argv) for _, argv in unit_jobs(out, out / "base", pt, s)[0]):
                write_part(results, out, pt, s, {})
    elif units:
        run_units(out, ensure_map_base(out, results), results, units, args.parallel)
    missing = [part_path(results, pt[0], s).name for s in seeds for pt in POINTS
               if not part_path(results, pt[0], s).exists()]
    if missing:
        sys.exit(f"step_size_map: {len(missing)} part(s) still to run ({', '.join(missing)}); "
                 f"`python bench/step_size_map.py{' --quick' if args.quick else ''}` runs them")
    parts = {(pt, s): P.read(part_path(results, pt[0], s)) for s in seeds for pt in POINTS}
    bases = {part.get("base_sha256") for part in parts.values()}
    if len(bases) > 1:
        sys.exit(f"step_size_map: the parts start from {len(bases)} different bases: "
                 + ", ".join(sorted(f"{pt[0]}_s{s}: {str(part.get('base_sha256'))[:12]}" for (pt, s), part in parts.items())))
    per_point = {pt: [parts[pt, s]["findings"] for s in seeds] for pt in POINTS}
    rising = [pt for pt in POINTS if is_rising(per_point[pt])]
    long_parts = {pt: part_path(results, pt[0] + "_long", 1) for pt in rising}
    if not args.report_only:  # the points still rising at step 150 run on, once
        todo = [pt for pt in rising if not long_parts[pt].exists()]

        def finished(name, sec):
            pt = next(pt for pt in todo if name == f"{pt[0]}_long/s1")
            long_parts[pt].write_text(json.dumps({"point": pt[0], "seed": 1, "steps": LONG_STEPS, "job_seconds": sec,
                                                  "curve": P.eval_curve(out / f"{pt[0]}_long/s1/grpo")}, indent=1))
        jobs = long_jobs(out, out / "base", todo)
        for name, argv in jobs:
            if done(argv):
                finished(name, None)
        run_all([j for j in jobs if not done(j[1])], args.parallel, out / "logs", on_done=finished)
    long = {pt: P.read(long_parts[pt])["curve"] for pt in rising if long_parts[pt].exists()}
    points = [point_record(pt, seeds, per_point[pt], commands_of(pt, seeds, out, out / "base"), long.get(pt))
              for pt in POINTS]
    job_seconds = sum(v for part in parts.values() for v in part["job_seconds"].values())
    data = {"points": points, "base_flags": P.RUN,
            "findings": {f: {"paper": paper, "what": what, "paper_figure": fig, "paper_line": line}
                         for f, _, paper, what, fig, line in FINDINGS},
            "base_sha256": bases.pop(),
            "job_seconds": job_seconds, "machines": sorted({part["machine"] for part in parts.values()}),
            "dates": sorted({part["date"] for part in parts.values()})}
    results.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data, indent=1))
    json_path.with_suffix(".md").write_text(table_md(data) + "\n**Where each finding holds** (findings.json's verdicts; lr, ×steps per rollout, +DS dynamic sampling):\n\n" + holds_md(data))
    plot(data, png_path)
    for pt in points:
        print(f"{pt['name']:>12} update {pt['update_size']:.1e}: " + ", ".join(
            f"{k} {v['mean']:.3f}" for k, v in pt["findings"].items() if v["mean"] is not None and "steps" not in k))
    print(f"step_size_map: {len(seeds)} seed(s), {job_seconds / 3600:.1f} job-hours in all "
          f"({(time.time() - t0) / 60:.1f} min this run) -> {json_path}")


if __name__ == "__main__":
    main()
