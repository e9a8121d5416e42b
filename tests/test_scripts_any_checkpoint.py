"""
The three scripts on any checkpoint, end to end. A real-model-shaped checkpoint (a Hugging Face Llama dir with a
byte-level BPE tokenizer and a ChatML template: a tiny random one here, SmolLM2-135M-Instruct in the slow
variant) goes through train.py GRPO; the run's checkpoints reload in transformers with equal logits, and
sample.py (chat prompt, --eval, both extrapolation modes) and every analyze.py subcommand run on it. A toy run
with non-default task flags is evaluated on its own task. A user's mistake is one line naming the fix.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, LlamaConfig

import analyze
import sample
import train
from nanorlvr.infra import checkpoint as ckpt
from nanorlvr import grpo
from nanorlvr.infra.common import UsageError, parse_config
from nanorlvr.prompts import ChatFormat, ToyFormat, format_for, held_out_for
from nanorlvr.tasks import TaskConfig, ensure_toy_data, load_jsonl

ROOT = Path(__file__).resolve().parents[1]
CHATML = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
PROBLEMS = [(f"What is {a} plus {b}?", f"{a} + {b} = {a + b}.\n#### {a + b}") for a, b in
            [(2, 3), (4, 4), (1, 6), (5, 2), (3, 3), (7, 1), (2, 2), (6, 3)]]


def tiny_llama_dir(path):
    """A random 2-layer Llama saved by transformers, with a BPE tokenizer.json (ChatML specials) trained here."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    corpus = [q + " " + a for q, a in PROBLEMS] + ["Please reason step by step, and put your final answer within "
                                                   "\\boxed{}.", "system user assistant 0123456789"]
    tok.train_from_iterator(corpus * 3, trainers.BpeTrainer(vocab_size=400, special_tokens=CHATML, show_progress=False,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      initializer_range=0.2, eos_token_id=tok.token_to_id("<|im_end|>"), bos_token_id=None,
                      pad_token_id=None)
    torch.manual_seed(0)  # initializer_range 0.2: peaked logits, so greedy decoding has no near-ties
    AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return tiny_llama_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module", params=["tiny_llama", pytest.param("smollm2_dir", marks=pytest.mark.slow)])
def model_dir(request):
    """The HF checkpoint every test below runs on: the tiny random Llama, or (slow) the real SmolLM2."""
    try:
        return Path(request.getfixturevalue(request.param))
    except pytest.FixtureLookupError:
        pytest.skip(f"no {request.param} fixture in this checkout")


@pytest.fixture(scope="module")
def grpo_run(model_dir, tmp_path_factory):
    """train.py --stage=grpo --init_from=<model_dir> --data=<8 problems>: 3 steps, a checkpoint after each.
    Rewards alternate 1, 0, 1, 0 (grpo.reward patched) so that every step moves the weights of a model that,
    random or real, would rarely earn a reward within 8 tokens."""
    d = tmp_path_factory.mktemp("grpo")
    (d / "data.jsonl").write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in PROBLEMS))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(grpo, "reward", lambda texts, golds, *_, **__: [i % 2 == 0 for i in range(len(texts))])
        train.main([f"--init_from={model_dir}", "--stage=grpo", f"--data={d / 'data.jsonl'}", "--n_eval=2",
                    "--eval_k=2", "--steps=3", "--save_every=1", "--prompts_per_step=2", "--group_size=2",
                    "--max_new_tokens=8", "--mask_truncated=false", "--lr=1e-3", "--device=cpu", "--threads=1",
                    "--verify_workers=1", f"--out_dir={d}", "--run=run"])
    return d / "run"


def final_eval(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]["eval"]


def sample_main(capsys, *args):
    capsys.readouterr()
    sample.main(["--device=cpu", *args])
    return capsys.readouterr().out

# ----------------------------------------------------------------------------- a HF checkpoint through every script


def test_grpo_checkpoint_describes_itself_and_reloads_in_transformers(model_dir, grpo_run):
    last = ckpt.resolve_checkpoint(grpo_run, "--ckpt")
    assert last.name == "step_000003" and (last / "tokenizer.json").is_file()
    info = ckpt.read_info(last)
    assert info["prompt"]["format"] == "chat" and info["max_new_tokens"] == 8 and info["task"]["n_eval"] == 2
    w0, w3 = ckpt.load_model(grpo_run / "step_000000").state_dict(), ckpt.load_model(last).state_dict()
    assert any(not torch.equal(w0[k], w3[k]) for k in w0), "GRPO changed nothing"
    hf, ours = AutoModelForCausalLM.from_pretrained(last).eval(), ckpt.load_model(last).eval()
    idx = torch.tensor([format_for(last).encode(PROBLEMS[0][0])])
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, rtol=1e-4, atol=1e-4)


