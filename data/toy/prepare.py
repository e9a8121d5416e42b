"""
Generate the toy task: chained arithmetic with worked solutions (nanorlvr/tasks.py), as train and test jsonl.

    python data/toy/prepare.py                       # the quickstart's task: operands 1..10, two operations
    python data/toy/prepare.py --max_num=20 --p_direct=0 --n_train=50000   # a harder task, all solutions worked

train.py does the same on its first run (into its --data_dir, default data/), with the same task flags, so
this script is for looking at the problems before training, or for generating them once for several runs.
The files are named after the task settings; an existing pair is kept as it is.
"""
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: the repo root holds nanorlvr
from nanorlvr.infra.common import UsageError, opt, parse_config, run_main  # noqa: E402
from nanorlvr.tasks import TaskConfig, ensure_toy_data, load_jsonl  # noqa: E402


@dataclass
class ToyConfig:
    out_dir: str = opt("data", "where the jsonl files go (train.py's --data_dir)")
    n_ops: int = opt(2, "operations per problem")
    max_num: int = opt(10, "operands are 1..max_num")
    p_direct: float = opt(0.5, "share of training solutions that give only the answer, no working")
    n_train: int = opt(8000, "training problems")
    n_test: int = opt(1000, "held-out problems")
    seed: int = opt(0, "seed of the generator")

    def validate(self):
        if self.n_ops < 1 or self.max_num < 1:
            raise UsageError(f"--n_ops and --max_num must be at least 1, not {self.n_ops} and {self.max_num}")
        if not 0 <= self.p_direct <= 1:
            raise UsageError(f"--p_direct={self.p_direct} must be in [0, 1]")
        if self.n_train < 1 or self.n_test < 1:
            raise UsageError(f"--n_train and --n_test must be positive, not {self.n_train} and {self.n_test}")


def main(argv=None):
    cfg = parse_config(ToyConfig, argv, description=__doc__.strip().splitlines()[0])
    task = TaskConfig(n_ops=cfg.n_ops, max_num=cfg.max_num, p_direct=cfg.p_direct)
    try:
        paths = ensure_toy_data(cfg.out_dir, task, n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed)
    except ValueError as e:  # too few distinct problems for the sizes asked
        raise UsageError(str(e)) from None
    for path in paths:
        rows = load_jsonl(path)
        print(f"{path}: {len(rows)} problems, e.g. {rows[0]['question']} -> {rows[0]['solution']!r}")


if __name__ == "__main__":
    run_main(main)
