"""A tiny job pool for the benchmark drivers: run shell-free commands, at most `parallel` at once, each
with its output in a log file; stop at the first failure. On a 2-core CPU two one-thread jobs get more
done than one two-thread job (the toy's matrices are too small to keep two threads busy)."""
import shlex
import subprocess
import sys
import time
from pathlib import Path


def run_all(jobs, parallel=2, log_dir="out/logs"):
    """jobs: list of (name, argv). Runs them, `parallel` at a time; returns {name: seconds}. A failing job
    stops the others and raises SystemExit with the tail of its log."""
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    pending, running, seconds, t_start = list(jobs), {}, {}, time.time()
    while pending or running:
        while pending and len(running) < parallel:
            name, argv = pending.pop(0)
            log = open(Path(log_dir) / f"{name.replace('/', '_')}.log", "w")
            running[name] = (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), log, time.time(), argv)
            print(f"[{time.time() - t_start:6.0f}s] start {name}: {shlex.join(argv)}", flush=True)
        time.sleep(0.5)
        for name, (proc, log, t0, argv) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            seconds[name] = time.time() - t0
            if proc.returncode:
                for p, *_ in running.values():
                    p.kill()
                tail = Path(log.name).read_text().splitlines()[-15:]
                sys.exit(f"job {name} failed (exit {proc.returncode}): {shlex.join(argv)}\n" + "\n".join(tail))
            print(f"[{time.time() - t_start:6.0f}s] done  {name} in {seconds[name]:.0f}s", flush=True)
    return seconds
