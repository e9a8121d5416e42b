"""Smoke test of sample.py on tiny random checkpoints: a plain evaluation as a subprocess, and lock-step
extrapolation (sweep table, prompt sampling) in-process, which skips the cost of starting Python + torch."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nanorlvr.infra import checkpoint as ckpt
from nanorlvr.infra.checkpoint import save_model
from nanorlvr.evaluate import evaluator
from nanorlvr.papers.lockstep import generate_lockstep
from nanorlvr.model import GPT, GPTConfig
from nanorlvr.papers.paper1_direction import replacement_sweep
from nanorlvr.prompts import ToyFormat, held_out_for
from nanorlvr.tasks import TaskConfig, generate_splits, write_jsonl
from nanorlvr.tokenizer import toy_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A base model, a two-checkpoint run, and a small toy test split, all in a temp folder."""
    d = tmp_path_factory.mktemp("sample")
    for i, name in enumerate(["base", "run/step_000000", "run/step_000010"]):
        torch.manual_seed(i)
        save_model(GPT(GPTConfig(vocab_size=260, n_layer=1, n_head=2, n_embd=32, max_seq_len=64)), d / name)
    train, test = generate_splits(TaskConfig(), n_train=8, n_test=8)
    write_jsonl(train, d / "data" / "toy_train.jsonl")
    write_jsonl(test, d / "data" / "toy_test.jsonl")
    return d


def run(*args):
    """sample.py as a subprocess; returns its stdout."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, str(ROOT / "sample.py"), "--device=cpu", "--max_new_tokens=16", *args],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def run_main(capsys, monkeypatch, *args):
    """sample.main() in this process; returns its stdout."""
    spec = importlib.util.spec_from_file_location("sample_script", ROOT / "sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.log = print  # common.log binds the sys.stdout of import time, which capsys does not capture
    monkeypatch.setattr(sys, "argv", ["sample.py", "--device=cpu", "--max_new_tokens=16", *args])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared CPU
    try:
        capsys.readouterr()
        module.main()
    finally:
        torch.set_num_threads(threads)
    return capsys.readouterr().out


def test_plain_eval_prints_the_summary_and_writes_json(tiny_run):
    out = run(f"--ckpt={tiny_run / 'run'}", "--eval=8", "--k=2", f"--data_dir={tiny_run / 'data'}",
              f"--out={tiny_run / 'eval.json'}")
    assert "model " + str(tiny_run / "run" / "step_000010") in out  # a run folder means its last checkpoint
    assert "plain: n=8 greedy " in out and "avg@2 " in out
    (row,) = json.loads((tiny_run / "eval.json").read_text())["results"]
    assert row["n"] == 8 and 0 <= row["greedy_acc"] <= 1 and 0 <= row["avg2"] <= 1


def test_gated_extrapolation_sweep_prints_a_table(tiny_run, capsys, monkeypatch):
    out = run_main(capsys, monkeypatch, "--extrapolate=dlogp", f"--base={tiny_run / 'base'}",
                   f"--rl={tiny_run / 'run'}", "--sweep=true", "--gamma_sweep=0,0.1", "--tau_sweep=-0.3",
                   "--eval=8", "--k=2", f"--data_dir={tiny_run / 'data'}")
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0] == "| setting | greedy | avg@2 | pass@2 | replaced |"
    assert [r.split("|")[1].strip() for r in table[2:]] == ["plain a", "plain b", "gate dlogp tau=-0.3 gamma=0",
                                                            "gate dlogp tau=-0.3 gamma=0.1"]
    assert table[2].endswith("| - |") and 0 <= float(table[-1].split("|")[-2]) <= 1


def test_logits_extrapolation_samples_a_prompt(tiny_run, capsys, monkeypatch):
    out = run_main(capsys, monkeypatch, "--extrapolate=logits", f"--ckpt0={tiny_run / 'run' / 'step_000000'}",
                   f"--ckpt1={tiny_run / 'run'}", "--alpha=1.5", "--prompt=(3+4)*5", "--answer=35", "--num_samples=2",
                   "--top_p=0.9")
    assert "### (3+4)*5" in out and "--- sample 1" in out
    assert "correct: " in out and out.rstrip().endswith("/2")


def test_replacement_ratio_is_the_sampled_passes_in_sample_and_analyze(tiny_run, capsys, monkeypatch):
    # one definition (lockstep.replacement_ratio): the share of the avg@k samples' positions where the gate
    # fired, the greedy pass left out; sample.py's "replaced" and analyze.py dlogp's ratio are both that
    base, rl = (ckpt.load_model(p).eval() for p in (tiny_run / "base", tiny_run / "run" / "step_000010"))
    fmt = ToyFormat(toy_tokenizer())
    problems = held_out_for(tiny_run / "run" / "step_000010", 8, data_dir=tiny_run / "data")
    prompts = [fmt.encode(p["question"]) for p in problems for _ in range(2)]
    sampled = generate_lockstep(base, rl, prompts, 16, "dlogp", 0.0, temperature=1.0, stop_ids=fmt.stop_ids,
                                gate="dlogp", tau=-0.3, seed=1234 + 1)  # evaluate()'s avg@k pass
    sweep = replacement_sweep(base, rl, evaluator(fmt, problems, k=2, max_new_tokens=16), {"dlogp": [-0.3]},
                              16, fmt.stop_ids)
    assert sweep["dlogp"][0]["ratio"] == sampled.replacement_ratio
    out = run_main(capsys, monkeypatch, "--extrapolate=dlogp", f"--base={tiny_run / 'base'}",
                   f"--rl={tiny_run / 'run'}", "--replace_only=true", "--tau=-0.3", "--eval=8", "--k=2",
                   f"--data_dir={tiny_run / 'data'}")
    replaced = float(out.strip().splitlines()[-1].split("replaced ")[1])
    assert replaced == pytest.approx(sampled.replacement_ratio, abs=5e-4)  # printed with 3 decimals
