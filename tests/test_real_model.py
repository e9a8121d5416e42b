"""
A real trained model, SmolLM2-135M-Instruct (dequantized Q4_1 weights, built once by the `smollm2_dir` fixture
from data/smollm2/prepare.py), against the references: its tokenizer against `tokenizers`, its chat prompts
against transformers' apply_chat_template, our GPT against transformers' LlamaForCausalLM (fp32 logits,
and 20 greedy tokens on chat prompts, batched through engine.generate), and our save_pretrained of it
reloading into transformers.
"""
import pytest
import torch

from nanorlvr import engine
from nanorlvr.infra.hf import load_pretrained, save_pretrained
from nanorlvr.prompts import ChatFormat
from nanorlvr.tokenizer import load_tokenizer
from test_tokenizer_hf import CHATS, CORPUS, TRAIN

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

QUESTIONS = ["What is 7+5?", "What color is the sky?", "Write the word cat backwards."]  # 10, 20, 20 tokens
NEW_TOKENS = 20
# greedy parity holds on any CPU only where the reference's best token leads the runner-up by far more than
# fp32 noise (our logits differ from transformers' by ~1e-4): each step's top-2 gap must exceed this
MIN_MARGIN = 0.05


@pytest.fixture(scope="module")
def hf_model(smollm2_dir):
    return transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def hf_tok(smollm2_dir):
    return transformers.AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="module")
def fmt(smollm2_dir):
    return ChatFormat.from_pretrained(smollm2_dir, system_prompt="")  # no system prompt: the template's default


def hf_chat_ids(hf_tok, messages):
    return list(hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))


def test_tokenizer_encodes_and_decodes_like_tokenizers(smollm2_dir):
    ref = tokenizers.Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
    enc = load_tokenizer(smollm2_dir)
    assert enc.n_vocab == ref.get_vocab_size() == 49152
    assert {0x04, 0x1D, 0xC0, 0xF1} <= set(enc.absent)  # bytes the vocabulary has no token for
    code = "def f(x):\n    return {'k': [x**2, 1e-3]}  # ok\n\n\n\tpass\r\n"
    math = "∫₀¹ x² dx = 1/3, √2 ≈ 1.41421356, 12345 × 678 = 8,369,910;  a  1   22\t3"
    for text in CORPUS + TRAIN + [code, math, "\x04\x06 ctrl \x1d\x13!\x14!", "\U00040000 far \U000b0001x"]:
        ids = enc.encode(text, allowed_special="all")
        assert ids == ref.encode(text, add_special_tokens=False).ids, text
        assert enc.decode(ids) == ref.decode(ids, skip_special_tokens=False), text


def test_chat_prompt_ids_equal_apply_chat_template(smollm2_dir, fmt, hf_tok):
    assert fmt.style == "qwen" and fmt.default_system.startswith("You are a helpful AI assistant named SmolLM")
    for messages in CHATS:
        assert fmt.encode_chat(messages) == hf_chat_ids(hf_tok, messages), messages
    q = QUESTIONS[0]
    assert fmt.encode(q) == hf_chat_ids(hf_tok, [{"role": "user", "content": q}])
    with_system = ChatFormat.from_pretrained(smollm2_dir)  # the default system prompt: SYSTEM_PROMPT
    assert with_system.encode(q) == hf_chat_ids(hf_tok, [{"role": "system", "content": with_system.system_prompt},
                                                          {"role": "user", "content": q}])


def test_logits_equal_transformers(smollm2_dir, hf_model, fmt):
    ours = load_pretrained(smollm2_dir).eval()
    idx = torch.tensor([fmt.encode_chat(CHATS[2])])
    with torch.no_grad():
        ref = hf_model(idx).logits
        got = ours(idx)
    # fp32 on the CPU: a few 1e-5 of a logit range of ~40 apart, from summation order alone
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-3)


def test_saved_checkpoint_reloads_in_transformers_with_equal_logits(smollm2_dir, fmt, tmp_path):
    ours = load_pretrained(smollm2_dir).eval()
    save_pretrained(ours, tmp_path, tokenizer_dir=smollm2_dir)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    idx = torch.tensor([fmt.encode(QUESTIONS[0])])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(idx).logits, ours(idx), rtol=1e-4, atol=1e-3)
    assert ChatFormat.from_pretrained(tmp_path, system_prompt="").encode(QUESTIONS[0]) == idx[0].tolist()


def test_greedy_generation_equals_transformers(smollm2_dir, hf_model, fmt):
    ours = load_pretrained(smollm2_dir).eval()
    prompts = [fmt.encode(q) for q in QUESTIONS]
    gen = engine.generate(ours, prompts, NEW_TOKENS, temperature=0, stop_ids=fmt.stop_ids)  # batched, left-padded
    for q, p, got in zip(QUESTIONS, prompts, gen.tokens):
        out = hf_model.generate(torch.tensor([p]), max_new_tokens=NEW_TOKENS, do_sample=False, output_scores=True,
                                return_dict_in_generate=True, eos_token_id=fmt.stop_ids, pad_token_id=fmt.end_id)
        ref = out.sequences[0, len(p):].tolist()
        gaps = [s[0].topk(2).values for s in out.scores]
        margin = min((v[0] - v[1]).item() for v in gaps)
        assert margin > MIN_MARGIN, f"{q!r}: a near-tie in greedy decoding ({margin:.3g}): choose another prompt"
        assert got == ref, (q, fmt.decode(got), fmt.decode(ref))
    assert "12" in fmt.decode(gen.tokens[0])  # a real model answers 7+5
