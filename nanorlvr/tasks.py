"""
Problems with verifiable answers: the synthetic arithmetic task the toy trains on, and loaders for
user-provided GSM8K-style (`#### 42`) and MATH-style (`\\boxed{}`) jsonl files.

The synthetic task chains `n_ops` operations left to right, one step per line of the solution:

    question  (7-12)*3/4
    solution  7-12=-5
              -5*3=-15
              -15/4=-15/4
              #### -3.75

A division (only ever the last operation) gives a fraction, and the final line writes the answer in one of
several equivalent surface forms (reduced or unreduced fraction, terminating decimal), while the gold is
canonical (`-15/4`): exact string match undercounts, the sympy verifier does not. Train and test splits
are disjoint by construction: a question's split is a hash of its text.

Half of the training solutions (`p_direct`, chosen by a hash of the question) skip the working and give
only `#### -3.75`, as web data mixes worked solutions with bare answers. The SFT base learns both styles
and often answers directly, which a 0.8M model mostly gets wrong; the reward teaches it to work the
problem out. This is the quickstart's RL gain: with `p_direct=0` the base's errors are arithmetic slips,
which GRPO fixes far more slowly (docs/results.md has both).

`step_batch` gives each GRPO step its prompts: a slice of seeded epoch permutations, a function of the step.
"""
import hashlib
import json
import os
import random
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from nanorlvr.infra.common import UsageError


@dataclass
class TaskConfig:
    n_ops: int = 2          # operations per problem (steps of the chain of thought)
    max_num: int = 10       # operands are drawn from 1..max_num
    ops: str = "+-*"        # operations other than the final division
    p_div: float = 0.25     # probability that the last operation is a division (fraction answers)
    test_every: int = 10    # one question in `test_every` (by hash) belongs to the test split
    p_direct: float = 0.5   # share of solutions that skip the working and give only `#### answer`


