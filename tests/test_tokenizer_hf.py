"""
load_tokenizer (HF tokenizer.json -> tiktoken) against the `tokenizers` library as the reference, on byte-level
BPEs trained here on a few KB of text; render_chat against hand-written Qwen / Llama 3 prompts, and ChatFormat's
prompt ids against transformers' apply_chat_template with the Qwen2.5 and Llama 3 / 3.1 / 3.2 templates.
(tests/test_real_model.py checks the same against a real tokenizer and template, SmolLM2's.)
"""
import json
import pickle

import pytest
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from nanorlvr.prompts import ChatFormat, render_chat
from nanorlvr.tokenizer import byte_level_alphabet, load_tokenizer

# Qwen2's split regex (Llama 3's differs only in \p{N}{1,3} for \p{N})
QWEN_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3_PATTERN = QWEN_PATTERN.replace(r"\p{N}|", r"\p{N}{1,3}|")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

TRAIN = [
    "The quick brown fox jumps over the lazy dog. It's 12:45 and we've got 3 apples; they'll cost $4.99!",
    "def main():\n    for i in range(10):\n        print(f\"value {i} = {i * i}\")\n\treturn None\n",
    "Grüße aus Köln! Ça va? Naïve café, déjà vu, smörgåsbord, Straße.",
    "Привет, мир! Как дела? Москва 2024 год.  日本語のテキストです。東京タワー。中文文本，你好世界！",
    "Emoji time 🚀🔥🎉 — and ✓ marks, ½ fractions, π ≈ 3.14159, ∑x² = 42.",
    "Numbers: 1234567890 0.001 -17 +3e10 1,000,000 and 2+2=4, 10/3≈3.333…",
    "Whitespace   runs\t\ttabs\n\n\nnewlines\r\nCRLF   trailing   \n   leading",
    "I'M SHOUTING, you're whispering; THEY'LL see. She'd've known. Don't, won't, can't.",
    "<html><body class=\"x\">Hello &amp; welcome</body></html> {\"key\": [1, 2, 3], \"ok\": true}",
    "Question: What is 17 * 23? Answer: 17 * 23 = 391. #### 391",
]

CORPUS = [
    "Hello world! It's a test: 42 apples, 3.14 pies, and 1000000 dollars.",
    "  leading spaces and trailing   \n\n\tmixed\t whitespace \r\n windows line",
    "Unseen wörds: Übermäßig, façade, coöperate, naïveté — and “quotes” ‘too’.",
    "Mixed scripts: Ελληνικά, עברית, العربية, हिन्दी, 한국어, 日本語, 中文。",
    "Emoji: 👩‍👩‍👧‍👦 🏳️‍🌈 👍🏽 🚀🚀🚀 and flags 🇫🇷🇯🇵",
    "Digits 0123456789 9876543210 12 345 6789 v1.2.3 2024-06-01T12:00:00Z",
    "Specials inline: <|im_start|>user\nhi<|im_end|>\n<|endoftext|>tail",
    "Contractions: I'll, we'd, THEY'RE, it's, Y'ALL'VE; code: x+=1; y->z; a::b",
    "Odd spaces:\u00a0nbsp,\u3000ideographic,\u2009thin, zero\u200bwidth, \u2028line sep",
    "",
    " ",
    "\n",
    "a",
    "ThE QuIcK BrOwN FoX   JUMPS\n\n\n   over    the lazy dog 🐶!!!???...",
    "Digits after spaces: a  1, b   22\t3\n 4 ½ ² ٣ Ⅷ 10⁶ and x=  -7.5",
    "Control chars: \x00\x01\x04!\x04!\x1b[0m \x1c\x1d\x1e\x1f \x7f and a\x06b",
    "Far planes: \U00040000\U000b0001 abc \U00050123! \U0010fffd",
]


def train_tokenizer(tmp_path, pre_tokenizer, vocab_size=600, ignore_merges=False, alphabet=None, specials=SPECIALS):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=alphabet or pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TRAIN * 3, trainer=trainer)
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return tok, path


PRE_TOKENIZERS = {
    "gpt2_bytelevel": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    "qwen_split": lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
    "digits_bytelevel": lambda: pre_tokenizers.Sequence([  # StarCoder, SmolLM
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
    "llama3_split": lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)]),
}


@pytest.mark.parametrize("kind", PRE_TOKENIZERS)
def test_encodes_and_decodes_like_tokenizers(tmp_path, kind):
    # Llama 3's tokenizer.json looks whole pieces up before merging (ignore_merges), as tiktoken does
    ref, path = train_tokenizer(tmp_path, PRE_TOKENIZERS[kind](), ignore_merges=kind == "llama3_split")
    enc = load_tokenizer(path)
    assert enc.n_vocab == ref.get_vocab_size()
    for text in CORPUS + TRAIN:
        ids = enc.encode(text, allowed_special="all")
        assert ids == ref.encode(text, add_special_tokens=False).ids, text
        assert enc.decode(ids) == text
        assert ref.decode(ids, skip_special_tokens=False) == text


