"""
Small things every script needs: `--key=value` flags from a dataclass, device choice, seeding, a progress
line with ETA, and jsonl metric logging.

A user's mistake (a bad flag value, a missing checkpoint, a malformed data file) raises `UsageError`; the
scripts run their main through `run_main`, which prints it as one line that names the fix and exits 2.
Every other exception is a bug and keeps its traceback.
"""
import argparse
import dataclasses
import json
import math
import operator
import os
import random
import re
import signal
import sys
import threading
import time

import numpy as np
import torch
import torch.distributed as td


class UsageError(Exception):
    """A mistake in the user's input, reported as one line without a traceback (see run_main)."""


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends a run as Ctrl-C does: finally blocks and atexit run (workers killed)


def run_main(main, *args):
    """Call main(*args); a UsageError becomes `error: ...` on stderr (one such line per problem it names,
    check_each) and exit status 2. Ctrl-C and SIGTERM become one line `interrupted: ...` (what main put in
    its KeyboardInterrupt: where the run stopped, how to continue) and exit status 130, without a traceback."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return main(*args)
    except UsageError as e:
        print("\n".join(f"error: {line}" for line in str(e).splitlines()), file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}" if str(e) else "interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def check_each(*checks):
    """Run checks that do not depend on each other (callables that return a value or raise UsageError) and
    return their values; if any failed, one UsageError naming each failure, one line apiece, in the order
    given, so that a user fixes them all in one go instead of learning of them one run at a time."""
    values, problems = [], []
    for check in checks:
        try:
            values.append(check())
        except UsageError as e:
            values.append(None)
            problems.append(str(e))
    if problems:
        raise UsageError("\n".join(problems))
    return values


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors (unknown flag, bad type): one line, not the whole usage
        raise UsageError(f"{message} (see --help)")


def parse_bool(s: str) -> bool:
    v = s.lower()
    if v not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise argparse.ArgumentTypeError(f"expected true or false, not {s!r}")
    return v in ("1", "true", "yes", "on")


def floats(s, flag="a sweep"):
    """A comma-separated list of numbers (sample.py's and analyze.py's sweeps); UsageError naming the flag."""
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{flag}: expected comma-separated numbers, not {s!r}") from None


def opt(default, help, *, choices=None, ge=None, gt=None, le=None, lt=None, pattern=None):
    """A dataclass field with a default and the help string of its --flag, and what values it allows: one
    of `choices` (argparse's choices), numbers within the bounds ge (>=), gt (>), le (<=), lt (<) (a bounded
    float must also be finite: nan and inf pass float()), or a string matching pattern = (regex, what it
    must be). parse_config checks them all and shows them in --help."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    meta = {"help": help, "choices": choices, "bounds": bounds, "pattern": pattern}
    return dataclasses.field(default=default, metadata=meta)


def _bounds_text(bounds, kind):
    """What the bounds allow, in words: "a positive integer", ">= 0", "in (0, 1]"."""
    if kind is int and bounds == {"ge": 1}:
        return "a positive integer"
    num = {k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in bounds.items()}
    low = [f"{'[' if k == 'ge' else '('}{num[k]}" for k in ("ge", "gt") if k in bounds]
    high = [f"{num[k]}{']' if k == 'le' else ')'}" for k in ("le", "lt") if k in bounds]
    if low and high:
        return f"in {low[0]}, {high[0]}"
    return " and ".join(f"{SIGNS[k][0]} {num[k]}" for k in bounds)


SIGNS = {"ge": (">=", operator.ge), "gt": (">", operator.gt), "le": ("<=", operator.le),
         "lt": ("<", operator.lt)}


def _within(v, bounds):
    return math.isfinite(v) and all(SIGNS[k][1](v, b) for k, b in bounds.items())