def fraction_str(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def surface_forms(x: Fraction, unreduced: str | None) -> list[str]:
    """The equivalent ways the final line may write x: canonical, unreduced fraction, terminating decimal."""
    forms = [fraction_str(x)]
    if unreduced and unreduced != forms[0]:
        forms.append(unreduced)
    d = x.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1 and x.denominator != 1:
        forms.append(f"{float(x):.10g}")
    return forms


def make_problem(rng: random.Random, cfg: TaskConfig) -> dict:
    a = rng.randint(1, cfg.max_num)
    question, value, lines, unreduced = str(a), Fraction(a), [], None
    for k in range(cfg.n_ops):
        b = rng.randint(1, cfg.max_num)
        op = "/" if k == cfg.n_ops - 1 and rng.random() < cfg.p_div else rng.choice(cfg.ops)
        question = (f"({question})" if k > 0 else question) + f"{op}{b}"
        new = {"+": value + b, "-": value - b, "*": value * b, "/": value / b}[op]
        if op == "/" and k > 0:  # with one operation the unreduced fraction is the question: not an answer
            unreduced = f"{fraction_str(value)}/{b}"   # value is an integer here: division only comes last
        lines.append(f"{fraction_str(value)}{op}{b}={fraction_str(new)}")
        value = new
    answer = rng.choice(surface_forms(value, unreduced))
    working = "" if is_direct(question, cfg.p_direct) else "\n".join(lines) + "\n"
    return {"question": question, "answer": fraction_str(value), "solution": f"{working}#### {answer}"}


def hash32(text: str) -> int:
    """A stable 32-bit hash of text (md5): the same split and style on every machine and run."""
    return int(hashlib.md5(text.encode()).hexdigest()[:8], 16)


def is_direct(question: str, p_direct: float) -> bool:
    """Whether this question's solution is a bare answer: a hash, so the problems themselves (and the test
    split) are the same whatever p_direct is."""
    return hash32(f"direct:{question}") < p_direct * 16 ** 8


def split_of(question: str, test_every: int) -> str:
    return "test" if hash32(question) % test_every == 0 else "train"


def generate_splits(cfg: TaskConfig, n_train: int, n_test: int, seed: int = 0):
    """Distinct problems, split by the hash of the question: disjoint train and test lists."""
    rng = random.Random(seed)
    seen, train, test = set(), [], []
    attempts = 0
    while len(train) < n_train or len(test) < n_test:
        attempts += 1
        if attempts > 50 * (n_train + n_test):
            raise UsageError(f"cannot find {n_train} + {n_test} distinct toy problems with n_ops={cfg.n_ops}, "
                             f"max_num={cfg.max_num}: raise --n_ops or --max_num, or lower --n_train or --n_test")
        p = make_problem(rng, cfg)
        if p["question"] in seen:
            continue
        seen.add(p["question"])
        split = train if split_of(p["question"], cfg.test_every) == "train" else test
        if len(split) < (n_train if split is train else n_test):
            split.append(p)
    return train, test


def write_jsonl(rows, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a temporary name of this process: two runs started at once that both generate the toy data write the
    # same rows, and each rename is atomic
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    tmp.replace(path)


def load_jsonl(path) -> list[dict]:
    """Load problems as dicts with `question`, `answer` (gold) and `solution` (may be empty).
    Accepts our own format, GSM8K style ({"question", "answer": "...#### 42"}) and MATH style
    ({"problem", "solution": "...\\boxed{x}..."}). Every line is parsed and every gold checked now: a bad
    one is a UsageError naming FILE:LINE, before any model is loaded."""
    from nanorlvr.verifier import check_gold, extract_answer
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"data file {path} does not exist")
    rows = []
    with open(path) as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            where = f"{path}:{i + 1}"
            try:
                d = json.loads(line.rstrip())
            except json.JSONDecodeError as e:
                raise UsageError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(d, dict):
                raise UsageError(f"{where}: expected a JSON object, got {type(d).__name__}")
            question = d.get("question", d.get("problem"))
            if question is None:
                raise UsageError(f"{where}: no 'question' or 'problem' field")
            if "answer" in d and "####" not in str(d["answer"]):
                solution, gold = d.get("solution", ""), str(d["answer"])          # ours (or MATH with answer)
            elif "####" in str(d.get("answer", "")):
                solution = d["answer"]                                             # GSM8K
                gold = solution.rsplit("####", 1)[1].strip()
            elif "solution" in d:
                solution, gold = d["solution"], extract_answer(d["solution"], last_number_fallback=False)  # MATH
            else:
                raise UsageError(f"{where}: no answer: need 'answer' or a 'solution' with \\boxed{{}}")
            if gold is None:
                raise UsageError(f"{where}: could not find the final answer in the solution")
            try:
                check_gold(gold)
            except ValueError as e:
                raise UsageError(f"{where}: {e}") from None
            rows.append({"question": question, "answer": gold, "solution": solution})
    if not rows:
        raise UsageError(f"data file {path} holds no problems")
    return rows


def ensure_toy_data(data_dir="data", cfg: TaskConfig = None, n_train=8000, n_test=1000, seed=0):
    """Write the toy task's train/test jsonl (named after the task settings) if missing; return their paths."""
    cfg = cfg or TaskConfig()
    direct = f"_direct{cfg.p_direct:g}" if cfg.p_direct else ""
    tag = f"toy_{cfg.n_ops}ops_{cfg.max_num}_{cfg.ops}_div{cfg.p_div:g}{direct}_{n_train}_s{seed}".replace("*", "x")
    train_path, test_path = Path(data_dir) / f"{tag}_train.jsonl", Path(data_dir) / f"{tag}_test.jsonl"
    if not (train_path.exists() and test_path.exists()):
        train, test = generate_splits(cfg, n_train, n_test, seed)
        write_jsonl(train, train_path)
        write_jsonl(test, test_path)
    return train_path, test_path


def step_batch(problems, step, size, seed):
    """The `size` problems of GRPO step `step`: a slice of a fixed sequence of epoch permutations (epoch e
    shuffled with seed + e), so the batch depends on the step alone and a resumed run needs no data state.
    A batch that runs past an epoch's end takes the rest from the start of the next epoch."""
    def epoch_order(e):
        return torch.randperm(len(problems), generator=torch.Generator().manual_seed(seed + e))
    epoch, off = divmod(step * size, len(problems))
    batch = [problems[i] for i in epoch_order(epoch)[off:off + size].tolist()]
    if len(batch) < size:
        batch += [problems[i] for i in epoch_order(epoch + 1)[:size - len(batch)].tolist()]
    return batch
