"""
Weight-space analyses of a GRPO run, behind `analyze.py linearity | rank1 | alpharl | extrapolate`, plus the
helpers every analysis shares (plots, small statistics). The maths lives in analysis.py and extrapolate.py;
this file loads checkpoints, calls it, evaluates the resulting models and summarises.

Each analysis takes `evaluate_fn(model, generate_fn=None) -> dict` (evaluate.evaluator; its "acc" is the
headline accuracy) and an output folder for its plots, and returns (report dict, summary markdown lines).
"""
import math
import re
import resource
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from nanorlvr import checkpoint as ckpt
from nanorlvr.analysis import logprob_r2_filter, n_sample, r2_vs_step, sample_entries, weight_r2_filter
from nanorlvr.common import Progress, UsageError, log
from nanorlvr.engine import generate
from nanorlvr.extrapolate import alpharl_predict, extrapolate_weights, is_norm, is_update_matrix, rank_k_state_dict
from nanorlvr.scoring import completion_logprobs, pack

# -----------------------------------------------------------------------------
# shared: plots, small statistics


def gain_share(acc, acc_base, acc_ref):
    """(acc - acc_base) / (acc_ref - acc_base): the share of the base -> reference gain reached (None if no gain)."""
    return (acc - acc_base) / (acc_ref - acc_base) if acc_ref != acc_base else None


def num_str(x, spec=".3f"):
    """A number for summary.md ("n/a" for None / nan)."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def summary_stats(x, above=0.7):
    """median, mean and share above `above` of a 1-D tensor (nan-free)."""
    x = x.double()
    if x.numel() == 0:
        return {"n": 0, "median": None, "mean": None, f"share_above_{above}": None}
    return {"n": x.numel(), "median": x.median().item(), "mean": x.mean().item(),
            f"share_above_{above}": (x > above).double().mean().item()}


def layer_of(name):
    m = re.match(r"model\.layers\.(\d+)\.", name)
    return f"layer {int(m.group(1))}" if m else "embed/head/final norm"


def kind_of(name):
    """q_proj, ..., down_proj, norm, embed_tokens, lm_head: the kind of tensor, for per-kind averages."""
    if is_norm(name):
        return "norm"
    parts = name.split(".")
    return parts[-2] if parts[-1] in ("weight", "bias") else parts[-1]


def group_means(values_by_name, key):
    """Mean of every value of the tensors in each group key(name) (values_by_name: name -> 1-D tensor)."""
    groups = {}
    for name, v in values_by_name.items():
        groups.setdefault(key(name), []).append(v.double())
    return {g: (torch.cat(vs).mean().item() if sum(v.numel() for v in vs) else None) for g, vs in groups.items()}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def plot_hist(path, series, title, xlabel, bins=50, range=None, logy=False):
    """Overlaid normalised histograms of {label: 1-D tensor} on common bins (spanning all series, or `range`)."""
    xs = [x.double() for x in series.values() if len(x)]
    lo, hi = range or ((min(x.min().item() for x in xs), max(x.max().item() for x in xs)) if xs else (0, 1))
    edges = torch.linspace(lo, hi if hi > lo else lo + 1, bins + 1).numpy()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, x in series.items():
        if len(x):
            ax.hist(x.double().numpy(), bins=edges, density=True, alpha=0.5, label=f"{label} (n={len(x)})")
    ax.set(title=title, xlabel=xlabel, ylabel="density")
    if logy and xs:
        ax.set_yscale("log")
    if xs:  # an empty plot (e.g. no probe token moved) gets no legend
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_lines(path, series, title, xlabel, ylabel, hlines=None):
    """One line per {label: (xs, ys)}, with dashed horizontal reference lines {label: y}."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    for i, (label, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, linestyle="--", color=f"C{len(series) + i}", label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_sd(path):
    """A checkpoint's state dict on the CPU (our names, tied head included)."""
    return ckpt.load_model(path, "cpu").state_dict()

# -----------------------------------------------------------------------------
# Paper 2: linearity of weights and log-probs over a run's checkpoints


# Paper 2 (Linearity of RLVR), weight R^2: k = max(50, 0.1%) entries per tensor, filters, R^2 vs step
def weight_linearity(paths, steps, seed=0):
    """{tensor name: R^2 of its kept sampled entries}, plus {name: (kept, sampled)}. Streams one tensor from
    one checkpoint at a time: memory is one tensor plus the (entries x checkpoints) trajectories."""
    steps = torch.tensor(steps, dtype=torch.float64)
    r2, counts = {}, {}
    for i, name in enumerate(ckpt.tensor_names(paths[0])):
        idx = None
        rows = []
        for t in ckpt.stream_tensors(paths, name):
            if idx is None:
                idx = sample_entries(t.numel(), n_sample(t.numel()), torch.Generator().manual_seed(seed + i))
            rows.append(t.flatten()[idx].double())
        traj = torch.stack(rows, dim=1)  # (entries, checkpoints)
        keep = weight_r2_filter(traj)
        r2[name], counts[name] = r2_vs_step(traj[keep], steps), (int(keep.sum()), len(idx))
    return r2, counts


