"""A tiny job pool for the benchmark drivers: run shell-free commands, at most `parallel` at once, each
with its output in a log file; stop at the first failure. On a 2-core CPU two one-thread jobs get more
done than one two-thread job (the toy's matrices are too small to keep two threads busy)."""
import shlex
import subprocess
import sys
import time
from pathlib import Path


def run_all(jobs, parallel=2, log_dir="out/logs", needs=None, on_done=None):
    """jobs: list of (name, argv). Runs them, `parallel` at a time, in list order except that a job waits
    for the jobs named in needs[name] that are in this list (an analysis for its training run); returns
    {name: seconds}. on_done(name, seconds) is called as each job finishes. A failing job stops the others
    and raises SystemExit with the tail of its log."""
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    needs = needs or {}
    pending, running, seconds, t_start = list(jobs), {}, {}, time.time()
    waits_on = {name for name, _ in jobs}  # a need outside this list is already met

    def ready(name):
        return not any(n in waits_on and n not in seconds for n in needs.get(name, ()))
    while pending or running:
        while len(running) < parallel and (job := next((j for j in pending if ready(j[0])), None)):
            pending.remove(job)
            name, argv = job
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
            left = len(pending) + len(running)
            # a rough ETA: the mean job so far, `parallel` at a time (training runs take longer than analyses)
            eta = sum(seconds.values()) / len(seconds) * left / parallel
            print(f"[{time.time() - t_start:6.0f}s] done  {name} in {seconds[name]:.0f}s; {left} job(s) left, "
                  f"eta ~{eta / 60:.0f} min", flush=True)
            if on_done:
                on_done(name, seconds[name])
    return seconds
