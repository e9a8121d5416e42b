"""
The GPU path checked in one command: does everything CUDA-only work on this machine, and how fast is it?

    python bench/gpu_check.py             # one NVIDIA GPU, at most 6 minutes
    python bench/gpu_check.py --quick     # at most 3 minutes: one case of each part
    python bench/gpu_check.py --dry-run   # the CPU, tiny shapes (tests/test_gpu_check.py runs it)

It needs torch with CUDA, Triton and this working tree, nothing else: no network, no package index, no model
hub (every model has random weights, the quickstart makes its own data); parts that need pytest or
transformers are skipped, saying so, where those are missing. It prints one table and writes the device, the
torch / Triton versions, every figure and the pass / fail / skip of every check to bench/results/gpu_check.json
(without a GPU: only to --out, so that a CPU run never overwrites a GPU machine's figures).

  engine      generate(static=True) (one CUDA graph replayed per token) against the eager loop on the same
              seeds: identical tokens, greedy and seeded, also for a repeated call and another batch size;
  cuda_tests  through pytest, the tests the CPU suite skips without CUDA, and tests/test_kernels.py compiled;
  kernel      the Triton kernel table of bench/kernel.py, short (one vocabulary, B = 1 and 256);
  train_step  one bf16-mixed GRPO update at the Qwen2.5-0.5B shape (bench/train_step.py): time, peak memory
              beside precision.memory_estimate (train.py's estimate), the rollout/training log-prob gap;
  rollout     nano-vllm's workload and the GRPO-shaped one (bench/rollout.py): tokens/s, share of the decode
              roofline (bytes read per step over the copy bandwidth of the same run), transformers `generate`;
  quickstart  `python train.py` end to end: accuracy beside the CPU figure, wall time.

Each part runs in its own process under a time cap (--caps=part=seconds,... changes one): past it the part is
killed and reported skipped with the figures it had, a crash is reported failed with its last lines; the table
and the json are written whatever happens. The dry run calls the same part functions in this process. The
parts are in bench/gpu_parts.py; this file runs them and writes the table and the json.
"""
import argparse
import contextlib
import datetime
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("gpu_parts", ROOT / "bench" / "gpu_parts.py")
gp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gp)
PARTS, CUDA_TESTS = gp.PARTS, gp.CUDA_TESTS
CAPS = {"full": dict(engine=25, cuda_tests=70, kernel=25, train_step=40, rollout=80, quickstart=100),
        "quick": dict(engine=15, cuda_tests=35, kernel=15, train_step=25, rollout=35, quickstart=45)}
BUDGET = {"full": 360, "quick": 180}  # the whole command's wall time


class Record:
    """What a part reports, one JSON line per fact, written at once (a part killed at its cap keeps them)."""

    def __init__(self, path):
        self.path = path

    def _write(self, **row):
        with open(self.path, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")

    def figure(self, name, value, unit=""):  # NaN (no peak memory on the CPU) is no JSON: null
        self._write(figure=name, value=None if isinstance(value, float) and not math.isfinite(value) else value, unit=unit)

    def check(self, name, ok, note=""):
        self._write(check=name, ok=bool(ok), note=note)

    def skip(self, reason):
        self._write(skip=reason)

    def note(self, text):
        self._write(note=text)


# -----------------------------------------------------------------------------
# running the parts, the table, the json


def read_record(path):
    """A part's facts: {'status', 'reason', 'checks', 'figures', 'notes'}."""
    part = {"checks": [], "figures": [], "notes": [], "skip": None}
    for line in Path(path).read_text().splitlines() if Path(path).exists() else []:
        row = json.loads(line)
        if "check" in row or "figure" in row:
            part["checks" if "check" in row else "figures"].append(row)
        elif "note" in row:
            part["notes"].append(row["note"])
        else:
            part["skip"] = row["skip"]
    return part


def status(part, error):
    """fail: a check failed or the part crashed; skip: the part said why (or ran past its cap); else pass."""
    if error and not error.startswith("over its cap"):
        return "fail", error
    if any(not c["ok"] for c in part["checks"]):
        return "fail", "; ".join(c["check"] for c in part["checks"] if not c["ok"])[:300]
    if error or part["skip"]:
        return "skip", error or part["skip"]
    return "pass", f"{len(part['checks'])} checks"


def run_part(name, mode, cap, log_dir):
    """One part: in its own process group (killed whole past the cap), or in this process for the dry run."""
    result = log_dir / f"{name}.jsonl"
    t, error = time.time(), ""
    if mode == "dry":
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                PART_FUNCS[name](mode, Record(result))
        except Exception as e:  # one part's failure must not lose the table
            error = f"crashed: {type(e).__name__}: {e}"
            traceback.print_exc()
    else:
        with open(log_dir / f"{name}.log", "w") as log:
            proc = subprocess.Popen([sys.executable, __file__, f"--part={name}", f"--mode={mode}", f"--result={result}"],
                                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=cap)
                if rc:
                    tail = (log_dir / f"{name}.log").read_text().strip().splitlines()[-3:]
                    error = f"crashed (rc {rc}): {' / '.join(tail)[-300:]}"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                error = f"over its cap of {cap} s (killed; the figures so far are kept)"
    part = read_record(result)
    part["status"], part["reason"] = status(part, error)
    if (log_dir / f"{name}.log").exists():  # the json keeps the end of each part's output, for a failure's cause
        part["log_tail"] = (log_dir / f"{name}.log").read_text(errors="replace")[-2000:]
    part.update(seconds=round(time.time() - t, 1), cap_s=None if mode == "dry" else cap)  # the dry run: no cap
    part.pop("skip")
    return part


def header(mode):
    import torch
    cuda, triton = torch.cuda.is_available(), importlib.metadata.version("triton") if gp.have("triton") else None
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "mode": mode, "gpu": cuda,
            "command": "python bench/gpu_check.py" + {"full": "", "quick": " --quick", "dry": " --dry-run"}[mode],
            "device": torch.cuda.get_device_name() if cuda else f"no GPU: CPU ({platform.processor() or platform.machine()}, "
                                                               f"{os.cpu_count()} cores)",
            "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton, "python": platform.python_version(),
            "transformers": gp.have("transformers"), "pytest": gp.have("pytest")}


