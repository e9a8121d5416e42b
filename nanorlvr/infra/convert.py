"""
Turn the public GSM8K and MATH releases into nanorlvr's jsonl, for data/gsm8k/prepare.py and
data/math/prepare.py. Nothing here downloads: it reads files the user already has, or the rows that the
Hugging Face `datasets` package returns when the user has it installed (and chooses to let it download).

Our jsonl is one problem a line, {"question", "answer", "solution"}: the gold answer apart, checked by the
verifier, and the worked solution for SFT. tasks.load_jsonl also reads the two originals as they are
(data/README.md), but converting once checks every gold ahead of training, and cleans what a model
should not learn to write:
- GSM8K: the calculator annotations `<<48/2=24>>` go, the final line stays `#### 72`, and the gold loses
  digit-group commas (`1,000` -> `1000`);
- MATH: the gold is the answer in the solution's last `\\boxed{}` (or the row's own `answer` field, as
  MATH-500 has); the level (1-5) and subject are kept, so a run can take the easy levels only.
A row whose gold the verifier cannot parse is skipped and reported, never silently kept.
"""
import json
import re
from pathlib import Path

from nanorlvr.infra.common import UsageError
from nanorlvr.verifier import check_gold, extract_answer

# -----------------------------------------------------------------------------
# reading the releases' own files


def read_rows(path) -> list[dict]:
    """The records of one source: a .jsonl file, a .json file (a list of records, or one), a .parquet file
    (needs pyarrow), or a folder of them read recursively in sorted order (the original MATH release is a
    folder per subject with one .json file per problem)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl", ".parquet"))
        if not files:
            raise UsageError(f"no .json, .jsonl or .parquet files under {path}")
        return [row for f in files for row in read_rows(f)]
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UsageError(f"{path}:{i + 1}: not valid JSON ({e.msg})") from None
        return rows
    if path.suffix == ".json":
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        return obj if isinstance(obj, list) else [obj]
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UsageError(f"reading {path} needs pyarrow (pip install pyarrow), or give the .jsonl release") from None
        return pq.read_table(path).to_pylist()
    raise UsageError(f"{path}: expected a .jsonl, .json or .parquet file, or a folder of them")


def hub_rows(name, configs, split) -> list[dict]:
    """One split of a Hugging Face Hub dataset through the `datasets` package (it downloads into its own
    cache), concatenated over `configs` (None: the dataset's only config)."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise UsageError("reading from the Hub needs the `datasets` package (pip install datasets); "
                         "or download the files yourself and pass them as --train / --test") from None
    return [dict(row) for config in (configs or [None]) for row in load_dataset(name, config, split=split)]

# -----------------------------------------------------------------------------
# one record of each release -> one of ours


CALCULATOR = re.compile(r"<<[^<>]*>>")
DIGIT_GROUP_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")


def gsm8k_row(d: dict) -> dict:
    """{"question", "answer": "working\\n#### 72"} -> ours. Raises ValueError if there is no '####' line."""
    text = str(d.get("answer", ""))
    if "####" not in text:
        raise ValueError("no '#### answer' line")
    working, gold = text.rsplit("####", 1)
    gold = DIGIT_GROUP_COMMA.sub("", gold.strip())
    working = CALCULATOR.sub("", working).strip()
    solution = f"{working}\n#### {gold}" if working else f"#### {gold}"
    return {"question": str(d["question"]).strip(), "answer": gold, "solution": solution}


def math_row(d: dict) -> dict:
    """{"problem", "solution": "... \\boxed{x} ...", "level": "Level 3", "type": "Algebra"} -> ours, with
    "level" (int, or None where the release says "Level ?") and "subject". A row's own "answer" field,
    where it has one (MATH-500), is the gold; otherwise the last \\boxed{} of the solution."""
    solution = str(d["solution"])
    boxed = "\\boxed" in solution or "\\fbox" in solution  # not the verifier's looser fallbacks ("the answer is")
    gold = d.get("answer") or (extract_answer(solution, last_number_fallback=False) if boxed else None)
    if not gold:
        raise ValueError("no \\boxed{} answer in the solution")
    level = re.search(r"\d", str(d.get("level", "")))
    return {"question": str(d["problem"]).strip(), "answer": str(gold).strip(), "solution": solution,
            "level": int(level.group()) if level else None, "subject": d.get("type") or d.get("subject")}


def convert(records, row_fn):
    """Apply row_fn to every record and check each gold with the verifier, as tasks.load_jsonl will.
    Returns (rows, skipped): skipped lists (index, reason) of the records that could not be used."""
    rows, skipped = [], []
    for i, d in enumerate(records):
        try:
            row = row_fn(d)
            check_gold(row["answer"])
        except (KeyError, ValueError) as e:
            skipped.append((i, f"{type(e).__name__}: {e}"))
            continue
        rows.append(row)
    return rows, skipped


def write_split(rows, skipped, path, source):
    """Write rows as jsonl (atomically) and say what was written and what was skipped, and why."""
    from nanorlvr.tasks import write_jsonl
    write_jsonl(rows, path)
    print(f"{path}: {len(rows)} problems from {source}" + (f", {len(skipped)} skipped" if skipped else ""))
    for i, why in skipped[:5]:
        print(f"  skipped record {i}: {why[:120]}")
