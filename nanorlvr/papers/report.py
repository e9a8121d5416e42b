"""
What every analyze.py subcommand shares: plots, number formatting and small summaries of per-tensor values.
The analyses themselves are papers/paper1_direction.py, papers/paper2_linearity.py and papers/paper3_alpharl.py (papers/__init__.py lists
where each paper's equations live); the held-out accuracy of a model is evaluate.evaluator.

Each analysis takes `evaluate_fn(model, generate_fn=None) -> dict` (evaluate.evaluator; its "acc" is the
headline accuracy) and an output folder for its plots, and returns (report dict, summary markdown lines).
"""
import math
import re
import resource

import torch

from nanorlvr.infra import checkpoint as ckpt
from nanorlvr.papers.extrapolate import is_norm


def pyplot():
    """matplotlib's pyplot (file output only), imported where a plot is drawn: importing it costs ~2 s,
    which a script's --help or a usage error should not pay."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


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
    plt = pyplot()
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
    plt = pyplot()
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
