"""
Paper 2, "Not All Steps are Informative: On the Linearity of LLMs' RLVR Training" (arXiv 2601.04537), behind
`analyze.py linearity | extrapolate`: over a GRPO run's checkpoints, how linear in the step are the weights
and the log-probs (R^2, papers/stats.py), and where does extrapolating along the line W_t0 -> W_t1 (Eq. 2,
papers/extrapolate.py) lead? RL-Extra (Eq. 3) runs inside training: train.py --rl_extra, extrapolate.RLExtra.

This file loads checkpoints, calls the maths, evaluates the resulting models and summarises.
"""
from pathlib import Path

import torch

from nanorlvr.infra import checkpoint as ckpt
from nanorlvr.papers.report import (group_means, kind_of, layer_of, load_sd, num_str, peak_rss_mb, plot_hist,
                                     plot_lines, summary_stats)
from nanorlvr.infra.common import Progress, UsageError, log
from nanorlvr.engine import generate
from nanorlvr.papers.extrapolate import extrapolate_weights
from nanorlvr.logprobs import completion_logprobs, pack
from nanorlvr.papers.stats import logprob_r2_filter, n_sample, r2_vs_step, sample_entries, weight_r2_filter


# -----------------------------------------------------------------------------
# Paper 2: linearity of weights and log-probs over a run's checkpoints


# Paper 2 (arXiv 2601.04537), weight R^2: k = max(50, 0.1%) entries per tensor, filters, R^2 vs step
def weight_linearity(paths, steps, seed=0):
    """{tensor name: R^2 of its kept sampled entries}, plus {name: (kept, sampled)}. Streams one tensor from
    one checkpoint at a time: memory is one tensor plus the (entries x checkpoints) trajectories."""
    steps = torch.tensor(steps, dtype=torch.float64)
    r2, counts = {}, {}
    names = ckpt.tensor_names(paths[0])
    prog = Progress(len(names))
    for i, name in enumerate(names):
        idx = None
        rows = []
        for t in ckpt.stream_tensors(paths, name):
            if idx is None:
                idx = sample_entries(t.numel(), n_sample(t.numel()), torch.Generator().manual_seed(seed + i))
            rows.append(t.flatten()[idx].double())
        traj = torch.stack(rows, dim=1)  # (entries, checkpoints)
        keep = weight_r2_filter(traj)
        r2[name], counts[name] = r2_vs_step(traj[keep], steps), (int(keep.sum()), len(idx))
        prog.tick(i, "weight trajectories: tensor")
    return r2, counts


def probe_responses(model, fmt, problems, max_new_tokens, temperature, seed, batch_size=None):
    """(prompts, completions): one response per problem sampled once from `model` (the base), batch_size rows
    at a time (the KV cache of all n_probe rows at once would outweigh a small model)."""
    prompts = [fmt.encode(p["question"]) for p in problems]
    g = generate(model, prompts, max_new_tokens, temperature=temperature, seed=seed, stop_ids=fmt.stop_ids,
                 batch_size=batch_size)
    return prompts, g.tokens


# Paper 2 (arXiv 2601.04537), log-prob R^2: base-sampled probe teacher-forced through every checkpoint
def logprob_linearity(paths, steps, prompts, completions, device, batch_size=64, max_tokens=100_000, seed=0):
    """R^2 vs step of each probe token's log-prob, over tokens whose log-prob moves by > 0.2 first -> last
    (at most max_tokens of them). Loads one checkpoint at a time. Returns (r2, n_tokens, n_kept)."""
    cols, prog = [], Progress(len(paths))
    for j, path in enumerate(paths):
        model = ckpt.load_model(path, device).eval()
        col = []
        with torch.no_grad():
            for b in range(0, len(prompts), batch_size):
                idx, plen, clen = pack(prompts[b:b + batch_size], completions[b:b + batch_size])
                lp, mask = completion_logprobs(model, idx, plen, clen)
                col.append(lp[mask].double().cpu())
        cols.append(torch.cat(col))
        del model
        log(f"  log-probs of checkpoint {j + 1}/{len(paths)} (step {steps[j]}), eta {prog.eta(j)}")
    lp = torch.stack(cols, dim=1)  # (tokens, checkpoints)
    kept = lp[logprob_r2_filter(lp)]
    if len(kept) > max_tokens:
        kept = kept[torch.randperm(len(kept), generator=torch.Generator().manual_seed(seed))[:max_tokens]]
    return r2_vs_step(kept, torch.tensor(steps, dtype=torch.float64)), len(lp), len(kept)


