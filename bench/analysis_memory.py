"""
Peak memory and wall time of every analysis on one run's checkpoints: does each stay within three copies of
the model plus a bounded working set (issue: a 135M model's dlogp once peaked at 8.1 GB)?

    python bench/analysis_memory.py --run=out/smol/grpo [--n_eval=200] [--out=out/analysis_memory]

Runs, one at a time on one thread (so the peaks are each job's own): analyze.py dlogp (token metrics on
n_prompts x 4 responses of each model; no replacement sweep), linearity, rank1, extrapolate, alpharl and
sample.py --extrapolate=logits, on the run's first, middle and last checkpoints. Prints and writes
memory.json: each job's peak RSS (the child's, read by bench/real_model.py's wrapper), its wall time and
the peak in checkpoints' worth of memory, (peak - a bare torch process) / model.safetensors' size.
"""
import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import paper_results as P, real_model as R  # noqa: E402
from bench.jobs import run_all  # noqa: E402


def jobs(run, out, n_eval, n_prompts, steps=None):
    """(name, argv) of each analysis; steps: the run's checkpoint steps (default: read from its folder)."""
    steps = steps or sorted(int(p.name[5:]) for p in Path(run).glob("step_*"))
    first, mid, last = (P.ckpt_dir(run, s) for s in (steps[0], steps[len(steps) // 2], steps[-1]))
    ev = [f"--n_eval={n_eval}", "--k=0", "--threads=1"]
    return [
        ("dlogp", [P.PY, "analyze.py", "dlogp", f"--base={first}", f"--rl={last}", f"--n_prompts={n_prompts}",
                   "--samples=4", "--ratios=", *ev, f"--out={out}/dlogp"]),
        ("linearity", [P.PY, "analyze.py", "linearity", f"--run={run}", "--n_probe=32", "--threads=1",
                       f"--out={out}/linearity"]),
        ("rank1", [P.PY, "analyze.py", "rank1", f"--base={first}", f"--rl={last}", *ev, f"--out={out}/rank1"]),
        ("extrapolate", [P.PY, "analyze.py", "extrapolate", f"--run={run}", f"--t0={steps[len(steps) // 2]}",
                         f"--t1={steps[-1]}", "--alpha=1.5", *ev, f"--out={out}/extrapolate"]),
        ("alpharl", [P.PY, "analyze.py", "alpharl", f"--run={run}", "--window=2", *ev, f"--out={out}/alpharl"]),
        ("eq1", [P.PY, "sample.py", "--extrapolate=logits", f"--ckpt0={mid}", f"--ckpt1={last}", "--sweep=true",
                 "--alpha_sweep=1.5", f"--eval={n_eval}", "--k=0", "--threads=1", f"--out={out}/eq1.json"]),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--run", required=True, help="a run folder with step_* checkpoints (at least 4)")
    p.add_argument("--n_eval", type=int, default=200)
    p.add_argument("--n_prompts", type=int, default=200)
    p.add_argument("--out", default="out/analysis_memory")
    args = p.parse_args(argv)
    out = Path(args.out)
    todo = R.with_rss(jobs(args.run, out, args.n_eval, args.n_prompts))
    bare = R.with_rss([("bare", [P.PY, "-c", "import torch, nanorlvr.engine"])])
    seconds = run_all(bare + todo, 1, out / "logs")
    peaks = R.peak_rss_mb(out / "logs", ["bare"] + [n for n, _ in todo])
    model_mb = (next(Path(args.run).glob("step_*")) / "model.safetensors").stat().st_size / 2 ** 20
    rows = {n: {"peak_rss_mb": peaks[n], "seconds": seconds[n],
                "checkpoints": (peaks[n] - peaks["bare"]) / model_mb} for n, _ in todo}
    record = {"run": str(args.run), "model_mb": model_mb, "bare_torch_rss_mb": peaks["bare"], "jobs": rows,
              "commands": [shlex.join(["python", *a[4:]]) for _, a in todo], "date": time.strftime("%Y-%m-%d"),
              "cpu": subprocess.run([P.PY, "-c", "from bench.step_size_map import machine; print(machine())"],
                                    capture_output=True, text=True, cwd=ROOT).stdout.strip()}
    (out / "memory.json").write_text(json.dumps(record, indent=1))
    print(f"model {model_mb:.0f} MiB, bare torch {peaks['bare']:.0f} MiB")
    for n, r in rows.items():
        print(f"{n:>12}: peak {r['peak_rss_mb']:6.0f} MiB = {r['checkpoints']:.1f} checkpoints above bare torch, "
              f"{r['seconds']:.0f} s")


if __name__ == "__main__":
    main()