def probe_responses(model, fmt, problems, max_new_tokens, temperature, seed, batch_size=None):
    """(prompts, completions): one response per problem sampled once from `model` (the base), batch_size rows
    at a time (the KV cache of all n_probe rows at once would outweigh a small model)."""
    prompts = [fmt.encode(p["question"]) for p in problems]
    g = generate(model, prompts, max_new_tokens, temperature=temperature, seed=seed, stop_ids=fmt.stop_ids,
                 batch_size=batch_size)
    return prompts, g.tokens


# Paper 2 (Linearity of RLVR), log-prob R^2: base-sampled probe teacher-forced through every checkpoint
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
# Paper 3: the rank-k model and AlphaRL


# Paper 3 (AlphaRL), rank-1 model: W_base + (||dW||_F / ||dW_1||_F) dW_1 per update matrix, recovery of the RL gain
def rank_k_model(base_path, rl_path, k=1, device="cpu"):
    """(model with the rank-k weights on `device`, {matrix: share of the update's energy in its top component})."""
    sd, shares = rank_k_state_dict(load_sd(base_path), load_sd(rl_path), k)
    model = ckpt.load_model(base_path, device)
    model.load_state_dict(sd)
    return model.eval(), shares


def run_rank1(base_path, rl_path, out, evaluate_fn, k=1, device="cpu"):
    model, shares = rank_k_model(base_path, rl_path, k, device)
    share_t = torch.tensor([s for s in shares.values() if not math.isnan(s)])
    r_rank = evaluate_fn(model)
    del model
    r_base = evaluate_fn(ckpt.load_model(base_path, device).eval())
    r_rl = evaluate_fn(ckpt.load_model(rl_path, device).eval())
    recovery = gain_share(r_rank["acc"], r_base["acc"], r_rl["acc"])
    report = {"base": str(base_path), "rl": str(rl_path), "rank": k,
              "acc": {"base": r_base["acc"], "rl": r_rl["acc"], f"rank{k}": r_rank["acc"]},
              "recovery": recovery, "eval": {"base": r_base, "rl": r_rl, f"rank{k}": r_rank},
              "top1_share": {**summary_stats(share_t, 0.5),
                             "per_kind_mean": group_means({n: torch.tensor([s]) for n, s in shares.items()
                                                           if not math.isnan(s)}, kind_of),
                             "per_matrix": shares}}
    plot_hist(Path(out) / "top1_share.png", {"update matrices": share_t},
              "Share of each matrix's RL update in its top singular component", "s1^2 / sum s_i^2", bins=20,
              range=(0, 1))
    summary = [f"Accuracy: base {num_str(r_base['acc'])}, RL {num_str(r_rl['acc'])}, rank-{k} {num_str(r_rank['acc'])}: "
               f"recovery {num_str(recovery)} of the RL gain (Paper 3, rank 1: > 0.99).",
               f"Top singular component holds a median {num_str(report['top1_share']['median'])} of each matrix's "
               f"update energy ({len(share_t)} matrices)."]
    return report, summary


# Paper 3 (AlphaRL), label-free: a_k = s1_k u1_k fit linearly in step over a window, W_pred = W_0 + a* v1_K^T
def alpharl_model(paths, steps, window, target_step, add_to="w0", with_w0=False, device="cpu", rescale=False):
    """The model AlphaRL predicts at target_step from checkpoints paths[1..window] (and paths[0] = W_0 as the
    point a = 0 if with_w0). Streams each update matrix across the window; other tensors are those of W_K.
    rescale: the prediction given the window's full-update norm (extrapolate.alpharl_predict)."""
    sel = list(range(0 if with_w0 else 1, window + 1))
    win_paths, win_steps = [paths[i] for i in sel], [steps[i] for i in sel]
    model = ckpt.load_model(paths[window], "cpu")
    sd = model.state_dict()
    for name, wk in sd.items():
        if is_update_matrix(name, wk):
            w0 = next(ckpt.stream_tensors([paths[0]], name))
            sd[name] = alpharl_predict(w0, list(ckpt.stream_tensors(win_paths, name)), win_steps, target_step, add_to,
                                       rescale)
    model.load_state_dict(sd)
    return model.to(device).eval()