def test_chat_prompt_greedy_answer_is_transformers_greedy_generate(model_dir, capsys):
    fmt = format_for(model_dir)
    assert isinstance(fmt, ChatFormat) and fmt.style == "qwen"
    out = sample_main(capsys, f"--ckpt={model_dir}", "--prompt=What is 7+5?", "--temperature=0", "--max_new_tokens=20")
    printed = out.split("--- sample 0")[1].split("\n", 1)[1]
    hf = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = fmt.encode("What is 7+5?")
    with torch.no_grad():
        new = hf.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False, eos_token_id=fmt.stop_ids,
                          pad_token_id=fmt.stop_ids[0])[0, len(ids):].tolist()
    assert "--- sample 1" not in out  # greedy: one sample
    assert printed.rstrip("\n") == fmt.decode(new).rstrip("\n")  # log() ends the text with one newline


def test_sample_eval_defaults_to_the_runs_held_out_problems_and_budget(grpo_run, capsys, tmp_path):
    out = sample_main(capsys, f"--ckpt={grpo_run}", "--eval=2", "--k=2", f"--out={tmp_path / 'e.json'}")
    assert "8 new tokens at most" in out
    (row,) = json.loads((tmp_path / "e.json").read_text())["results"]
    ref = final_eval(grpo_run)  # train.py's own final evaluation: same problems, prompts, budget, seeds
    for key in ("n", "greedy_acc", "greedy_truncated", "avg2", "pass2", "mean_len"):
        assert row[key] == ref[key], key


