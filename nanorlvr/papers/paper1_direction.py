"""
Paper 1, "On the Direction of RLVR Updates for LLM Reasoning: Identification and Exploitation"
(arXiv 2603.22117), its token-level analysis behind `analyze.py dlogp`:

1. Responses sampled from the base and from the RL model are teacher-forced through both; per token
   dlogp = log pi_RL(y) - log pi_base(y), KL(pi_RL || pi_base) and the entropies. How well does each metric
   tell base-generated from RL-generated text (ROC AUC, histogram overlap)? How sparse is dlogp?
2. Token replacement: the base model leads, the RL model scores in lock-step (papers/lockstep.py), and where a gate
   fires the token is re-sampled from pi_RL. Held-out accuracy vs replacement ratio for each gate criterion,
   and the smallest ratio that recovers 90% of the RL - base gap.

The statistics are papers/stats.py's; the lock-step decoding is papers/lockstep.py's (sample.py's test-time extrapolation
uses it too). Paper 1's training-time reweighting is grpo_loss.token_weights (train.py --reweight).
"""
import time
from pathlib import Path

import torch

from nanorlvr.infra import checkpoint as ckpt
from nanorlvr.papers.report import num_str, plot_hist, plot_lines
from nanorlvr.infra.common import Progress, log, secs_str
from nanorlvr.engine import generate
from nanorlvr.papers.lockstep import GATES, lockstep_generate_fn, replacement_ratio
from nanorlvr.logprobs import pack
from nanorlvr.papers.stats import histogram_overlap, separability, token_metrics

METRICS = ("dlogp", "kl", "entropy_base", "entropy_rl")
SPARSITY_THRESHOLDS = (0.01, 0.05, 0.1, 0.5, 1.0)

# -----------------------------------------------------------------------------
# 1. per-token metrics of base- and RL-generated responses


LOGITS_PER_CHUNK = 2 ** 22  # vocabulary-sized rows scored at once: token_metrics' ~8 temporaries stay ~128 MB


def completion_logits(model, idx, prompt_lens, completion_lens):
    """Teacher-forced logits predicting each completion token: (N, Lc, V) float32 on the CPU, the target ids
    (N, Lc) and the mask (N, Lc) of real completion tokens (same positions as logprobs.completion_logprobs)."""
    device = next(model.parameters()).device
    Lc = int(completion_lens.max())
    j = torch.arange(Lc)
    mask = j[None, :] < completion_lens[:, None]
    src = (prompt_lens[:, None] - 1 + j[None, :]).clamp(max=idx.size(1) - 2)
    logits = model(idx[:, :-1].to(device)).float().cpu()
    logits = logits.gather(1, src[..., None].expand(-1, -1, logits.size(-1)))
    return logits, idx.gather(1, src + 1), mask


def completion_hidden(model, idx, prompt_lens, completion_lens):
    """The final hidden state before each real completion token, (n, n_embd) in row-major order (that of
    tensor[mask]), and the n target ids: lm_head can then be applied a chunk of tokens at a time."""
    device = next(model.parameters()).device
    Lc = int(completion_lens.max())
    j = torch.arange(Lc)
    mask = j[None, :] < completion_lens[:, None]
    src = (prompt_lens[:, None] - 1 + j[None, :]).clamp(max=idx.size(1) - 2)
    rows, cols = mask.nonzero(as_tuple=True)
    hidden = model(idx[:, :-1].to(device), head=False)
    return hidden[rows.to(device), src[rows, cols].to(device)], idx.gather(1, src + 1)[rows, cols]


