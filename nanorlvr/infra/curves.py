"""
Training curves of a GRPO run, drawn from its metrics.jsonl: train.py writes `curves.png` beside the
checkpoints at the end of every run (also `python -m nanorlvr.infra.curves RUN_DIR`).

Four panels over the step: rollout reward (the mean of the 0/1 verifier rewards) with the held-out
accuracies wherever the run evaluated (greedy and avg@k), mean response length, policy entropy, and the
share of prompt groups whose rewards were all equal (they carry no gradient).
"""
import json
import sys
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(run_dir) -> Path:
    run_dir = Path(run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "reward" in r]
    evals = [(r["step"], r["eval"]) for r in rows if "eval" in r]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    panels = [("reward", "rollout reward / held-out accuracy"), ("len", "mean response length (tokens)"),
              ("entropy", "policy entropy (nats / token)"), ("zero_var_frac", "groups with equal rewards")]
    for ax, (key, title) in zip(axes, panels):
        ax.plot([r["step"] for r in steps if key in r], [r[key] for r in steps if key in r], lw=1, label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
    k = next((name[3:] for _, e in evals for name in e if name.startswith("avg")), None)
    if evals:
        axes[0].plot([s for s, _ in evals], [e["greedy_acc"] for _, e in evals], "o-", label="held-out greedy")
        if k:
            axes[0].plot([s for s, _ in evals], [e[f"avg{k}"] for _, e in evals], "s-", label=f"held-out avg@{k}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = run_dir / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(plot_curves(sys.argv[1]))