def run_alpharl(run_dir, out, evaluate_fn, windows, add_to="w0", with_w0=False, device="cpu"):
    """AlphaRL for each window size K (number of checkpoints after step 0), target = the run's last step.
    Reports the predicted model's accuracy against the final model's, the window checkpoint's itself
    (stopping early without prediction) and the speedup target / window step."""
    ckpts = ckpt.list_checkpoints(run_dir)
    steps, paths = [s for s, _ in ckpts], [p for _, p in ckpts]
    for K in windows:
        if not (2 - with_w0 <= K < len(ckpts) - 1):
            raise UsageError(f"window {K} must leave the last checkpoint out and have >= 2 points "
                             f"({len(ckpts)} checkpoints: steps {steps})")
    r_base = evaluate_fn(ckpt.load_model(paths[0], device).eval())
    r_final = evaluate_fn(ckpt.load_model(paths[-1], device).eval())
    rows, prog = [], Progress(len(windows))
    for i, K in enumerate(windows):
        r_pred = evaluate_fn(alpharl_model(paths, steps, K, steps[-1], add_to, with_w0, device))
        r_scaled = evaluate_fn(alpharl_model(paths, steps, K, steps[-1], add_to, with_w0, device, rescale=True))
        r_win = evaluate_fn(ckpt.load_model(paths[K], device).eval())
        rows.append({"window": K, "window_step": steps[K], "target_step": steps[-1], "speedup": steps[-1] / steps[K],
                     "acc_pred": r_pred["acc"], "acc_pred_rescaled": r_scaled["acc"], "acc_window": r_win["acc"],
                     "retained": r_pred["acc"] / r_final["acc"] if r_final["acc"] else None,
                     "retained_rescaled": r_scaled["acc"] / r_final["acc"] if r_final["acc"] else None,
                     "gain_share": gain_share(r_pred["acc"], r_base["acc"], r_final["acc"]),
                     "eval_pred": r_pred, "eval_pred_rescaled": r_scaled})
        log(f"alpharl window {K} (step {steps[K]}): predicted {r_pred['acc']:.3f} (norm-rescaled "
            f"{r_scaled['acc']:.3f}), window checkpoint {r_win['acc']:.3f}, final {r_final['acc']:.3f}; "
            f"eta {prog.eta(i)}")
    report = {"run": str(run_dir), "steps": steps, "add_to": add_to, "with_w0": with_w0,
              "acc_base": r_base["acc"], "acc_final": r_final["acc"], "windows": rows,
              "eval": {"base": r_base, "final": r_final}}
    plot_lines(Path(out) / "alpharl.png",
               {"AlphaRL prediction": ([r["window_step"] for r in rows], [r["acc_pred"] for r in rows]),
                "norm-rescaled prediction": ([r["window_step"] for r in rows], [r["acc_pred_rescaled"] for r in rows]),
                "window checkpoint itself": ([r["window_step"] for r in rows], [r["acc_window"] for r in rows])},
               f"AlphaRL (add to {add_to}): predicting step {steps[-1]}", "last step of the window", "accuracy",
               {f"final (step {steps[-1]})": r_final["acc"], "base": r_base["acc"]})
    summary = [f"Base {num_str(r_base['acc'])}, final (step {steps[-1]}) {num_str(r_final['acc'])}; prediction added to {add_to}."]
    summary += [f"Window {r['window']} (to step {r['window_step']}, speedup {r['speedup']:.2f}x): predicted "
                f"{num_str(r['acc_pred'])} = {num_str(r['retained'])} of final, {num_str(r['gain_share'])} of the gain "
                f"(norm-rescaled: {num_str(r['acc_pred_rescaled'])}); the window checkpoint alone "
                f"{num_str(r['acc_window'])}." for r in rows]
    return report, summary

# -----------------------------------------------------------------------------
# Paper 2: weight extrapolation sweep


# Paper 2 (Linearity of RLVR), Eq. 2: W_t' = W_t0 + alpha (W_t1 - W_t0), accuracy vs alpha
def run_extrapolate(run_dir, out, evaluate_fn, t0, t1, alphas, device="cpu"):
    ckpts = dict(ckpt.list_checkpoints(run_dir))
    for t in (t0, t1):
        if t not in ckpts:
            raise UsageError(f"no checkpoint at step {t} in {run_dir}: steps are {sorted(ckpts)}")
    if t1 <= t0:
        raise UsageError(f"need t0 < t1, got {t0}, {t1}")
    last = max(ckpts)
    sd0, sd1 = load_sd(ckpts[t0]), load_sd(ckpts[t1])
    model = ckpt.load_model(ckpts[t1], device).eval()
    rows, prog = [], Progress(len(alphas))
    for i, alpha in enumerate(alphas):
        model.load_state_dict(extrapolate_weights(sd0, sd1, alpha))
        r = evaluate_fn(model)
        rows.append({"alpha": alpha, "equivalent_step": t0 + alpha * (t1 - t0), "acc": r["acc"], "eval": r})
        log(f"extrapolate alpha {alpha}: acc {r['acc']:.3f}; eta {prog.eta(i)}")
    r_last = evaluate_fn(ckpt.load_model(ckpts[last], device).eval())
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
