"""
MATH (competition problems, 7,500 train / 5,000 test, levels 1-5) as our jsonl: data/math/{train,test}.jsonl.

From the official release (github.com/hendrycks/math: MATH/train and MATH/test, a folder per subject with
one .json per problem), any .jsonl / .json / .parquet copy of it, or MATH-500's test.jsonl:

    python data/math/prepare.py --train=MATH/train --test=MATH/test
    python data/math/prepare.py --train=MATH/train --test=math500/test.jsonl --levels=1,2,3

or through the Hugging Face `datasets` package, if you have it installed (it downloads the dataset):

    python data/math/prepare.py --hub=EleutherAI/hendrycks_math

The gold answer is the solution's last \\boxed{} (or the row's "answer" field); --levels keeps only those
difficulty levels, which suits a small model. Training never downloads anything.
"""
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: the repo root holds nanorlvr
from nanorlvr.infra.common import UsageError, opt, parse_config, run_main  # noqa: E402
from nanorlvr.infra.convert import convert, hub_rows, math_row, read_rows, write_split  # noqa: E402

SUBJECTS = ("algebra,counting_and_probability,geometry,intermediate_algebra,number_theory,prealgebra,"
            "precalculus")


@dataclass
class MathConfig:
    train: str = opt("", "the release's train folder, or a .jsonl / .json / .parquet file")
    test: str = opt("", "the release's test folder, or a file (e.g. MATH-500's test.jsonl)")
    hub: str = opt("", "a Hub dataset to read with the `datasets` package instead, e.g. EleutherAI/hendrycks_math")
    hub_configs: str = opt(SUBJECTS, "with --hub: the dataset's configs to concatenate (empty: its only one)")
    levels: str = opt("", "keep only these levels, e.g. 1,2,3 (empty: all)")
    out_dir: str = opt("data/math", "where train.jsonl and test.jsonl are written")

    def validate(self):
        if self.hub and (self.train or self.test):
            raise UsageError("give either --hub=NAME or --train / --test, not both")
        if not (self.hub or self.train or self.test):
            raise UsageError("give --train=DIR|FILE and/or --test=DIR|FILE (the MATH release), or --hub=NAME")
        if self.levels and not set(s.strip() for s in self.levels.split(",")) <= set("12345"):
            raise UsageError(f"--levels={self.levels} must be a comma-separated list of 1..5")


def main(argv=None):
    cfg = parse_config(MathConfig, argv, description=__doc__.strip().splitlines()[0])
    levels = {int(s) for s in cfg.levels.split(",")} if cfg.levels else None
    configs = [c for c in cfg.hub_configs.split(",") if c] or None
    for split in ("train", "test"):
        source = cfg.hub or getattr(cfg, split)
        if not source:
            continue
        records = hub_rows(cfg.hub, configs, split) if cfg.hub else read_rows(source)
        rows, skipped = convert(records, math_row)
        if levels:
            rows = [r for r in rows if r["level"] in levels]
        write_split(rows, skipped, Path(cfg.out_dir) / f"{split}.jsonl", source)


if __name__ == "__main__":
    run_main(main)
