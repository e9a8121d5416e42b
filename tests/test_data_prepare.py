"""data/<set>/prepare.py and nanorlvr.infra.convert: the GSM8K and MATH releases' own records, hand-written here in
their published shapes, become our jsonl; tasks.load_jsonl reads the result back with the same golds."""
import importlib.util
import json
from pathlib import Path

import pytest

from nanorlvr.infra.common import UsageError
from nanorlvr.infra.convert import convert, gsm8k_row, math_row, read_rows
from nanorlvr.tasks import load_jsonl
from nanorlvr.verifier import verify

ROOT = Path(__file__).resolve().parents[1]

# two records as GSM8K's train.jsonl writes them: calculator annotations, a digit-group comma in the gold
GSM8K = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
               "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"},
    {"question": "A farm has 250 cows and each gives 4 litres a day. How many litres in a day?",
     "answer": "250 * 4 = <<250*4=1000>>1000 litres.\n#### 1,000"},
]

# MATH's per-problem json: the gold only inside the last \boxed{}, nested braces, "Level ?" in a few files
MATH = [
    {"problem": "What is $\\frac{1}{2} + \\frac{1}{3}$?", "level": "Level 1", "type": "Prealgebra",
     "solution": "We have $\\frac{1}{2} + \\frac{1}{3} = \\frac{3}{6} + \\frac{2}{6} = \\boxed{\\frac{5}{6}}$."},
    {"problem": "Solve $x^2 = 9$ for $x > 0$.", "level": "Level ?", "type": "Algebra",
     "solution": "First $\\boxed{-3}$ is rejected since $x > 0$, so $x = \\boxed{3}$."},
    {"problem": "MATH-500 keeps its own answer field.", "level": 4, "subject": "Geometry",
     "solution": "... so the area is $\\boxed{2\\sqrt{3}}$.", "answer": "2\\sqrt{3}"},
]


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"prepare_{name}", ROOT / "data" / name / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_gsm8k_row_drops_calculator_annotations_and_digit_group_commas():
    a, b = (gsm8k_row(d) for d in GSM8K)
    assert a["answer"] == "72" and b["answer"] == "1000"
    assert a["solution"] == ("Natalia sold 48/2 = 24 clips in May.\n"
                             "Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72")
    assert "<<" not in b["solution"] and b["solution"].endswith("#### 1000")
    assert a["question"] == GSM8K[0]["question"]
    assert verify(a["solution"], a["answer"]) and verify(b["solution"], b["answer"])  # SFT targets earn reward


def test_gsm8k_row_without_a_final_line_is_refused():
    with pytest.raises(ValueError, match="####"):
        gsm8k_row({"question": "q", "answer": "no final line"})


def test_math_row_takes_the_last_boxed_answer_the_level_and_the_subject():
    a, b, c = (math_row(d) for d in MATH)
    assert (a["answer"], a["level"], a["subject"]) == ("\\frac{5}{6}", 1, "Prealgebra")
    assert (b["answer"], b["level"], b["subject"]) == ("3", None, "Algebra")
    assert (c["answer"], c["level"], c["subject"]) == ("2\\sqrt{3}", 4, "Geometry")
    assert a["question"] == MATH[0]["problem"] and a["solution"] == MATH[0]["solution"]


def test_convert_skips_and_reports_records_whose_gold_cannot_be_used():
    records = [MATH[0], {"problem": "no box", "solution": "the answer is somewhere"},
               {"problem": "bad gold", "solution": "$\\boxed{\\frac{1}{}}$"}, {"solution": "$\\boxed{1}$"}]
    rows, skipped = convert(records, math_row)
    assert [r["answer"] for r in rows] == ["\\frac{5}{6}"]
    assert [i for i, _ in skipped] == [1, 2, 3]


def test_read_rows_reads_a_folder_of_json_files_as_the_math_release_ships(tmp_path):
    for subject, record in (("algebra", MATH[1]), ("prealgebra", MATH[0])):
        (tmp_path / subject).mkdir()
        (tmp_path / subject / "1.json").write_text(json.dumps(record))
    assert read_rows(tmp_path) == [MATH[1], MATH[0]]  # sorted by path
    assert read_rows(write_jsonl(tmp_path / "x.jsonl", GSM8K)) == GSM8K
    (tmp_path / "list.json").write_text(json.dumps(GSM8K))
    assert read_rows(tmp_path / "list.json") == GSM8K


def test_read_rows_names_the_file_and_line_of_a_malformed_record(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GSM8K[0]) + "\n{not json\n")
    with pytest.raises(UsageError, match=r"bad\.jsonl:2: not valid JSON"):
        read_rows(path)
    with pytest.raises(UsageError, match="does not exist"):
        read_rows(tmp_path / "missing.jsonl")


def test_gsm8k_prepare_writes_jsonl_that_load_jsonl_reads_with_the_same_golds(tmp_path, capsys):
    train, test = write_jsonl(tmp_path / "train.jsonl", GSM8K), write_jsonl(tmp_path / "test.jsonl", GSM8K[:1])
    load_script("gsm8k").main([f"--train={train}", f"--test={test}", f"--out_dir={tmp_path}/out"])
    got = load_jsonl(tmp_path / "out" / "train.jsonl")
    assert [(r["question"], r["answer"]) for r in got] == [(d["question"], gsm8k_row(d)["answer"]) for d in GSM8K]
    assert [r["answer"] for r in load_jsonl(tmp_path / "out" / "test.jsonl")] == ["72"]
    assert "2 problems" in capsys.readouterr().out


def test_math_prepare_keeps_only_the_levels_asked_for(tmp_path):
    folder = tmp_path / "MATH" / "train" / "prealgebra"
    folder.mkdir(parents=True)
    for i, record in enumerate(MATH[:2]):
        (folder / f"{i}.json").write_text(json.dumps(record))
    load_script("math").main([f"--train={tmp_path}/MATH/train", "--levels=1,2", f"--out_dir={tmp_path}/out"])
    rows = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert [(r["answer"], r["level"]) for r in rows] == [("\\frac{5}{6}", 1)]
    assert [r["answer"] for r in load_jsonl(tmp_path / "out" / "train.jsonl")] == ["\\frac{5}{6}"]


@pytest.mark.parametrize("name, argv, message", [
    ("gsm8k", [], "--hub=true"),
    ("gsm8k", ["--hub=true", "--train=x.jsonl"], "not both"),
    ("math", ["--train=x", "--levels=1,6"], "--levels"),
    ("math", ["--train=x", "--levels=12"], "--levels"),
])
def test_prepare_scripts_refuse_a_bad_command_line_in_one_line(name, argv, message):
    with pytest.raises(UsageError, match=message):
        load_script(name).main(argv)


def test_toy_prepare_writes_the_files_train_py_would_generate(tmp_path):
    from nanorlvr.tasks import TaskConfig, ensure_toy_data
    load_script("toy").main([f"--out_dir={tmp_path}/a", "--n_train=50", "--n_test=20", "--max_num=5"])
    expected = ensure_toy_data(tmp_path / "b", TaskConfig(max_num=5), n_train=50, n_test=20)
    for path in expected:
        assert (tmp_path / "a" / path.name).read_text() == path.read_text()
