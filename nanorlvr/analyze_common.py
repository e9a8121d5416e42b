"""
What every analyze.py subcommand shares: the held-out accuracy of a model (make_evaluator), plots, number
formatting and small summaries of per-tensor values. The analyses themselves are paper1_direction.py,
paper2_linearity.py and paper3_alpharl.py (papers.py lists where each paper's equations live).

Each analysis takes `evaluate_fn(model, generate_fn=None) -> dict` (see make_evaluator; its "acc" is the
headline accuracy) and an output folder for its plots, and returns (report dict, summary markdown lines).
"""
import math
import re
import resource

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from nanorlvr import checkpoint as ckpt  # noqa: E402
from nanorlvr.engine import generate  # noqa: E402
from nanorlvr.extrapolate import is_norm  # noqa: E402


def make_evaluator(fmt, problems, k=8, temperature=1.0, max_new_tokens=64, top_p=1.0, seed=1234):
    """evaluate_fn(model, generate_fn=None) -> evaluate()'s dict plus "acc": avg@k (greedy accuracy if k = 0).
    Every model is scored on the same problems with the same seeds, prompted with fmt (prompts.format_for)."""
    from nanorlvr.evaluate import evaluate  # needs the verifier; imported only when something is evaluated

    def plain(model):
        return lambda ps, temp, s: generate(model, ps, max_new_tokens, temperature=temp, top_p=top_p, seed=s,
                                            stop_ids=fmt.stop_ids, batch_size=1024)

    def evaluate_fn(model, generate_fn=None):
        r = evaluate(model, fmt, problems, k=k, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed,
                     generate_fn=generate_fn or plain(model))
        return {**r, "acc": r[f"avg{k}"] if k else r["greedy_acc"]}
    return evaluate_fn


def gain_share(acc, acc_base, acc_ref):
    """(acc - acc_base) / (acc_ref - acc_base): the share of the base -> reference gain reached (None if no gain)."""
    return (acc - acc_base) / (acc_ref - acc_base) if acc_ref != acc_base else None


def fnum(x, spec=".3f"):
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