def field_problems(cfg):
    """The flags of cfg whose value its opt(...) metadata does not allow, as `--flag=value: must be ...`
    lines (every one, in field order). Choices are argparse's (it refuses those itself)."""
    out = []
    for f in dataclasses.fields(cfg):
        v, bounds, pattern = getattr(cfg, f.name), f.metadata.get("bounds"), f.metadata.get("pattern")
        if bounds and not _within(float(v), bounds):
            what = _bounds_text(bounds, type(v))
            out.append(f"--{f.name}={v}: must be {what if type(v) is int else 'a finite number ' + what}")
        if pattern and not re.fullmatch(pattern[0], v):
            out.append(f"--{f.name}={v}: must be {pattern[1]}")
    return out


def _add_fields(p, cls):
    """One --flag per field of the dataclass `cls` (type from its default; help, choices and bounds from its
    metadata). --help lists the class's own fields first, then each base class's under its docstring."""
    own = cls.__dict__.get("__annotations__", {})
    groups = {}
    for base in cls.__mro__[1:]:
        if dataclasses.is_dataclass(base):
            doc = (base.__doc__ or "").strip().split("\n")[0].rstrip(".")
            groups.setdefault(base, p.add_argument_group(f"flags of {base.__name__} ({doc})"))
    for f in dataclasses.fields(cls):
        owner = p if f.name in own else next(g for b, g in groups.items() if f.name in b.__dict__.get(
            "__annotations__", {}))
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = type(default) if default is not None else str
        help, bounds = f.metadata.get("help", ""), f.metadata.get("bounds")
        if bounds:
            help += f" [{_bounds_text(bounds, kind)}]"
        if kind is bool:
            owner.add_argument(f"--{f.name}", type=parse_bool, default=default, help=help, metavar="BOOL")
        else:
            owner.add_argument(f"--{f.name}", type=kind, default=default, help=help,
                               choices=f.metadata.get("choices"))


def parse_config(cls, argv=None, description=None):
    """Build an argparse parser from a dataclass's fields (`--name=value`, help from field metadata) and
    return the config. Flags must be spelled in full (no prefix matching). Every flag's value is checked
    against its opt(...) metadata (all bad ones named at once); then a `validate()` method of the dataclass,
    if any, checks what involves several flags, raising UsageError, before anything else happens.

    `cls` may also be a dict {subcommand: dataclass}: the first positional argument picks the dataclass
    (analyze.py dlogp --base=... ), each with its own --help; the config returned is of that class."""
    kw = dict(formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    p = _Parser(description=description, **kw)
    if isinstance(cls, dict):
        sub = p.add_subparsers(dest="_command", required=True, metavar="{" + ",".join(cls) + "}")
        for name, c in cls.items():
            doc = (c.__doc__ or "").strip()
            _add_fields(sub.add_parser(name, help=doc.split("\n")[0], description=doc, **kw), c)
        args = vars(p.parse_args(argv))
        cls = cls[args.pop("_command")]
    else:
        _add_fields(p, cls)
        args = vars(p.parse_args(argv))
    cfg = cls(**args)
    problems = field_problems(cfg)  # each flag on its own, all of them; then the checks across flags
    if problems:
        raise UsageError("\n".join(problems))
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def pick_device(name="auto") -> str:
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def secs_str(s):
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """Times a loop of `total` steps; `eta(step)` after step `step` of [start, total)."""

    def __init__(self, total, start=0):
        self.total, self.start, self.t0 = total, start, time.time()

    def elapsed(self):
        return time.time() - self.t0

    def eta(self, step):
        done = step + 1 - self.start
        return secs_str(self.elapsed() / max(done, 1) * (self.total - step - 1))

    def tick(self, step, what):
        """Logs "what k/total, eta ..." after step `step` when it crosses a tenth of the loop (and at its
        end): a long loop says how far it is without a line per step."""
        if (step + 1) * 10 // self.total > step * 10 // self.total or step + 1 == self.total:
            log(f"  {what} {step + 1}/{self.total}, elapsed {secs_str(self.elapsed())}, eta {self.eta(step)}")


def log(msg, file=None):
    """print, flushed; under torchrun on rank 0 only (the other ranks would repeat it)."""
    if not td.is_initialized() or td.get_rank() == 0:
        print(msg, file=file or sys.stdout, flush=True)


def append_jsonl(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def write_json(path, obj):
    """Atomic: a crash leaves either the old file or the new one."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)