def test_sample_eval_on_a_data_file(model_dir, grpo_run, capsys, tmp_path):
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(json.dumps({"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}) + "\n")
    out = sample_main(capsys, f"--ckpt={model_dir}", "--eval=5", "--k=0", f"--data={gsm}", "--max_new_tokens=4")
    assert "plain: n=1 greedy " in out


@pytest.mark.parametrize("mode", ["logits", "dlogp"])
def test_both_extrapolation_modes_between_the_model_and_its_grpo_checkpoint(model_dir, grpo_run, capsys, mode):
    pair = [f"--ckpt0={model_dir}", f"--ckpt1={grpo_run}", "--alpha=1.5"] if mode == "logits" else \
        [f"--base={model_dir}", f"--rl={grpo_run}", "--tau=-0.1"]
    out = sample_main(capsys, f"--extrapolate={mode}", *pair, "--eval=2", "--k=2")
    line = out.strip().splitlines()[-1]
    assert line.startswith("alpha=1.5: n=2" if mode == "logits" else "gate dlogp tau=-0.1 gamma=0.1: n=2")
    assert "avg@2" in line and ("replaced" in line) == (mode == "dlogp")


SUBCOMMANDS = {
    "dlogp": lambda m, r: [f"--base={m}", f"--rl={r}", "--n_prompts=2", "--samples=1", "--ratios=0.5",
                           "--criteria=dlogp,random"],
    "linearity": lambda m, r: [f"--run={r}", "--n_probe=2"],
    "rank1": lambda m, r: [f"--base={r / 'step_000000'}", f"--rl={r}"],
    "alpharl": lambda m, r: [f"--run={r}", "--window=2"],
    "extrapolate": lambda m, r: [f"--run={r}", "--t0=1", "--t1=2", "--alpha=2"],
}


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_every_analyze_subcommand_runs_on_the_grpo_run(model_dir, grpo_run, tmp_path, cmd):
    analyze.main([cmd, *SUBCOMMANDS[cmd](model_dir, grpo_run), "--device=cpu", "--n_eval=2", "--k=2",
                  "--batch_size=2", f"--out={tmp_path}"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["command"] == cmd and report["max_new_tokens"] == 8  # the run's own budget
    assert (tmp_path / "summary.md").read_text().startswith(f"# analyze.py {cmd}")
    if cmd == "extrapolate":  # its reference row is the last checkpoint, evaluated as train.py did
        assert report["acc_last"] == final_eval(grpo_run)["avg2"]

# ----------------------------------------------------------------------------- a toy run on its own task

TOY = ["--n_layer=1", "--n_embd=32", "--n_head=2", "--n_ops=1", "--max_num=20", "--p_direct=0", "--n_train=200",
       "--n_test=16", "--n_eval=16", "--eval_k=2", "--max_new_tokens=16", "--threads=1", "--verify_workers=1"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A barely trained toy model (5 SFT steps: it rambles to the budget) and 2 GRPO steps, on operands 1..20."""
    d = tmp_path_factory.mktemp("toy")
    common = TOY + [f"--data_dir={d}/data", f"--base_dir={d}/base", f"--out_dir={d}"]
    train.main(common + ["--stage=sft", "--sft_steps=5", "--sft_batch=8"])
    train.main(common + ["--stage=grpo", "--steps=2", "--save_every=1", "--prompts_per_step=2", "--group_size=2"])
    return d


def test_toy_run_is_evaluated_on_its_own_task(toy_run, capsys, tmp_path):
    run = toy_run / "grpo"
    own = load_jsonl(ensure_toy_data(toy_run / "data", TaskConfig(n_ops=1, max_num=20, p_direct=0), 200, 16)[1])
    elsewhere = tmp_path / "elsewhere"  # the default toy task's files are not what it reads
    assert held_out_for(ckpt.resolve_checkpoint(run, "--ckpt"), 16, data_dir=elsewhere) == own
    assert isinstance(format_for(run / "step_000002"), ToyFormat)
    ref = final_eval(run)
    assert ref["mean_len"] <= 16  # evaluation takes the rollouts' budget (--max_new_tokens), not one of its own
    out = sample_main(capsys, f"--ckpt={run}", "--eval=16", "--k=2", f"--data_dir={toy_run / 'data'}",
                      f"--out={tmp_path / 'e.json'}")
    (row,) = json.loads((tmp_path / "e.json").read_text())["results"]
    assert "16 new tokens at most" in out
    assert all(row[k] == ref[k] for k in ("greedy_acc", "avg2", "pass2", "mean_len"))
    analyze.main(["extrapolate", f"--run={run}", "--t0=0", "--t1=1", "--alpha=2", "--n_eval=16", "--k=2",
                  "--device=cpu", f"--data_dir={toy_run / 'data'}", f"--out={tmp_path / 'x'}"])
    assert json.loads((tmp_path / "x" / "report.json").read_text())["acc_last"] == ref["avg2"]

# ----------------------------------------------------------------------------- a user's mistake: one line


@pytest.fixture(scope="module")
def broken(tmp_path_factory, tiny_llama):
    d = tmp_path_factory.mktemp("broken")
    toy = d / "toy"
    train.main(TOY + [f"--data_dir={d}/data", f"--base_dir={toy}", "--stage=sft", "--sft_steps=1", "--sft_batch=2",
                      "--n_eval=2", "--eval_k=1"])
    (d / "no_tokenizer").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_llama / name, d / "no_tokenizer" / name)
    (d / "empty_run").mkdir()
    (d / "bad.jsonl").write_text(json.dumps({"question": "q", "answer": "\\frac{"}) + "\n")
    return d


def errors(script_main, *args):
    with pytest.raises(UsageError) as e:
        script_main(list(args))
    return str(e.value)


def test_two_checkpoints_with_different_vocabularies(broken, tiny_llama):
    msg = errors(sample.main, "--extrapolate=logits", f"--ckpt0={broken / 'toy'}", f"--ckpt1={tiny_llama}", "--eval=1")
    assert "--ckpt0 and --ckpt1 have different vocabularies" in msg
    msg = errors(analyze.main, "dlogp", f"--base={broken / 'toy'}", f"--rl={tiny_llama}")
    assert "--base and --rl have different vocabularies" in msg


def test_a_dir_without_tokenizer_files(broken):
    msg = errors(sample.main, f"--ckpt={broken / 'no_tokenizer'}", "--prompt=hi")
    assert msg.startswith("--ckpt:") and "no tokenizer.json" in msg


def test_a_run_folder_without_checkpoints(broken):
    assert "holds neither a checkpoint" in errors(sample.main, f"--ckpt={broken / 'empty_run'}", "--prompt=hi")
    assert "holds neither a checkpoint" in errors(analyze.main, "linearity", f"--run={broken / 'empty_run'}")


def test_a_data_file_whose_gold_answers_do_not_parse(broken):
    msg = errors(sample.main, f"--ckpt={broken / 'toy'}", "--eval=1", f"--data={broken / 'bad.jsonl'}")
    assert msg.startswith("--data:") and "bad.jsonl:1" in msg and "cannot be parsed" in msg


def test_a_plain_hf_dir_needs_data_to_evaluate(tiny_llama):
    assert "pass --data=FILE" in errors(sample.main, f"--ckpt={tiny_llama}", "--eval=1")


def test_unknown_flags_and_bad_values(broken):
    assert "unrecognized arguments: --bogus=1" in errors(sample.main, "--bogus=1")
    assert "unrecognized arguments: --bse=x" in errors(analyze.main, "dlogp", "--bse=x")
    assert "--base and --rl required" in errors(analyze.main, "dlogp")
    assert "--extrapolate must be" in errors(sample.main, "--extrapolate=weights", "--eval=1")
    assert "give --prompt" in errors(sample.main)
    assert "--prompt_file: nowhere.txt does not exist" in errors(sample.main, "--prompt_file=nowhere.txt")
    assert "invalid choice: 'dlogq'" in errors(analyze.main, "dlogq")


def test_subcommands_parse_into_their_own_dataclass():
    cfg = parse_config(analyze.COMMANDS, ["rank1", "--base=a", "--rl=b", "--rank=2", "--k=0"])
    assert type(cfg) is analyze.Rank1 and (cfg.base, cfg.rl, cfg.rank, cfg.k, cfg.n_eval) == ("a", "b", 2, 0, 1000)
    with pytest.raises(UsageError, match="unrecognized arguments: --rank=2"):  # rank1's flag, not alpharl's
        parse_config(analyze.COMMANDS, ["alpharl", "--run=r", "--rank=2"])


@pytest.mark.parametrize("script", ["sample.py", "analyze.py"])
def test_the_scripts_print_one_line_and_exit_2(broken, script):
    args = [f"--ckpt={broken / 'empty_run'}", "--prompt=hi"] if script == "sample.py" else \
        ["rank1", f"--base={broken / 'toy'}", f"--rl={broken / 'empty_run'}"]
    p = subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and p.stderr.startswith("error: "), p.stderr