def test_bytes_without_a_token_are_dropped_like_tokenizers(tmp_path):
    # a vocabulary lacking some single bytes (SmolLM2's lacks ten): control characters, and the lead byte 0xF1
    # of U+40000..U+7FFFF (its continuation bytes keep their tokens). tokenizers drops such a byte from its
    # piece and merges the rest: `<\x04/` is one piece and encodes as the one token `</`.
    absent = {0x04, 0x1D, 0xF1}
    alphabet = [c for c, b in byte_level_alphabet().items() if b not in absent]
    ref, path = train_tokenizer(tmp_path, PRE_TOKENIZERS["gpt2_bytelevel"](), alphabet=alphabet)
    enc = load_tokenizer(path)
    assert sorted(enc.absent) == sorted(absent)
    texts = CORPUS + ["<\x04/", "\x04", "ab\x04\x1d cd", "x \U00040000y\U00050000 \U00040000", "<|im_start|>\x04<|im_end|>"]
    for text in texts:
        assert enc.encode(text, allowed_special="all") == ref.encode(text, add_special_tokens=False).ids, text
    assert enc.encode("<\x04/") == enc.encode("</") == [enc.encode_single_token("</")]
    assert pickle.loads(pickle.dumps(enc)).encode("<\x04/") == enc.encode("</")  # as sent to worker processes
    ref.encode_special_tokens = True
    assert enc.encode_ordinary("<|im_end|>\x04") == ref.encode("<|im_end|>\x04").ids
    with pytest.raises(ValueError, match="special token"):
        enc.encode("<|im_end|>\x04")  # like tiktoken without absent bytes: special-token text needs a decision


def test_special_tokens_keep_their_ids(tmp_path):
    ref, path = train_tokenizer(tmp_path, PRE_TOKENIZERS["qwen_split"]())
    enc = load_tokenizer(tmp_path)  # a directory holding tokenizer.json works too
    for s in SPECIALS:
        assert enc.encode_single_token(s) == ref.token_to_id(s)
    ref.encode_special_tokens = True  # special-token text as ordinary text
    assert enc.encode_ordinary("<|im_end|>") == ref.encode("<|im_end|>").ids


def test_vocab_ids_out_of_merge_order_are_rejected(tmp_path):
    _, path = train_tokenizer(tmp_path, PRE_TOKENIZERS["gpt2_bytelevel"]())
    tj = json.loads(path.read_text())
    (a1, b1), (a2, b2) = tj["model"]["merges"][:2]
    vocab = tj["model"]["vocab"]
    vocab[a1 + b1], vocab[a2 + b2] = vocab[a2 + b2], vocab[a1 + b1]
    path.write_text(json.dumps(tj))
    with pytest.raises(ValueError, match="merge order"):
        load_tokenizer(path)


def test_missing_tokenizer_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


def test_render_chat_qwen():
    messages = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}]
    assert render_chat(messages, "qwen") == (
        "<|im_start|>system\nYou are helpful.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
        "<|im_start|>assistant\n")
    assert render_chat(messages[1:2], "qwen", add_generation_prompt=False) == \
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"


def test_render_chat_llama3():
    messages = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "  What is 2+2?\n"}]
    assert render_chat(messages, "llama3") == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert render_chat(messages[1:], "llama3", add_generation_prompt=False) == \
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
    with pytest.raises(ValueError, match="unknown chat style"):
        render_chat(messages, "chatml")


# the chat templates of Qwen2.5-Instruct, Meta-Llama-3-Instruct and Llama-3.1/3.2-Instruct (tool calling left out)
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) "
    "or (message.role == 'assistant') %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
LLAMA31_DATE = '{%- if not date_string is defined %}{%- set date_string = "26 Jul 2024" %}{%- endif %}'
LLAMA32_DATE = ('{%- if not date_string is defined %}{%- if strftime_now is defined %}'
                '{%- set date_string = strftime_now("%d %b %Y") %}{%- else %}{%- set date_string = "26 Jul 2024" %}'
                '{%- endif %}{%- endif %}')
LLAMA31_TEMPLATE = (
    "{{- bos_token }}DATE"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = \"\" %}{%- endif %}"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting Knowledge Date: December 2023\\n\" }}"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}{{- system_message }}{{- \"<|eot_id|>\" }}"
    "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
    "message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
TEMPLATES = {"qwen2.5": QWEN25_TEMPLATE, "llama3": LLAMA3_TEMPLATE,
             "llama3.1": LLAMA31_TEMPLATE.replace("DATE", LLAMA31_DATE),
             "llama3.2": LLAMA31_TEMPLATE.replace("DATE", LLAMA32_DATE)}  # today's date
CHATS = [
    [{"role": "system", "content": "Please reason step by step."}, {"role": "user", "content": "What is 17 * 23?"}],
    [{"role": "user", "content": "  Hello  there!\n"}],  # no system message: the template's default, if any
    [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "Ça va? 🚀 x\ty"}],
]


@pytest.mark.parametrize("model", TEMPLATES)
def test_chat_prompt_ids_equal_apply_chat_template(tmp_path, model):
    transformers = pytest.importorskip("transformers")
    qwen = model.startswith("qwen")
    train_tokenizer(tmp_path, PRE_TOKENIZERS["qwen_split" if qwen else "llama3_split"](),
                    specials=SPECIALS if qwen else LLAMA3_SPECIALS)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None if qwen else "<|begin_of_text|>", "chat_template": TEMPLATES[model]}))
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path)
    fmt = ChatFormat.from_pretrained(tmp_path, system_prompt="")
    assert fmt.style == ("qwen" if qwen else "llama3")
    for messages in CHATS:
        expected = ref.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert fmt.encode_chat(messages) == list(expected), messages
    # a question alone: the template's default system turn, or none (Llama 3.0)
    assert fmt.encode("What is 1+1?") == list(ref.apply_chat_template(
        [{"role": "user", "content": "What is 1+1?"}], add_generation_prompt=True, tokenize=True, return_dict=False))
