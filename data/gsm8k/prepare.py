"""
GSM8K (grade-school word problems, 7,473 train / 1,319 test) as our jsonl: data/gsm8k/{train,test}.jsonl.

From the official release (github.com/openai/grade-school-math, grade_school_math/data/*.jsonl) or the
Hub's parquet files, downloaded by you:

    python data/gsm8k/prepare.py --train=grade_school_math/data/train.jsonl --test=grade_school_math/data/test.jsonl

or through the Hugging Face `datasets` package, if you have it installed (it downloads openai/gsm8k):

    python data/gsm8k/prepare.py --hub=true

then train with --data=data/gsm8k/train.jsonl --test_data=data/gsm8k/test.jsonl (docs/scaling.md).
Training never downloads anything; this script is the only step that reads the release.
"""
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: the repo root holds nanorlvr
from nanorlvr.infra.common import UsageError, opt, parse_config, run_main  # noqa: E402
from nanorlvr.infra.convert import convert, gsm8k_row, hub_rows, read_rows, write_split  # noqa: E402


@dataclass
class GSM8KConfig:
    train: str = opt("", "the release's train file (.jsonl, .json or .parquet)")
    test: str = opt("", "the release's test file")
    hub: bool = opt(False, "read openai/gsm8k (config main) with the `datasets` package instead of files")
    out_dir: str = opt("data/gsm8k", "where train.jsonl and test.jsonl are written")

    def validate(self):
        if self.hub and (self.train or self.test):
            raise UsageError("give either --hub=true or --train / --test files, not both")
        if not (self.hub or self.train or self.test):
            raise UsageError("give --train=FILE and/or --test=FILE (the GSM8K release's jsonl), or --hub=true")


def main(argv=None):
    cfg = parse_config(GSM8KConfig, argv, description=__doc__.strip().splitlines()[0])
    for split in ("train", "test"):
        source = "openai/gsm8k" if cfg.hub else getattr(cfg, split)
        if not source:
            continue
        records = hub_rows("openai/gsm8k", ["main"], split) if cfg.hub else read_rows(source)
        rows, skipped = convert(records, gsm8k_row)
        write_split(rows, skipped, Path(cfg.out_dir) / f"{split}.jsonl", source)


if __name__ == "__main__":
    run_main(main)
