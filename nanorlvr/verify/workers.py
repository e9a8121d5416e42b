"""
The verifier's worker processes: sympy equivalence checks with a deadline, kept out of the reading path.

    run_jobs([(index, {'gold': [..], 'pred': [..], 'value': bool}), ...], timeout, workers) -> {index: reply}

A reply is {'ok': bool, 'why': str, 'read': the candidate read} (or 'bad_gold': True when no gold candidate
parses): the first prediction candidate that parses is the answer -- with 'value' (the gold is a number),
arithmetic still to do is wrong (verify/form.py) -- compared with the first gold candidate that parses, by
nanorlvr/verify/parse.py (an allow-list parser that builds sympy objects; never eval/sympify) and
nanorlvr/verify/equal.py (exact equivalence).

Why processes: parsing is bounded by construction (token, depth, power and factorial caps), but sympy's
simplify is not, and Python cannot interrupt a thread, while signal.alarm only works in the main thread of
the main interpreter. So the sympy work runs in persistent worker processes (plain subprocesses talking JSON
lines over pipes, which also work from daemonic multiprocessing workers and from any thread); the parent
waits with select() until the deadline, then kills the worker, starts a replacement, and scores the item
False with a reason. Each worker caps its own address space. The first call in a process also waits for a
worker to start (about 1 s to import sympy; bounded by STARTUP_TIMEOUT, not counted in `timeout`); so may
the call right after a kill, if it comes before the replacement is up. Idle workers are kept warm between
calls (up to MAX_IDLE), killed at exit, and forgotten by a forked child. Linux/macOS only (select on pipes).
"""
import atexit
import functools
import json
import os
import select
import subprocess
import sys
import threading
import time

STARTUP_TIMEOUT = 60.0  # seconds a new worker may take to import sympy (a busy machine is slow)
MAX_IDLE = 8  # warm workers kept between calls


class _Worker:
    """One persistent subprocess running worker_main; requests and replies are JSON lines."""

    def __init__(self):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = f'import sys; sys.path.insert(0, {root!r}); from nanorlvr.verify.workers import worker_main; worker_main()'
        self.proc = subprocess.Popen([sys.executable, '-c', code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
        self.buf, self.ready = b'', False

    def send(self, obj):
        self.proc.stdin.write((json.dumps(obj) + '\n').encode())

    def read_lines(self):
        chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
        if not chunk:
            raise EOFError('worker exited')
        self.buf += chunk
        *lines, self.buf = self.buf.split(b'\n')
        return [line.decode() for line in lines]

    def kill(self):
        self.proc.kill()
        self.proc.wait()


# idle workers kept warm between calls: starting one costs about a second (importing sympy)
_lock, _idle = threading.Lock(), []


def _acquire():
    with _lock:
        while _idle:
            w = _idle.pop()
            if w.proc.poll() is None:
                return w
        return _Worker()


def _release(w):
    with _lock:
        if len(_idle) < MAX_IDLE and w.proc.poll() is None:
            return _idle.append(w)
    w.kill()


def _shutdown():
    while _idle:
        _idle.pop().kill()


def _forget_after_fork():  # a forked child must not share its parent's workers (or a held lock)
    global _lock, _idle
    _lock, _idle = threading.Lock(), []


atexit.register(_shutdown)
os.register_at_fork(after_in_child=_forget_after_fork)


def run_jobs(jobs, timeout, workers):
    """Run (index, request) jobs on up to `workers` workers; {index: reply}. A job past its deadline
    gets {'ok': False, 'why': 'timeout'} and its worker is killed and replaced."""
    replies, pending = {}, list(reversed(jobs))
    pool = [_acquire() for _ in range(min(workers, len(jobs)))]
    busy = {}  # worker -> (index, deadline)

    def fail(w, why):  # the worker's job scores False; the worker is killed and replaced
        if w in busy:
            replies[busy.pop(w)[0]] = {'ok': False, 'why': why if w.ready else f'{why} (worker start)'}
        w.kill()
        pool[pool.index(w)] = _Worker()

    try:
        while pending or busy:
            any_ready = any(w.ready for w in pool)
            for w in pool:  # a replacement still importing sympy waits while others can work
                if pending and w not in busy and (w.ready or not any_ready):
                    i, request = pending.pop()
                    busy[w] = (i, time.monotonic() + timeout + (0 if w.ready else STARTUP_TIMEOUT))
                    try:
                        w.send(request)
                    except OSError:
                        fail(w, 'worker crashed')
            watched = {w.proc.stdout.fileno(): w for w in pool if w in busy or not w.ready}
            deadline = min((d for _, d in busy.values()), default=time.monotonic() + STARTUP_TIMEOUT)
            for fd in select.select(list(watched), [], [], max(0.0, deadline - time.monotonic()))[0]:
                w = watched[fd]
                try:
                    lines = w.read_lines()
                except (EOFError, OSError):
                    fail(w, 'worker crashed')
                    continue
                for line in lines:
                    if line == 'ready':
                        w.ready = True
                        if w in busy:
                            busy[w] = (busy[w][0], time.monotonic() + timeout)
                    elif w in busy:
                        replies[busy.pop(w)[0]] = json.loads(line)
            for w, (_, deadline) in list(busy.items()):
                if time.monotonic() >= deadline:
                    fail(w, 'timeout')
        return replies
    finally:
        for w in pool:
            _release(w) if w not in busy else w.kill()


def worker_main():
    """Loop of a worker process: read a request line, parse and compare, write a reply line."""
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    except (ImportError, ValueError, OSError):
        pass
    from nanorlvr.verify.equal import equivalent
    from nanorlvr.verify.form import unevaluated
    from nanorlvr.verify.parse import ParseError, parse_answer
    parse = functools.lru_cache(maxsize=4096)(parse_answer)
    equivalent(parse('\\tan^2(x)+1'), parse('\\sec^2(x)'))  # sympy imports lazily: pay it before 'ready'
    out = os.fdopen(os.dup(1), 'w')
    sys.stdout = sys.stderr  # nothing a library prints can corrupt the replies
    out.write('ready\n')
    out.flush()
    for line in sys.stdin:
        try:
            req, gold, err = json.loads(line), None, 'no answer found'
            for c in req['gold']:
                try:
                    gold = parse(c)
                    break
                except ParseError as e:
                    err = str(e)
            reply = {'ok': False, 'bad_gold': True, 'why': f'gold answer does not parse: {err}'}
            if gold is not None:
                reply = {'ok': False, 'why': 'no parseable answer'}
                for c in req['pred']:
                    try:
                        pred = parse(c)
                    except ParseError:
                        continue
                    if req.get('value') and unevaluated(c):  # the gold is a number, the answer "7+5"
                        reply = {'ok': False, 'why': f'arithmetic, not a value: {c[:60]}', 'read': c}
                        break
                    ok = equivalent(gold, pred)
                    reply = {'ok': ok, 'why': 'equivalent' if ok else f'not equivalent: {c[:60]}', 'read': c}
                    break
        except Exception as e:  # noqa: BLE001 -- any failure is a False reward with a reason
            reply = {'ok': False, 'why': f'error: {type(e).__name__}: {str(e)[:100]}'}
        out.write(json.dumps(reply) + '\n')
        out.flush()
