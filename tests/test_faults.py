"""Faults and bad input (docs/reliability.md): a run SIGKILLed at random moments and resumed ends exactly as
an uninterrupted one, with one metrics row per step and every checkpoint loadable; every user mistake is one
line `error: ...` naming the flag and what is allowed, with no traceback; a truncated response scores 0."""
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from nanorlvr.infra import checkpoint as ckpt
from nanorlvr import grpo
from nanorlvr.infra.common import UsageError, parse_config, run_main
from nanorlvr.engine import Generation
from nanorlvr.evaluate import evaluate
from nanorlvr.model import GPT, GPTConfig
from nanorlvr.prompts import ToyFormat
from nanorlvr.tokenizer import toy_tokenizer
from nanorlvr.verifier import reward

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n_layer=1", "--n_embd=32", "--n_head=2", "--n_ops=1", "--max_num=9", "--p_direct=0", "--n_train=200",
        "--n_test=16", "--n_eval=16", "--eval_k=2", "--prompts_per_step=4", "--group_size=4", "--max_new_tokens=16",
        "--lr=3e-3", "--warmup=1", "--threads=1", "--verify_workers=1"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    # bare answers (p_direct=1) are short: this base stops in budget and is sometimes right, so groups of 8
    # have mixed rewards and most GRPO steps change the weights (the resume is then tested for real)
    d = tmp_path_factory.mktemp("run")
    train.main(TINY + ["--stage=sft", "--p_direct=1", "--sft_steps=200", "--sft_batch=32", f"--data_dir={d}/data",
                       f"--base_dir={d}/base"])
    return d

# -----------------------------------------------------------------------------
# killed and resumed

# train.py in a child process. KILL_AT_RENAME=n: the child SIGKILLs itself just before its n-th os.replace, the
# atomic rename that ends every checkpoint, trainer-state, metrics and summary write: a kill mid-checkpoint.
CHILD = """
import os, signal, sys
n, count, real = int(os.environ.get("KILL_AT_RENAME", "0")), [0], os.replace
def replace(src, dst):
    count[0] += 1
    if count[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
os.replace = replace
import train
from nanorlvr.infra.common import run_main
run_main(train.main, sys.argv[1:])
"""
TIMING = ("s_gen", "s_verify", "s_update", "tok_per_s")


