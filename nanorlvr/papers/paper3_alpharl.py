"""
Paper 3, AlphaRL: "On Predictability of Reinforcement Learning Dynamics for Large Language Models"
(arXiv 2510.00553), behind `analyze.py rank1 | alpharl`: how much of the RL gain does the rank-1 part of each
matrix's update keep, and how well does a line fit to the early rank-1 updates predict the final model
(the maths: extrapolate.rank_k_state_dict, extrapolate.alpharl_predict)?

This file loads checkpoints, calls the maths, evaluates the resulting models and summarises.
"""
import math
from pathlib import Path

import torch

from nanorlvr.infra import checkpoint as ckpt
from nanorlvr.papers.report import (gain_share, group_means, kind_of, load_sd, num_str, plot_hist, plot_lines,
                                     summary_stats)
from nanorlvr.infra.common import Progress, UsageError, log
from nanorlvr.papers.extrapolate import alpharl_predict, is_update_matrix, rank_k_state_dict


# -----------------------------------------------------------------------------
# Paper 3: the rank-k model and AlphaRL


# Paper 3 (AlphaRL, arXiv 2510.00553), rank-1 model: W_base + (||dW||_F / ||dW_1||_F) dW_1 per update matrix,
# and how much of the RL gain it recovers
def rank_k_model(base_path, rl_path, k=1, device="cpu"):
    """(model with the rank-k weights on `device`, {matrix: share of the update's energy in its top component})."""
    model = ckpt.load_model(base_path, "cpu")  # three copies at most: base (in the model), RL, rank-k
    sd, shares = rank_k_state_dict(model.state_dict(), load_sd(rl_path), k)
    model.load_state_dict(sd)
    del sd
    return model.to(device).eval(), shares


def top1_norm_ratio(sd_base, sd_rl):
    """AlphaRL's own printed statistic of rank-1 dominance, sum_m s1(dW_m) / sum_m ||dW_m||_F over the update
    matrices m: a ratio of norms pooled over matrices, not the per-matrix energy share s1^2 / sum s_i^2 (a
    matrix whose update is spread evenly over r components has energy share 1/r but norm ratio 1/sqrt(r))."""
    top, frob = 0.0, 0.0
    for name, wb in sd_base.items():
        if is_update_matrix(name, wb):
            d = sd_rl[name].double() - wb.double()
            top += torch.linalg.matrix_norm(d, ord=2).item()
            frob += torch.linalg.matrix_norm(d).item()
    return top / frob if frob > 0 else float("nan")


def run_rank1(base_path, rl_path, out, evaluate_fn, k=1, device="cpu"):
    # AlphaRL's pooled ratio first, on two state dicts that are freed before the rank-k model is built
    norm_ratio = top1_norm_ratio(load_sd(base_path), load_sd(rl_path))
    model, shares = rank_k_model(base_path, rl_path, k, device)
    share_t = torch.tensor([s for s in shares.values() if not math.isnan(s)])
    prog = Progress(3)
    r_rank = evaluate_fn(model)
    del model
    log(f"rank1: rank-{k} model acc {r_rank['acc']:.3f}; eta {prog.eta(0)}")
    r_base = evaluate_fn(ckpt.load_model(base_path, device).eval())
    log(f"rank1: base acc {r_base['acc']:.3f}; eta {prog.eta(1)}")
    r_rl = evaluate_fn(ckpt.load_model(rl_path, device).eval())
    recovery = gain_share(r_rank["acc"], r_base["acc"], r_rl["acc"])
    report = {"base": str(base_path), "rl": str(rl_path), "rank": k,
              "acc": {"base": r_base["acc"], "rl": r_rl["acc"], f"rank{k}": r_rank["acc"]},
              "recovery": recovery, "eval": {"base": r_base, "rl": r_rl, f"rank{k}": r_rank},
              "top1_share": {**summary_stats(share_t, 0.5),
                             "per_kind_mean": group_means({n: torch.tensor([s]) for n, s in shares.items()
                                                           if not math.isnan(s)}, kind_of),
                             "per_matrix": shares},
              "top1_norm_ratio": norm_ratio}
    plot_hist(Path(out) / "top1_share.png", {"update matrices": share_t},
              "Share of each matrix's RL update in its top singular component", "s1^2 / sum s_i^2", bins=20,
              range=(0, 1))
    summary = [f"Accuracy: base {num_str(r_base['acc'])}, RL {num_str(r_rl['acc'])}, rank-{k} {num_str(r_rank['acc'])}: "
               f"recovery {num_str(recovery)} of the RL gain (Paper 3, rank 1: > 0.99).",
               f"Top singular component holds a median {num_str(report['top1_share']['median'])} of each matrix's "
               f"update energy ({len(share_t)} matrices); as AlphaRL prints it, sum s1 / sum ||dW||_F = "
               f"{num_str(norm_ratio)}."]
    return report, summary


# Paper 3 (AlphaRL, arXiv 2510.00553), label-free: a_k = s1_k u1_k fit linearly in step over a window,
# W_pred = W_0 + a* v1_K^T
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