def table(report):
    lines = [f"{report['device']}; torch {report['torch']} (CUDA {report['cuda']}), Triton {report['triton']}; "
             f"{report['date']}; {report['command']}", "", "| part | status | what | value |", "|---|---|---|---|"]
    for name, p in report["parts"].items():
        cap = f" of {p['cap_s']} (cap)" if p["cap_s"] else ""
        lines.append(f"| {name} | **{p['status']}** | {p['reason']} | {p['seconds']} s{cap} |")
        lines += [f"| | {'ok' if c['ok'] else 'FAIL'} | {c['check']} | {c['note']} |" for c in p["checks"]]
        lines += [f"| | | {f['figure']} | {f['value']} {f['unit']}".rstrip() + " |" for f in p["figures"]]
        lines += [f"| | note | {n} | |" for n in p["notes"]]
    return "\n".join(lines)


PART_FUNCS = {name: getattr(gp, f"part_{name}") for name in PARTS}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="at most 3 minutes: one case of each part")
    ap.add_argument("--dry-run", action="store_true", help="the CPU, tiny shapes: checks that the script works")
    ap.add_argument("--out", default="", help="the json (default with a GPU: bench/results/gpu_check.json; else none)")
    ap.add_argument("--parts", default=",".join(PARTS), help="which parts, comma-separated")
    ap.add_argument("--caps", default="", help="time caps to change, e.g. quickstart=300,rollout=120 (seconds)")
    ap.add_argument("--part", help=argparse.SUPPRESS)    # internal: run one part in this process
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.part:  # a child: one part, its facts appended to --result
        return PART_FUNCS[args.part](args.mode, Record(args.result))
    mode = "dry" if args.dry_run else "quick" if args.quick else "full"
    parts = [p for p in args.parts.split(",") if p]
    if unknown := [p for p in parts if p not in PARTS]:
        ap.error(f"unknown part {unknown[0]!r}: choose from {', '.join(PARTS)}")
    caps = dict(CAPS["quick" if mode == "dry" else mode])
    for item in filter(None, args.caps.split(",")):
        name, _, secs = item.partition("=")
        if name not in caps or not secs.isdigit():
            ap.error(f"--caps: expected part=seconds with a part of {', '.join(PARTS)}, got {item!r}")
        caps[name] = int(secs)
    if mode == "dry":  # tiny shapes: one thread is fastest, and a shared CPU is not oversubscribed
        import torch
        torch.set_num_threads(1)
    # the whole check's wall time: 6 (quick: 3) minutes, or what the raised caps add up to
    budget = 10 ** 6 if mode == "dry" else max(BUDGET[mode], sum(caps[p] for p in parts))
    report, start = header(mode), time.time()
    report["parts"] = {}
    with tempfile.TemporaryDirectory() as d:
        for name in parts:
            left = budget - (time.time() - start)
            why = ("no CUDA device here (--dry-run checks the script on the CPU)" if mode != "dry" and not report["gpu"]
                   else "the time budget of the whole check is spent" if left < 10 else "")
            if why:  # nothing to start a process for
                report["parts"][name] = dict(status="skip", reason=why, checks=[], figures=[], notes=[], seconds=0,
                                             cap_s=caps[name])
            else:
                report["parts"][name] = run_part(name, mode, min(caps[name], int(left)), Path(d))
            print(f"{name}: {report['parts'][name]['status']} ({report['parts'][name]['reason']})", file=sys.stderr)
    report["wall_s"] = round(time.time() - start, 1)
    # without a GPU only where --out says: a CPU run must not overwrite a GPU machine's figures
    out = args.out or ("" if mode == "dry" or not report["gpu"] else str(ROOT / "bench" / "results" / "gpu_check.json"))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(table(report))
    print(f"\nwall time {report['wall_s']} s" + (f"; written to {out}" if out else ""))
    return report


if __name__ == "__main__":
    main()