def run_linearity(run_dir, out, fmt, problems, device="cpu", max_new_tokens=64, temperature=1.0, seed=0,
                  batch_size=64, control_dir=None):
    """Paper 2's two linearity measurements over every checkpoint of run_dir (optionally the weight one over a
    control run too, e.g. SFT-like). Reports the distributions, per-layer / per-kind means and peak RSS."""
    ckpts = ckpt.list_checkpoints(run_dir)
    if len(ckpts) < 3:
        raise UsageError(f"{run_dir} has {len(ckpts)} checkpoints: R^2 over steps needs at least 3")
    steps, paths = [s for s, _ in ckpts], [p for _, p in ckpts]
    model_mb = (paths[0] / "model.safetensors").stat().st_size / 2**20
    rss_before = peak_rss_mb()
    log(f"linearity: {len(ckpts)} checkpoints (steps {steps[0]}..{steps[-1]}), weights ...")
    w_r2, counts = weight_linearity(paths, steps, seed)
    w_all = torch.cat(list(w_r2.values()))
    rss_weights = peak_rss_mb()
    log(f"log-probs of {len(problems)} base-sampled probe responses ...")
    base = ckpt.load_model(paths[0], device).eval()
    prompts, completions = probe_responses(base, fmt, problems, max_new_tokens, temperature, seed, batch_size)
    del base
    rss_probe = peak_rss_mb()
    lp_r2, n_tok, n_kept = logprob_linearity(paths, steps, prompts, completions, device, batch_size, seed=seed)
    report = {
        "run": str(run_dir), "steps": steps,
        "weights": {**summary_stats(w_all), "entries_sampled": sum(c[1] for c in counts.values()),
                    "entries_kept": sum(c[0] for c in counts.values()),
                    "per_layer_mean": group_means(w_r2, layer_of), "per_kind_mean": group_means(w_r2, kind_of)},
        "logprobs": {**summary_stats(lp_r2), "probe_responses": len(completions), "tokens": n_tok,
                     "tokens_kept": n_kept},
        "memory": {"model_mb": model_mb, "peak_rss_mb_before": rss_before, "peak_rss_mb_after_weights": rss_weights,
                   "peak_rss_mb_after_probe": rss_probe, "peak_rss_mb": peak_rss_mb()},
    }
    hists = {"RL run": w_all}
    if control_dir:
        c_ckpts = ckpt.list_checkpoints(control_dir)
        c_r2, _ = weight_linearity([p for _, p in c_ckpts], [s for s, _ in c_ckpts], seed)
        hists["control"] = torch.cat(list(c_r2.values()))
        report["control_weights"] = {"run": str(control_dir), **summary_stats(hists["control"])}
    plot_hist(Path(out) / "weight_r2.png", hists, "Weight R^2 vs step (sampled entries)", "R^2", range=(0, 1))
    plot_hist(Path(out) / "logprob_r2.png", {"probe tokens": lp_r2}, "Log-prob R^2 vs step (base-sampled probe)",
              "R^2", range=(0, 1))
    w, lp, mem = report["weights"], report["logprobs"], report["memory"]
    summary = [f"Checkpoints: {len(steps)} (steps {steps[0]}..{steps[-1]}).",
               f"Weight R^2: median {num_str(w['median'])}, share > 0.7 {num_str(w['share_above_0.7'])} "
               f"({w['entries_kept']} of {w['entries_sampled']} sampled entries kept). Paper 2: peak ~0.9, > 70%.",
               f"Log-prob R^2: median {num_str(lp['median'])}, share > 0.7 {num_str(lp['share_above_0.7'])} "
               f"({n_kept} of {n_tok} probe tokens move by > 0.2).",
               f"Peak RSS {mem['peak_rss_mb']:.0f} MiB, {mem['peak_rss_mb'] - rss_before:.0f} MiB above the "
               f"{rss_before:.0f} MiB before the analysis = {(mem['peak_rss_mb'] - rss_before) / model_mb:.1f} "
               f"checkpoints of {model_mb:.1f} MiB."]
    if control_dir:
        summary.append(f"Control run weight R^2: median {num_str(report['control_weights']['median'])} (Paper 2: SFT ~0.43).")
    return report, summary


# -----------------------------------------------------------------------------
# Paper 2: weight extrapolation sweep


# Paper 2 (arXiv 2601.04537), Eq. 2: W_t' = W_t0 + alpha (W_t1 - W_t0), accuracy vs alpha
def run_extrapolate(run_dir, out, evaluate_fn, t0, t1, alphas, device="cpu"):
    ckpts = dict(ckpt.list_checkpoints(run_dir))
    for t in (t0, t1):
        if t not in ckpts:
            raise UsageError(f"no checkpoint at step {t} in {run_dir}: steps are {sorted(ckpts)}")
    if t1 <= t0:
        raise UsageError(f"need t0 < t1, got {t0}, {t1}")
    last = max(ckpts)
    # three copies of the weights at most: the last checkpoint is evaluated alone, then W_t0, W_t1 and the
    # model that each alpha's weights are written into
    prog = Progress(len(alphas) + 1)
    r_last = evaluate_fn(ckpt.load_model(ckpts[last], device).eval())
    log(f"extrapolate: last checkpoint (step {last}) acc {r_last['acc']:.3f}; eta {prog.eta(0)}")
    sd0, sd1 = load_sd(ckpts[t0]), load_sd(ckpts[t1])
    model = ckpt.load_model(ckpts[t1], device).eval()
    rows = []
    for i, alpha in enumerate(alphas):
        extrapolate_weights(sd0, sd1, alpha, into=model.state_dict())
        r = evaluate_fn(model)
        rows.append({"alpha": alpha, "equivalent_step": t0 + alpha * (t1 - t0), "acc": r["acc"], "eval": r})
        log(f"extrapolate alpha {alpha}: acc {r['acc']:.3f}; eta {prog.eta(i + 1)}")
    report = {"run": str(run_dir), "t0": t0, "t1": t1, "last_step": last, "acc_last": r_last["acc"],
              "alphas": rows, "eval_last": r_last}
    plot_lines(Path(out) / "extrapolate.png", {f"W_{t0} + alpha (W_{t1} - W_{t0})": (alphas, [r["acc"] for r in rows])},
               "Weight extrapolation (Paper 2, Eq. 2)", "alpha (1 = checkpoint t1)", "accuracy",
               {f"last checkpoint (step {last})": r_last["acc"]})
    best = max(rows, key=lambda r: r["acc"])
    summary = [f"t0 = {t0}, t1 = {t1}; last checkpoint (step {last}) {num_str(r_last['acc'])}."]
    summary += [f"alpha {r['alpha']} (step ~{r['equivalent_step']:.0f}): {num_str(r['acc'])}" for r in rows]
    summary.append(f"Best alpha {best['alpha']}: {num_str(best['acc'])}.")
    return report, summary
