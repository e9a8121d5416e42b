"""
The scale-up path on a tiny random Qwen2 checkpoint (transformers' Qwen2Config + save_pretrained, a BPE
tokenizer.json trained here): chat prompts encode as the `tokenizers` reference does, train.py runs SFT and
GRPO from --init_from on a GSM8K-style file and writes checkpoints that load back into transformers with the
same logits; gradient checkpointing changes no gradient; the memory estimate counts parameters exactly.
"""
import json

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, Qwen2Config

import train
from nanorlvr.infra import checkpoint as ckpt
from nanorlvr import grpo
from nanorlvr.infra import precision
from nanorlvr.model import GPT, GPTConfig
from nanorlvr.prompts import ChatFormat, detect_style, render_chat
from nanorlvr.tokenizer import load_tokenizer

QWEN_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
GSM8K = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
     "answer": "Tom has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
    {"question": "A box holds 6 eggs. How many eggs are in 2 boxes?", "answer": "2 * 6 = <<2*6=12>>12 eggs.\n#### 12"},
    {"question": "Sara had 10 pens and gave away 3. How many are left?", "answer": "10 - 3 = <<10-3=7>>7\n#### 7"},
    {"question": "What is half of 18?", "answer": "18 / 2 = <<18/2=9>>9\n#### 9"},
]
CORPUS = [p["question"] + " " + p["answer"] for p in GSM8K] + [
    "Please reason step by step, and put your final answer within \\boxed{}.", "system user assistant",
    "The answer is \\boxed{42}. Numbers 0123456789 and words."]


def bpe(specials, path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 3, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    return tok


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-qwen2")
    tok = bpe(QWEN_SPECIALS, d)
    end = tok.token_to_id("<|im_end|>")
    cfg = Qwen2Config(vocab_size=tok.get_vocab_size() + 16, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
                      eos_token_id=end, bos_token_id=None, pad_token_id=None)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
    data = d / "gsm8k.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in GSM8K))
    return d


@pytest.mark.parametrize("style,specials", [("qwen", QWEN_SPECIALS), ("llama3", LLAMA3_SPECIALS)])
def test_chat_prompts_encode_like_tokenizers(tmp_path, style, specials):
    ref = bpe(specials, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": [ref.token_to_id(specials[1]), 399]}))
    fmt = ChatFormat.from_pretrained(tmp_path)
    assert fmt.style == detect_style(load_tokenizer(tmp_path)) == style
    q = GSM8K[0]["question"]
    text = render_chat([{"role": "system", "content": fmt.system_prompt}, {"role": "user", "content": q}], style)
    assert fmt.encode(q) == ref.encode(text, add_special_tokens=False).ids
    end = "<|im_end|>" if style == "qwen" else "<|eot_id|>"
    assert ref.token_to_id(end) in fmt.stop_ids and 399 in fmt.stop_ids  # the template's end and config's eos
    ids = ref.encode("The answer is 7.", add_special_tokens=False).ids
    assert fmt.decode(ids + [ref.token_to_id(end), 10_000]) == "The answer is 7."
    assert fmt.target("x")[-1] == ref.token_to_id(end)


def test_unknown_template_is_a_clear_error(tmp_path):
    bpe(["<|endoftext|>"], tmp_path)
    with pytest.raises(ValueError, match="--chat_style"):
        ChatFormat.from_pretrained(tmp_path)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])  # cuda: bf16-mixed
def test_sft_then_grpo_from_a_hf_checkpoint(qwen_dir, tmp_path, monkeypatch, device):
    common = [f"--device={device}", f"--data={qwen_dir / 'gsm8k.jsonl'}", "--n_eval=2", "--eval_k=2", "--max_new_tokens=8", "--threads=1",
              "--verify_workers=1", f"--out_dir={tmp_path}/out", f"--base_dir={tmp_path}/base"]
    train.main(common + [f"--init_from={qwen_dir}", "--stage=sft", "--sft_steps=2", "--sft_batch=2",
                         "--micro_batch=1", "--sft_lr=1e-3"])
    assert (tmp_path / "base/tokenizer.json").is_file()
    # a random model earns no reward: score the rollouts 1, 0, 1, 0, ... so that the update runs
    monkeypatch.setattr(grpo, "reward", lambda texts, golds, *_, **__: [i % 2 == 0 for i in range(len(texts))])
    train.main(common + [f"--init_from={tmp_path}/base", "--stage=grpo", "--steps=1", "--prompts_per_step=2",
                         "--group_size=4", "--micro_batch=3", "--grad_ckpt=true", "--lr=1e-3", "--mask_truncated=false"])
    step1 = tmp_path / "out/grpo/step_000001"
    rows = [json.loads(line) for line in (tmp_path / "out/grpo/metrics.jsonl").read_text().splitlines()]
    assert rows[1]["rows_used"] == 8 and "loss" in rows[1] and "skipped" not in rows[1]
    w0, w1 = ckpt.load_model(tmp_path / "out/grpo/step_000000").state_dict(), ckpt.load_model(step1).state_dict()
    assert any(not torch.equal(w0[k], w1[k]) for k in w0), "the GRPO step changed nothing"
    # the checkpoint is a HF checkpoint: transformers loads it, with our logits, next to the tokenizer
    assert (step1 / "tokenizer.json").is_file() and json.loads((step1 / "config.json").read_text())["eos_token_id"]
    hf = AutoModelForCausalLM.from_pretrained(step1).eval()
    ours = ckpt.load_model(step1).eval()
    idx = torch.tensor([ChatFormat.from_pretrained(step1).encode(GSM8K[0]["question"])])
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours(idx), rtol=1e-4, atol=1e-4)


def test_gradient_checkpointing_changes_no_gradient():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_embd=32, n_head=2))
    idx = torch.randint(0, 256, (3, 12))
    grads = []
    for on in (False, True):
        model.grad_ckpt = on
        model.zero_grad()
        model(idx).logsumexp(-1).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_memory_estimate_of_qwen25_05b():
    cfg = GPTConfig(vocab_size=151936, n_layer=24, n_head=14, n_kv_head=2, n_embd=896, intermediate_size=4864,
                    max_seq_len=32768, rope_theta=1e6, qkv_bias=True, tie_embeddings=True)
    m = precision.memory_estimate(cfg, gen_rows=64, update_rows=8, prompt_len=128, new_tokens=512)
    assert m["params"] == 494_032_768  # Qwen2.5-0.5B's published count
    assert m["weights"] == m["grads"] == 4 * m["params"] and m["adamw"] == 8 * m["params"]
    ck = precision.memory_estimate(cfg, gen_rows=64, update_rows=8, prompt_len=128, new_tokens=512, grad_ckpt=True)
    assert ck["activations"] < m["activations"] / 4 and ck["total"] < m["total"]
    assert "GiB" in precision.memory_line(m)