def batch_token_metrics(model_base, model_rl, idx, plen, clen, chunk=LOGITS_PER_CHUNK):
    """stats.token_metrics of one packed batch's completion tokens, each metric a 1-D tensor in row-major
    order. Where the batch's (rows, tokens, vocab) logits would exceed `chunk` elements (a real vocabulary),
    lm_head is applied to the completion tokens only, `chunk` logits at a time: the working set stays
    bounded whatever the vocabulary and batch (the toy takes the one-tensor path)."""
    vocab = model_base.config.vocab_size
    if idx.numel() * vocab <= chunk:
        lb, targets, mask = completion_logits(model_base, idx, plen, clen)
        lr, _, _ = completion_logits(model_rl, idx, plen, clen)
        return {name: v[mask] for name, v in token_metrics(lb, lr, targets).items()}
    hb, targets = completion_hidden(model_base, idx, plen, clen)
    hr, _ = completion_hidden(model_rl, idx, plen, clen)
    n, parts = max(1, chunk // vocab), []
    for i in range(0, len(targets), n):
        parts.append(token_metrics(model_base.lm_head(hb[i:i + n]), model_rl.lm_head(hr[i:i + n]),
                                   targets[i:i + n].to(hb.device)))
    return {name: torch.cat([p[name].cpu() for p in parts]) for name in METRICS}


# Paper 1 (arXiv 2603.22117), token metrics dlogp / KL / entropy of responses scored by both models
@torch.no_grad()
def pair_token_metrics(model_base, model_rl, prompts, completions, batch_size=32, chunk=LOGITS_PER_CHUNK):
    """{metric: 1-D tensor over every completion token} with the metrics of stats.token_metrics, a batch
    of `batch_size` responses at a time (batch_token_metrics), with a progress line every tenth."""
    out = {m: [] for m in METRICS}
    starts = range(0, len(prompts), batch_size)
    prog = Progress(len(starts))
    for i, b in enumerate(starts):
        idx, plen, clen = pack(prompts[b:b + batch_size], completions[b:b + batch_size])
        if int(clen.max()) > 0:
            for name, v in batch_token_metrics(model_base, model_rl, idx, plen, clen, chunk).items():
                out[name].append(v)
        prog.tick(i, "scoring with both models: batch")
    return {m: torch.cat(v) if v else torch.zeros(0) for m, v in out.items()}


def sample_responses(model, fmt, problems, samples, max_new_tokens, temperature, top_p, seed):
    prompts = [fmt.encode(p["question"]) for p in problems for _ in range(samples)]
    g = generate(model, prompts, max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                 stop_ids=fmt.stop_ids, batch_size=1024)
    return prompts, g.tokens


def sparsity(dlogp):
    """Share of tokens with |dlogp| above each small threshold (RL changes few tokens' probabilities)."""
    return {f"abs_gt_{t}": (dlogp.abs() > t).double().mean().item() if len(dlogp) else None
            for t in SPARSITY_THRESHOLDS}


def compare_populations(m_base_gen, m_rl_gen):
    """Per metric: ROC AUC of RL-generated vs base-generated (> 0.5: larger on RL text), the direction-free
    separation |AUC - 0.5| * 2, the histogram overlap and the two means."""
    out = {}
    for name in METRICS:
        a, b = m_rl_gen[name], m_base_gen[name]
        auc = separability(a, b)
        out[name] = {"auc_rl_vs_base": auc, "separation": abs(auc - 0.5) * 2, "overlap": histogram_overlap(a, b),
                     "mean_rl_gen": a.double().mean().item(), "mean_base_gen": b.double().mean().item()}
    return out

def separation_verdict(sep):
    """The summary's sentence on which metric tells RL- from base-generated text, read off the figures of
    compare_populations (separation = 2 |AUC - 0.5|), never assumed: Paper 1 finds that only dlogp does."""
    best = max(METRICS, key=lambda n: sep[n]["separation"])
    figures = ", ".join(f"{n} {sep[n]['separation']:.3f}" for n in METRICS)
    if best == "dlogp":
        return f"dlogp separates them best (2 |AUC - 0.5|: {figures}), as in Paper 1 (only dlogp separates them)."
    return (f"{best} separates them better than dlogp (2 |AUC - 0.5|: {figures}), unlike Paper 1 (only dlogp "
            "separates them).")


def replacement_verdict(reach):
    """The sentence on which gate recovers 90% of the gap with the fewest replaced tokens (None: never)."""
    reached = {c: r for c, r in reach.items() if r is not None}
    if not reached:
        return "No gate reaches 90% of the gap in this sweep."
    best = min(reached, key=reached.get)
    if best == "dlogp":
        return "dlogp needs the fewest replaced tokens, as in Paper 1."
    if "dlogp" not in reach:
        return f"{best} needs the fewest replaced tokens (dlogp not swept)."
    return (f"{best} needs fewer replaced tokens than dlogp ({num_str(reached[best])} vs "
            f"{num_str(reach['dlogp'])}), unlike Paper 1.")

# -----------------------------------------------------------------------------
# 2. token replacement sweep


def thresholds_for_ratios(criterion, ratios, m_base_gen):
    """Gate thresholds expected to fire on about `ratios` of the tokens of base-led generation, read off the
    gate statistic on base-generated responses: dlogp <= its r-quantile, KL / base entropy >= their
    (1 - r)-quantile, random: tau = r. The ratio actually realised is measured during generation."""
    if criterion == "random":
        return list(ratios)
    x = m_base_gen["entropy_base" if criterion == "entropy" else criterion].double()
    q = torch.tensor([r if criterion == "dlogp" else 1 - r for r in ratios], dtype=torch.float64)
    return torch.quantile(x, q).tolist()


def ratio_to_reach(ratios, accs, acc_base, acc_rl, share=0.9):
    """Smallest replacement ratio whose accuracy reaches acc_base + share (acc_rl - acc_base), interpolated
    linearly between sweep points sorted by ratio, starting from (0, acc_base). None if never reached (or
    if RL is not better than base)."""
    if acc_rl <= acc_base:
        return None
    target = acc_base + share * (acc_rl - acc_base)
    pts = [(0.0, acc_base)] + sorted(zip(ratios, accs))
    for (r0, a0), (r1, a1) in zip(pts, pts[1:]):
        if a1 >= target:
            return r0 + (target - a0) / (a1 - a0) * (r1 - r0)  # a0 < target <= a1
    return None


# Paper 1 (arXiv 2603.22117), token replacement: the base leads; where the gate fires (dlogp <= tau, KL or
# entropy >= tau, random) the token is re-sampled from pi_RL
def replacement_sweep(model_base, model_rl, evaluate_fn, taus, max_new_tokens, stop_ids, top_p=1.0, costs=None):
    """{criterion: [{"tau", "ratio", "acc", "eval"}]} for each (criterion, tau) in taus. ratio: the
    evaluation's lockstep.replacement_ratio (over the avg@k samples, or the greedy pass when k = 0).
    costs: {criterion: [expected work of each tau]} for the ETA (default: all alike)."""
    jobs = [(c, tau) for c, ts in taus.items() for tau in ts]
    units = [u for c, ts in taus.items() for u in (costs or {}).get(c, [1.0] * len(ts))]
    out, t0 = {c: [] for c in taus}, time.time()
    for i, (criterion, tau) in enumerate(jobs):
        calls = []
        fn = lockstep_generate_fn(model_base, model_rl, "dlogp", 0.0, max_new_tokens=max_new_tokens,
                                  stop_ids=stop_ids, top_p=top_p, gate=criterion, tau=tau, batch_size=1024, calls=calls)
        r = evaluate_fn(model_base, generate_fn=fn)
        ratio = replacement_ratio(calls)
        out[criterion].append({"tau": tau, "ratio": ratio, "acc": r["acc"], "eval": r})
        eta = (time.time() - t0) / sum(units[:i + 1]) * sum(units[i + 1:])
        log(f"replace {criterion:8s} tau {tau:+.4f}: ratio {ratio:.3f} acc {r['acc']:.3f}; eta {secs_str(eta)}")
    return out


def run_dlogp(base_path, rl_path, out, fmt, probe, evaluate_fn, *, samples=4, ratios=(), criteria=GATES,
              max_new_tokens=64, temperature=1.0, top_p=1.0, k=8, seed=0, batch_size=32, device="cpu"):
    """Part 1 on the `probe` problems (x samples each); part 2 (if ratios is non-empty) through evaluate_fn.
    fmt: the two checkpoints' prompt format (prompts.format_for_pair)."""
    model_base = ckpt.load_model(base_path, device).eval()
    model_rl = ckpt.load_model(rl_path, device).eval()
    log(f"dlogp: sampling {len(probe)} x {samples} responses from each model, scoring with both ...")
    m, mean_len = {}, {}
    for who, model in (("base_gen", model_base), ("rl_gen", model_rl)):
        prompts, completions = sample_responses(model, fmt, probe, samples, max_new_tokens, temperature, top_p, seed)
        m[who] = pair_token_metrics(model_base, model_rl, prompts, completions, batch_size)
        mean_len[who] = sum(map(len, completions)) / max(1, len(completions))
    both = torch.cat([m["base_gen"]["dlogp"], m["rl_gen"]["dlogp"]])
    report = {"base": str(base_path), "rl": str(rl_path), "tokens": {w: len(v["dlogp"]) for w, v in m.items()},
              "separability": compare_populations(m["base_gen"], m["rl_gen"]),
              "sparsity": {"all": sparsity(both), "base_gen": sparsity(m["base_gen"]["dlogp"]),
                           "rl_gen": sparsity(m["rl_gen"]["dlogp"])}}
    for name in METRICS:
        plot_hist(Path(out) / f"hist_{name}.png", {"base-generated": m["base_gen"][name], "RL-generated": m["rl_gen"][name]},
                  f"{name} per token (AUC RL vs base {report['separability'][name]['auc_rl_vs_base']:.3f})", name,
                  logy=name in ("dlogp", "kl"))
    sep = report["separability"]
    summary = [f"Tokens scored: {report['tokens']['base_gen']} base-generated, {report['tokens']['rl_gen']} RL-generated.",
               "AUC (RL- vs base-generated) / histogram overlap: " + ", ".join(
                   f"{n} {sep[n]['auc_rl_vs_base']:.3f} / {sep[n]['overlap']:.3f}" for n in METRICS)
               + ". " + separation_verdict(sep),
               "Sparsity, share of tokens with |dlogp| > t: " + ", ".join(
                   f"{t}: {num_str(report['sparsity']['all'][f'abs_gt_{t}'])}" for t in SPARSITY_THRESHOLDS) + "."]
    if not ratios:
        return report, summary

    log("token replacement: base and RL references ...")
    r_base, r_rl = evaluate_fn(model_base), evaluate_fn(model_rl)
    taus = {c: thresholds_for_ratios(c, ratios, m["base_gen"]) for c in criteria}
    # the ETA counts expected tokens, not evaluations: a job decodes the longer RL-like text the more it
    # replaces, so a criterion's first, low-ratio jobs are quicker than its last. A rough model: the length
    # moves from the base's to the RL model's as the ratio goes to 0.2 (where the dlogp gate's accuracy
    # reaches the RL model's on the toy)
    lb, lr = mean_len["base_gen"], mean_len["rl_gen"]
    costs = {c: [lb + min(1.0, r / 0.2) * (lr - lb) for r in ratios] for c in criteria}
    sweep = replacement_sweep(model_base, model_rl, evaluate_fn, taus, max_new_tokens, fmt.stop_ids, top_p, costs)
    reach = {c: ratio_to_reach([p["ratio"] for p in pts], [p["acc"] for p in pts], r_base["acc"], r_rl["acc"])
             for c, pts in sweep.items()}
    report["replacement"] = {"acc_base": r_base["acc"], "acc_rl": r_rl["acc"], "target_ratios": list(ratios),
                             "ratio_to_90pct_gap": reach, "sweep": sweep, "eval": {"base": r_base, "rl": r_rl}}
    plot_lines(Path(out) / "replacement.png",
               {c: ([0.0] + [p["ratio"] for p in pts], [r_base["acc"]] + [p["acc"] for p in pts])
                for c, pts in sweep.items()},
               "Token replacement (base leads, gated tokens from RL)", "replacement ratio", "accuracy",
               {"RL model": r_rl["acc"], "base model": r_base["acc"]})
    summary += [f"Replacement: base {num_str(r_base['acc'])}, RL {num_str(r_rl['acc'])}. Smallest replacement ratio reaching "
                "90% of the gap: " + ", ".join(f"{c} {num_str(reach[c])}" for c in criteria)
                + " (Paper 1: dlogp ~0.05, KL ~0.14, entropy ~0.19, random never). " + replacement_verdict(reach)]
    return report, summary
