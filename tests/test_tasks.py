"""The synthetic task and the jsonl loaders."""
import json
import random
import re
from fractions import Fraction

import pytest

from nanorlvr.infra.common import UsageError
from nanorlvr.tasks import TaskConfig, generate_splits, load_jsonl, make_problem, step_batch, write_jsonl


def test_answers_are_the_value_of_the_question():
    rng = random.Random(0)
    for _ in range(300):
        p = make_problem(rng, TaskConfig(n_ops=3))
        # the question is plain arithmetic with explicit parentheses: Fraction-evaluate it independently
        tokens = p["question"].replace("(", " ( ").replace(")", " ) ")
        for op in "+-*/":
            tokens = tokens.replace(op, f" {op} ")
        py = " ".join(f"Fraction({t})" if t.isdigit() else t for t in tokens.split())
        assert Fraction(p["answer"]) == eval(py, {"Fraction": Fraction})


def test_solution_ends_with_an_equivalent_surface_form():
    rng = random.Random(1)
    forms = set()
    for _ in range(400):
        p = make_problem(rng, TaskConfig(p_div=1.0))
        final = p["solution"].rsplit("#### ", 1)[1]
        assert Fraction(final) == Fraction(p["answer"])
        forms.add("dec" if "." in final else "frac" if final != p["answer"] else "canonical")
    assert forms == {"dec", "frac", "canonical"}


def test_with_one_operation_no_solution_ends_in_its_question_unless_that_is_the_answer():
    # the unreduced form a/b of a one-operation division is the question itself, which the reward refuses
    rng = random.Random(2)
    for _ in range(300):
        p = make_problem(rng, TaskConfig(n_ops=1, max_num=30, p_div=1.0))
        final = p["solution"].rsplit("#### ", 1)[1]
        assert final != p["question"] or final == p["answer"], p


def test_train_and_test_splits_are_disjoint_and_distinct():
    train, test = generate_splits(TaskConfig(), 3000, 300, seed=0)
    qtrain, qtest = {p["question"] for p in train}, {p["question"] for p in test}
    assert len(qtrain) == 3000 and len(qtest) == 300 and not qtrain & qtest


def test_loads_gsm8k_and_math_style_files(tmp_path):
    write_jsonl([{"question": "How many?", "answer": "2 + 2 = 4\n#### 4"}], tmp_path / "gsm.jsonl")
    write_jsonl([{"problem": "Half?", "solution": "It is $\\boxed{\\frac{1}{2}}$."}], tmp_path / "math.jsonl")
    assert load_jsonl(tmp_path / "gsm.jsonl")[0]["answer"] == "4"
    assert load_jsonl(tmp_path / "math.jsonl")[0]["answer"] == "\\frac{1}{2}"


@pytest.mark.parametrize("line, why", [
    ('{"question": "q", "answer": "@@ ### @@", "solution": "s"}', r"gold answer cannot be parsed: '@@ ### @@'"),
    ('{"question": "q", "answer": "1"', r"not valid JSON \(Expecting ',' delimiter at column 32\)"),
    ('["q", "1"]', "expected a JSON object, got list"),
    ('{"answer": "1"}', "no 'question' or 'problem' field"),
    ('{"question": "q"}', "no answer: need 'answer' or a 'solution'"),
    ('{"problem": "q", "solution": "no box here"}', "could not find the final answer"),
])
def test_a_bad_line_is_a_usage_error_naming_file_and_line(tmp_path, line, why):
    # line 2 is bad (line 3 is blank, line 4 good): the message points at the line, not at the parser's insides
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "1"}) + "\n" + line + "\n\n" +
                    json.dumps({"question": "q", "answer": "2"}) + "\n")
    with pytest.raises(UsageError, match=f"^{re.escape(str(path))}:2: {why}"):
        load_jsonl(path)


def test_a_missing_or_empty_data_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_jsonl(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UsageError, match="holds no problems"):
        load_jsonl(tmp_path / "empty.jsonl")


def test_too_many_toy_problems_for_the_task_is_a_usage_error():
    # 1 op on 1..2 has 2 x 2 x 4 (+-*/) = 16 questions at most: 50 cannot be found
    with pytest.raises(UsageError, match="--n_ops or --max_num"):
        generate_splits(TaskConfig(n_ops=1, max_num=2), 50, 5)


def test_p_direct_mixes_bare_answers_without_changing_the_problems():
    mixed, _ = generate_splits(TaskConfig(p_direct=0.5), 2000, 50, seed=3)
    pure, _ = generate_splits(TaskConfig(p_direct=0.0), 2000, 50, seed=3)
    assert [p["question"] for p in mixed] == [p["question"] for p in pure]
    bare = [m for m in mixed if m["solution"].startswith("#### ")]
    assert 0.45 < len(bare) / len(mixed) < 0.55                      # binomial sd ~0.011 at n = 2000
    for m, p in zip(mixed, pure):  # a bare answer is the worked solution's last line; the rest are unchanged
        want = "#### " + p["solution"].rsplit("#### ", 1)[1] if m["solution"].startswith("#### ") else p["solution"]
        assert m["solution"] == want
    assert not any(p["solution"].startswith("####") for p in pure)


def test_step_batches_walk_seeded_epoch_permutations_and_cross_epochs_without_gaps():
    import torch
    problems = [f"p{i}" for i in range(10)]

    def order(e):  # epoch e is the permutation seeded with seed + e
        return [problems[i] for i in torch.randperm(10, generator=torch.Generator().manual_seed(7 + e)).tolist()]
    stream = order(0) + order(1) + order(2)
    for step in range(6):  # 4 per step: step 2 takes the end of epoch 0 and the start of epoch 1
        assert step_batch(problems, step, 4, seed=7) == stream[4 * step:4 * step + 4]
    assert sorted(sum((step_batch(problems, s, 5, seed=7) for s in (0, 1)), [])) == sorted(problems)
