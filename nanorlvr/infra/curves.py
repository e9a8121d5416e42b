"""
Training curves of a GRPO run, drawn from its metrics.jsonl: train.py writes `curves.png` beside the
checkpoints at the end of every run (also `python -m nanorlvr.infra.curves RUN_DIR`).

Four panels over the step: rollout reward (the mean of the 0/1 verifier rewards) with the held-out
accuracies at each step the run evaluated (greedy, and avg@k as lone markers where it sampled them: a line
from start to end would invent the steps between), mean response length, policy entropy, and the share of
prompt groups whose rewards were all equal (they carry no gradient). RL-Extra's jumps (paper 2, Eq. 3) are shaded spans: no line is drawn across
them, as no step was trained there.
"""
import json
import sys
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def segments(steps, values, jumps):
    """(xs, ys) with a gap (nan) after each jump's start, so that no line joins the two sides of a jump."""
    xs, ys, starts = [], [], {a for a, _ in jumps}
    for s, v in zip(steps, values):
        xs.append(s)
        ys.append(v)
        if s in starts:
            xs.append(float("nan"))
            ys.append(float("nan"))
    return xs, ys


def plot_curves(run_dir) -> Path:
    run_dir = Path(run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "reward" in r]
    evals = [(r.get("rl_extra_jump_to", r["step"]), r["eval"]) for r in rows if "eval" in r]
    jumps = [(r["step"], r["rl_extra_jump_to"]) for r in steps if "rl_extra_jump_to" in r]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    panels = [("reward", "rollout reward / held-out accuracy"), ("len", "mean response length (tokens)"),
              ("entropy", "policy entropy (nats / token)"), ("zero_var_frac", "groups with equal rewards")]
    for ax, (key, title) in zip(axes, panels):
        have = [r for r in steps if key in r]
        ax.plot(*segments([r["step"] for r in have], [r[key] for r in have], jumps), lw=1, label=key)
        for a, b in jumps:
            ax.axvspan(a, b, color="0.85", lw=0, label="RL-Extra jump" if (a, b) == jumps[0] else None)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
    # the evaluations, each a marker: greedy at every one, avg@k at those that sampled (start and end)
    if evals:
        axes[0].plot([s for s, _ in evals], [e["greedy_acc"] for _, e in evals], "o-", ms=4,
                     label="held-out greedy")
        for k in sorted({name[3:] for _, e in evals for name in e if name.startswith("avg")}):
            pts = [(s, e[f"avg{k}"]) for s, e in evals if f"avg{k}" in e]
            axes[0].plot(*zip(*pts), "s", ms=5, label=f"held-out avg@{k}")  # markers only: no line between
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = run_dir / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(plot_curves(sys.argv[1]))