def child(argv, kill=None):
    """Run train.py (CHILD) to its end, or SIGKILL it: kill=("rename", n), or ("step", n, delay): `delay`
    seconds after it logs its n-th step line (the metrics row and checkpoint of that step come right after).
    Returns the exit status (-9: killed)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KILL_AT_RENAME": str(kill[1]) if kill and kill[0] == "rename" else "0"}
    p = subprocess.Popen([sys.executable, "-c", CHILD, *argv], cwd=ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen, out = 0, []
    for line in p.stdout:
        out.append(line)
        seen += line.startswith("step ") and "reward" in line
        if kill and kill[0] == "step" and seen == kill[1]:
            time.sleep(kill[2])
            p.send_signal(signal.SIGKILL)
            break
    rc = p.wait()
    p.stdout.close()
    assert rc in (0, -signal.SIGKILL), "".join(out)  # a resume must never fail
    return rc


def metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def kill_and_resume(base, tmp_path, steps, save_every, kills, seed):
    """An uninterrupted run, then the same run SIGKILLed `kills` times at seeded random moments and resumed
    after each: both end the same, weights to the bit."""
    argv = TINY + ["--stage=grpo", "--p_direct=1", "--prompts_per_step=8", "--group_size=8", f"--data_dir={base}/data",
                   f"--base_dir={base}/base", f"--steps={steps}", f"--save_every={save_every}", "--resume=true"]
    train.main(argv + [f"--out_dir={tmp_path}/ref"])  # in this process: the same arithmetic on one thread
    rng, landed = random.Random(seed), []
    for _ in range(kills):
        # a moment within what is left to do: "rename", the n-th of the renames ending each write (at least
        # one per checkpoint and trainer state); "step", at once after a step's log line (mid-way through
        # its metrics row or checkpoint) or a little later
        state = ckpt.load_trainer_state(tmp_path / "killed/grpo")
        left = steps - (state["step"] if state else 0)
        if not left or rng.random() < 0.5:
            kill = ("rename", rng.randint(1, 1 + 2 * math.ceil(left / save_every)))
        else:
            n = rng.randint(1, left)
            kill = ("step", n, rng.choice([0.0, rng.uniform(0, 0.2)]) if n < left else 0.0)  # it must not end first
        if child(argv + [f"--out_dir={tmp_path}/killed"], kill) != 0:
            landed.append(kill)
            for step in {int(p.name[5:11]) for p in (tmp_path / "killed/grpo").glob("step_*")}:
                ckpt.load_model(ckpt.step_dir(tmp_path / "killed/grpo", step))  # what a resume could load, loads
    print("kills that landed:", landed)
    assert child(argv + [f"--out_dir={tmp_path}/killed"]) == 0  # resumed to the end
    ref, run = tmp_path / "ref/grpo", tmp_path / "killed/grpo"
    # the records: one row per step, the same rows as the uninterrupted run (timings aside)
    rows = metrics(run)
    assert [r["step"] for r in rows if "reward" in r] == list(range(1, steps + 1))
    assert rows == metrics(ref)
    # every checkpoint on disk loads, none is left half-written, and each equals the uninterrupted run's
    names = sorted(p.name for p in run.glob("step_*"))
    assert names == sorted(p.name for p in ref.glob("step_*")), "a stray .tmp / .old folder, or a missing one"
    for name in names:
        a, b = ckpt.load_model(ref / name).state_dict(), ckpt.load_model(run / name).state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    w0, wn = ckpt.load_model(ref / "step_000000").state_dict(), ckpt.load_model(ref / f"step_{steps:06d}").state_dict()
    assert not all(torch.equal(w0[k], wn[k]) for k in w0), "training changed nothing: the comparison is empty"
    return len(landed)


def test_sigkilled_and_resumed_run_ends_as_an_uninterrupted_one(base, tmp_path):
    # CI's short version, seed 3: the first run is killed just before its last trainer state is renamed into
    # place; the resumed one between the two renames that replace checkpoint 4 (left only as step_000004.old)
    assert kill_and_resume(base, tmp_path, steps=4, save_every=2, kills=2, seed=3) == 2


@pytest.mark.slow
def test_sigkilled_ten_times_and_resumed_run_ends_as_an_uninterrupted_one(base, tmp_path):
    assert kill_and_resume(base, tmp_path, steps=12, save_every=2, kills=10, seed=0) == 10


def test_resume_cuts_metrics_back_to_the_checkpoint(tmp_path):
    # as left by a run killed after checkpoint 2, in the middle of writing step 4's row
    rows = [{"step": 0, "eval": {}}] + [{"step": s, "real_steps": s} for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "rew')
    ckpt.rewind_metrics(tmp_path, 2)
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == rows[:3]
    ckpt.rewind_metrics(tmp_path, 0)  # nothing but the base evaluation's row
    assert (tmp_path / "metrics.jsonl").read_text() == json.dumps(rows[0]) + "\n"


def test_a_finished_run_resumed_logs_its_final_evaluation_once(tmp_path):
    rows = [{"step": 0, "eval": {}}, {"step": 1, "real_steps": 1}, {"step": 1, "eval": {"final": 1}}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ckpt.rewind_metrics(tmp_path, 1)  # the resumed run evaluates again and appends its own final row
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == rows[:2]

# -----------------------------------------------------------------------------
# a user's mistake is one line


def one_line_error(argv, capsys):
    """run_main(train.main, argv), as `python train.py` does: exit status 2 and one stderr line."""
    with pytest.raises(SystemExit) as e:
        run_main(train.main, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err.strip()


def test_python_train_py_with_a_bad_value_prints_one_line():
    # the real command line, in a child process: one line on stderr, exit 2, nothing run
    p = subprocess.run([sys.executable, "train.py", "--steps=-5"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == "" and p.stderr == "error: --steps=-5: must be a positive integer\n"


def test_python_train_py_with_a_malformed_jsonl_names_file_and_line(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"question": "1+1", "answer": "2"}\n{"question": "2+2", "answer": 4,}\n')
    p = subprocess.run([sys.executable, "train.py", f"--data={data}", f"--out_dir={tmp_path}/out"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr == f"error: {data}:2: not valid JSON (Expecting property name enclosed in double quotes at column 33)\n"


def test_missing_or_empty_init_from_is_named_before_any_tokenizer_is_read(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for path in ("/no/such/dir", tmp_path / "empty"):
        assert one_line_error([f"--init_from={path}"], capsys) == \
            f"error: --init_from: no Hugging Face checkpoint at {path} (config.json missing)"


def test_a_data_file_too_small_to_hold_out_n_eval_is_refused(tmp_path, capsys):
    data = tmp_path / "two.jsonl"
    data.write_text('{"question": "1+1", "answer": "2"}\n{"question": "2+2", "answer": "4"}\n')
    assert one_line_error([f"--data={data}", "--n_eval=2", f"--out_dir={tmp_path}/out"], capsys) == \
        f"error: --n_eval=2: {data} has only 2 problems, too few to hold out that many for evaluation: pass " \
        "--test_data or a smaller --n_eval"


def test_group_size_1_and_no_prompts_are_refused(capsys):
    assert one_line_error(["--group_size=1"], capsys).startswith("error: --group_size=1: must be >= 2")
    assert one_line_error(["--prompts_per_step=0"], capsys) == "error: --prompts_per_step=0: must be a positive integer"


def test_grpo_without_a_base_says_how_to_make_one(tmp_path, capsys):
    assert "train it with --stage=sft" in one_line_error(["--stage=grpo", f"--base_dir={tmp_path}/none"], capsys)


def test_prompts_per_step_must_split_over_the_ranks(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(train.dist, "world", lambda: 2)  # as under torchrun --nproc_per_node=2, before any data
    (tmp_path / "config.json").write_text("{}")  # a base (validate looks no further)
    err = one_line_error(TINY + ["--stage=grpo", "--prompts_per_step=3", f"--base_dir={tmp_path}",
                                 f"--data_dir={tmp_path}/data"], capsys)
    assert err == "error: --prompts_per_step=3: must be a multiple of the 2 ranks (each rank takes whole prompt groups)"
    assert not (tmp_path / "data").exists()


def test_a_budget_past_the_models_context_is_refused_before_training(tmp_path, capsys):
    err = one_line_error(TINY + ["--stage=sft", "--max_new_tokens=125", f"--data_dir={tmp_path}/data",
                                 f"--base_dir={tmp_path}/base"], capsys)
    assert re.fullmatch(r"error: --max_new_tokens=125: the longest prompt \(\d+ tokens\) and the budget exceed the "
                        r"model's context of 128: at most \d+", err)
    assert not (tmp_path / "base").exists()


# one bad value per kind of check, each flag's own (its opt(...) metadata) or TrainConfig.validate's (across
# flags), and the flag the message must name
BAD = [("--steps=0", "steps"), ("--sft_steps=-1", "sft_steps"), ("--sft_batch=0", "sft_batch"),
       ("--micro_batch=-2", "micro_batch"), ("--gen_batch=-1", "gen_batch"), ("--n_eval=0", "n_eval"),
       ("--eval_k=-1", "eval_k"), ("--max_new_tokens=0", "max_new_tokens"), ("--mu=0", "mu"),
       ("--n_minibatches=0", "n_minibatches"), ("--save_every=0", "save_every"), ("--verify_workers=0", "verify_workers"),
       ("--threads=-1", "threads"), ("--warmup=-1", "warmup"), ("--n_head=128", "n_head"), ("--n_embd=30", "n_head"), ("--seed=-1", "seed"),
       ("--p_direct=1.5", "p_direct"), ("--p_direct=-0.1", "p_direct"), ("--top_p=0", "top_p"), ("--top_p=1.01", "top_p"),
       ("--eps_low=1", "eps_low"), ("--reweight_c=2", "reweight_c"), ("--lr=0", "lr"), ("--lr=nan", "lr"),
       ("--sft_lr=inf", "sft_lr"), ("--temperature=0", "temperature"), ("--grad_clip=0", "grad_clip"),
       ("--kl_coef=-0.1", "kl_coef"), ("--eval_temperature=-1", "eval_temperature"), ("--run=", "run"),
       ("--rl_extra=3", "rl_extra"), ("--rl_extra=0,5", "rl_extra"), ("--rl_extra=a,b", "rl_extra"),
       ("--stage=rl", "stage"), ("--schedule=linear", "schedule"), ("--loss_agg=sum", "loss_agg"),
       ("--reweight=high", "reweight"), ("--precision=fp16", "precision"), ("--chat_style=chatml", "chat_style"),
       ("--rl_extra_optimizer=drop", "rl_extra_optimizer"), ("--device=tpu", "device"), ("--resume=maybe", "resume"),
       ("--steps=ten", "steps"), ("--stpes=10", "stpes"), ("--old_logp=bogus", "old_logp"), ("--tis_cap=-1", "tis_cap"),
       ("--tis_cap=inf", "tis_cap"), ("--overlong_buffer=49", "overlong_buffer"), ("--test_data=x.jsonl", "test_data")]


@pytest.mark.parametrize("arg, flag", BAD)
def test_every_invalid_value_is_a_usage_error_naming_the_flag(arg, flag):
    with pytest.raises(UsageError) as e:
        parse_config(train.TrainConfig, [arg])
    assert f"--{flag}" in str(e.value) and "\n" not in str(e.value)


def test_the_defaults_are_valid():
    parse_config(train.TrainConfig, [])


def test_every_bad_flag_is_named_at_once_and_help_shows_the_allowed_values(capsys):
    with pytest.raises(UsageError) as e:
        parse_config(train.TrainConfig, ["--steps=0", "--tis_cap=-1", "--top_p=2"])
    assert str(e.value).splitlines() == ["--top_p=2.0: must be a finite number in (0, 1]",
                                         "--tis_cap=-1.0: must be a finite number >= 0",
                                         "--steps=0: must be a positive integer"]
    with pytest.raises(SystemExit):
        parse_config(train.TrainConfig, ["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--old_logp {rollout,recompute}" in out and "[in (0, 1]]" in out and "[a positive integer]" in out


def test_inputs_that_do_not_depend_on_each_other_are_all_named_before_any_work(tmp_path, capsys):
    # a broken data file and no trained base: both named in one go (in the order of setup's checks: the
    # model to start from, then the data), nothing generated
    data = tmp_path / "broken.jsonl"
    data.write_text('{"question": "1+1", "answer": "2"}\n{"question": "2+2"\n')
    with pytest.raises(SystemExit) as e:
        run_main(train.main, ["--stage=grpo", f"--data={data}", f"--test_data={tmp_path}/none.jsonl",
                              f"--base_dir={tmp_path}/base", f"--out_dir={tmp_path}/out"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: --base_dir: no Hugging Face checkpoint at {tmp_path}/base (config.json missing): train it with "
        "--stage=sft (or --stage=all), or give --init_from",
        f"error: {data}:2: not valid JSON (Expecting ',' delimiter at column 19)",
        f"error: --test_data={tmp_path}/none.jsonl: no such file"]
    assert not (tmp_path / "out").exists()

# -----------------------------------------------------------------------------
# a truncated response gave no final answer: it scores 0


def test_a_truncated_but_matching_response_scores_0_in_evaluation():
    enc = toy_tokenizer()
    text = enc.encode_ordinary("4*4=16\n#### 16")
    problems = [{"question": "4*4", "answer": "16"}] * 2

    def gen(prompts, temperature, seed):  # row 0 stopped at the end token; row 1 hit the budget mid-answer
        n = len(prompts)
        ids = torch.tensor([text + [enc.eot_token] if i % 2 == 0 else text + [enc.encode_ordinary("\n")[0]]
                            for i in range(n)])
        return Generation(ids, torch.zeros(ids.shape), torch.full((n,), ids.size(1)),
                          torch.tensor([i % 2 == 1 for i in range(n)]))
    model = GPT(GPTConfig(vocab_size=enc.n_vocab, n_layer=1, n_embd=32, n_head=2))
    r = evaluate(model, ToyFormat(enc), problems, k=2, generate_fn=gen)
    assert r["greedy_acc"] == r["greedy_exact_match"] == r["greedy_truncated"] == 0.5
    assert r["avg2"] == 0.5 and r["truncated"] == 0.5 and r["pass2"] == 1.0


def test_a_truncated_but_matching_response_gets_reward_0(monkeypatch):
    enc = toy_tokenizer()
    ids = torch.tensor([enc.encode_ordinary("#### 16")] * 2)  # the same text twice: one stopped, one cut off
    n = ids.size(1)
    monkeypatch.setattr(grpo, "generate", lambda *a, **k: Generation(ids, torch.zeros(ids.shape), torch.tensor([n, n]),
                                                                   torch.tensor([False, True])))
    roll = grpo.rollout(None, ToyFormat(enc), [{"question": "4*4", "answer": "16"}], 2, n, 1.0, seed=0, workers=1)
    assert roll.rewards.tolist() == [1.0, 0.0]
    texts = [ToyFormat(enc).decode(c) for c in roll.completions]
    assert reward(texts, ["16", "16"]) == [True, True]  # the same texts, truncation unknown


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_ends_a_run_with_one_line_naming_its_checkpoint_and_resume(base, tmp_path, sig):
    argv = [*TINY, "--stage=grpo", f"--data_dir={base}/data", f"--base_dir={base}/base", f"--out_dir={tmp_path}",
            "--steps=50", "--save_every=2"]
    p = subprocess.Popen([sys.executable, "-c", CHILD, *argv], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    for line in p.stdout:
        if line.startswith("step    3/"):  # checkpoints at steps 0 and 2 are on disk, step 4's is not
            break
    workers = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()  # the verifier's processes
    p.send_signal(sig)
    rest, err = p.communicate(timeout=120)
    assert workers and p.returncode == 130, err
    last, path = ckpt.list_checkpoints(tmp_path / "grpo")[-1]  # step 2, or 4 if it was written meanwhile
    assert "Traceback" not in err and err.strip().splitlines() == [
        f"interrupted: stopped; the last checkpoint is step {last} ({path}): continue from it with the same "
        "command and --resume=true"], err
    for pid in workers:  # gone (or a zombie waiting for init to reap it), not left running
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "\nState:\tZ" in status.read_text()
    assert not list((tmp_path / "grpo").glob("*.tmp"))  # nothing half-written left in place of a checkpoint
