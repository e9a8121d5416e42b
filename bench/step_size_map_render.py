"""
The step-size map (bench/step_size_map.py) rendered from its json alone: the table of every finding at every
point, where each finding holds, and the figure. Nothing here reads a run.
"""
import math


def label(p):
    """A point as 2.5e-6×4+DS: its lr, optimizer steps per rollout (if more than one), dynamic sampling."""
    m, e = f"{p['lr']:e}".split("e")
    return f"{m.rstrip('0').rstrip('.')}e{int(e)}" + (f"×{p['steps_per_rollout']}" if p["steps_per_rollout"] > 1 else "") + (
        "+DS" if p["dynamic_sampling"] else "")


def by_size(data):
    """The points by update size per rollout (then steps per rollout, dynamic sampling last)."""
    return sorted(data["points"], key=lambda p: (p["update_size"], p["steps_per_rollout"], p["dynamic_sampling"]))


def verdicts(data, name):
    """[(point label, verdict)] of one finding by update size; None for a statistic without a rule of its own
    (the top-1 shares)."""
    found = [(label(p), p["findings"].get(name, {}).get("verdict")) for p in by_size(data)]
    return None if all(v in (None, "-") for _, v in found) else found


def table_md(data):
    """The map as a markdown table, rendered from the json alone: a row per finding, a column per point
    (sorted by update size), each cell mean +- std over seeds and findings.json's verdict."""
    points = by_size(data)

    def head(p):
        ds = " + DS" if p["dynamic_sampling"] else ""
        return f"{p['lr']:g} x {p['steps_per_rollout']}{ds}"

    def cell(f):
        if f["mean"] is None:
            return "-"
        sd = f" ± {f['std']:.3f}" if f.get("std") is not None else ""
        verdict = f.get("verdict", "")
        return f"{f['mean']:.3f}{sd}" + (f" ({verdict})" if verdict and verdict != "-" else "")
    lines = ["| finding (paper) | " + " | ".join(head(p) for p in points) + " |",
             "|---|" + "---|" * len(points),
             "| update size per rollout | " + " | ".join(f"{p['update_size']:.1e}" for p in points) + " |",
             "| seeds | " + " | ".join(",".join(map(str, p["seeds"])) for p in points) + " |"]
    for name, meta in data["findings"].items():
        paper = f" ({meta['paper']})" if meta["paper"] else ""
        lines.append(f"| {name}{paper} | " + " | ".join(cell(p["findings"][name]) for p in points) + " |")
    lines.append("| still rising at step 150 | " + " | ".join("yes" if p["still_rising"] else "no" for p in points) + " |")
    return "\n".join(lines) + "\n"


def holds_md(data):
    """Where each finding holds: for each finding with a verdict rule, the points (by update size) whose
    findings.json verdict is yes, partly, and no or inside the noise; rendered from the json alone."""
    lines = ["| finding (paper) | paper's figure | yes at | partly at | no / inside the noise at |", "|---|---|---|---|---|"]
    for name, meta in data["findings"].items():
        found = verdicts(data, name)
        if found is None:
            continue

        def at(*which):
            return ", ".join(lab for lab, v in found if v in which) or "none"
        paper = f" ({meta['paper']})" if meta["paper"] else ""
        lines.append(f"| {name}{paper} | {meta['paper_figure']} | {at('yes')} | {at('partly')} | "
                     f"{at('no', 'inside the noise', 'not reached')} |")
    return "\n".join(lines) + "\n"


def plot(data, path):
    """Each finding against the update size (log x), mean +- std over seeds; marker by steps per rollout,
    dynamic sampling in its own colour; the paper's figure as a dashed line, zero for a gain."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    names = list(data["findings"])  # each with its paper, the paper's figure and its value as a line
    sizes = [p["update_size"] for p in data["points"]]
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(names) / cols), cols, figsize=(4 * cols, 2.8 * math.ceil(len(names) / cols)))
    for ax, fname in zip(axes.flat, names):
        paper, figure, line = (data["findings"][fname][k] for k in ("paper", "paper_figure", "paper_line"))
        rule = next((p["findings"][fname]["rule"] for p in data["points"] if "rule" in p["findings"][fname]), None)
        for spr, ds, marker, colour, legend in ((1, False, "o", "C0", "1 step / rollout"),
                                                (4, False, "s", "C1", "4 steps / rollout"),
                                                (4, True, "^", "C3", "4 steps + dynamic sampling")):
            pts = sorted((p["update_size"], p["findings"][fname]) for p in data["points"]
                         if p["steps_per_rollout"] == spr and p["dynamic_sampling"] == ds
                         and p["findings"][fname]["mean"] is not None)
            if pts:
                ax.errorbar([u for u, _ in pts], [f["mean"] for _, f in pts], yerr=[f["std"] or 0 for _, f in pts],
                            fmt=marker + "-", color=colour, ms=4, lw=1, capsize=2, label=legend)
        if line is not None:
            ax.axhline(line, color="grey", ls="--", lw=1)
        elif rule and rule[0] == "gain":
            ax.axhline(0, color="grey", lw=0.5)
        ax.set_xscale("log")  # every panel over the whole axis, decades labelled only
        ax.set_xlim(min(sizes) / 1.5, max(sizes) * 1.5)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{fname}" + (f" (paper {paper})" if paper else ""), fontsize=8)
        ax.tick_params(labelsize=7)
        if line is not None:
            ax.text(0.02, 0.03, f"paper: {figure}", transform=ax.transAxes, fontsize=6, color="grey")
    spare = list(axes.flat)[len(names):]
    for ax in spare:
        ax.axis("off")
    # one legend, in the first empty panel (or over the figure); the x axis named under the last row
    handles, labels = axes.flat[0].get_legend_handles_labels()
    (spare[0] if spare else fig).legend(handles, labels, fontsize=8, loc="center")
    for ax in axes[-1]:
        ax.set_xlabel("update size per rollout: lr x optimizer steps", fontsize=7)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.05, top=0.97, hspace=0.45, wspace=0.25)
    fig.savefig(path, dpi=90)
    plt.close(fig)
