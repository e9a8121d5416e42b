"""
How a problem becomes a prompt, and a completion becomes text: one small object per model family.

    ToyFormat(enc)                      <|user|>{question}<|assistant|> ... <|endoftext|>   (the toy, from scratch)
    ChatFormat.from_pretrained(path)    the instruct chat template of a HF checkpoint (ChatML or Llama 3 style)

Both have `.encode(question) -> ids`, `.stop_ids` (any of them ends a completion), `.decode(ids) -> text`
(special tokens dropped) and `.target(solution) -> ids` (an SFT target, the end token included).
rollout / evaluate / SFT take one of these instead of calling the toy `encode_prompt` directly.

`format_for(checkpoint)` returns the format of any checkpoint folder (from its nanorlvr.json, written by
train.py, or its tokenizer files); `held_out_for` its run's held-out problems. Nothing else tells the toy
from a real model.
"""
import json
import re
from datetime import datetime
from pathlib import Path

from nanorlvr.infra.checkpoint import read_info
from nanorlvr.infra.common import UsageError
from nanorlvr.tasks import TaskConfig, ensure_toy_data, load_jsonl
from nanorlvr.tokenizer import encode_prompt, load_tokenizer, toy_tokenizer

SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
# per style: the token that ends an assistant turn, and the token that marks the style
STYLES = {"qwen": ("<|im_end|>", "<|im_start|>"), "llama3": ("<|eot_id|>", "<|start_header_id|>")}


class ToyFormat:
    def __init__(self, enc):
        self.enc, self.stop_ids = enc, [enc.eot_token]

    def encode(self, question):
        return encode_prompt(self.enc, question)

    def decode(self, ids):
        return self.enc.decode([t for t in ids if t < self.enc.eot_token])

    def target(self, solution):
        return self.enc.encode_ordinary(solution) + [self.enc.eot_token]


def _config_eos(path: Path) -> list[int]:
    """eos_token_id(s) of config.json and generation_config.json (an int or a list in either)."""
    out = []
    for name in ("config.json", "generation_config.json"):
        if (path / name).is_file():
            eos = json.loads((path / name).read_text()).get("eos_token_id")
            out += eos if isinstance(eos, list) else [eos] if eos is not None else []
    return out


def render_chat(messages: list[dict], style: str = "qwen", add_generation_prompt: bool = True,
                default_system: str | None = None, system_prefix: str = "") -> str:
    """The prompt text of an instruct model's chat format, for messages [{"role": ..., "content": ...}],
    as transformers' apply_chat_template renders the model's Jinja template:
    "qwen" (ChatML: Qwen, SmolLM)  <|im_start|>{role}\n{content}<|im_end|>\n ...
    "llama3"                        <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content, stripped}<|eot_id|> ...
    With add_generation_prompt the header of the assistant's turn follows. What a template adds on its own
    (read by template_defaults): `default_system`, the system message written when the messages have none
    (Qwen2.5, SmolLM2); `system_prefix`, text opening a system turn that is then always written (Llama 3.1+)."""
    has_system = bool(messages) and messages[0]["role"] == "system"
    system, rest = (messages[0]["content"], messages[1:]) if has_system else (default_system, messages)
    if style == "qwen":
        turns = ([("system", system)] if system is not None else []) + [(m["role"], m["content"]) for m in rest]
        text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")
    if style == "llama3":
        turns = [(m["role"], m["content"].strip()) for m in rest]
        if system is not None or system_prefix:
            turns = [("system", system_prefix + (system or "").strip())] + turns
        text = "<|begin_of_text|>" + "".join(
            f"<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>" for role, content in turns)
        return text + ("<|start_header_id|>assistant<|end_header_id|>\n\n" if add_generation_prompt else "")
    raise ValueError(f"unknown chat style {style!r}: use 'qwen' or 'llama3'")


def chat_template(path: Path) -> str:
    """The Jinja chat template of a HF checkpoint dir ('' if none): chat_template.jinja (transformers 5)
    or tokenizer_config.json's chat_template (a string, or a list of named templates, "default" used)."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    if (path / "tokenizer_config.json").is_file():
        t = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template") or ""
        return t if isinstance(t, str) else next((x["template"] for x in t if x.get("name") == "default"), "")
    return ""


def template_defaults(template: str) -> tuple[str | None, str]:
    """(default_system, system_prefix) of render_chat, read from a Jinja chat template's text, for what it
    writes on its own. A ChatML template's literal default system message (SmolLM2's "You are a helpful AI
    assistant named SmolLM, ...", Qwen2.5's "You are Qwen, ..."; Qwen3 has none). Llama 3.1+'s system turn
    opens with "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n": the template's date,
    or today's where it calls strftime_now (Llama 3.2), taken once, when the format is made."""
    m = re.search(r"<\|im_start\|>system(?:\n|\\n)([^'\"{}]+?)<\|im_end\|>", template)
    default_system = m.group(1) if m else None
    cutoff = re.search(r"Cutting Knowledge Date: ([^'\"\\\n]+)", template)
    if not cutoff:
        return default_system, ""
    date = re.search(r"set date_string = [\"']([^\"']+)[\"']", template)
    day = datetime.now().strftime("%d %b %Y") if "strftime_now" in template else date.group(1) if date else ""
    return default_system, f"Cutting Knowledge Date: {cutoff.group(1)}\nToday Date: {day}\n\n"


def detect_style(enc) -> str:
    """'qwen' or 'llama3', from the special tokens of the tokenizer."""
    for style, (_, marker) in STYLES.items():
        if marker in enc.special_tokens_set:
            return style
    raise ValueError(f"cannot tell the chat template of this tokenizer (none of "
                     f"{[m for _, m in STYLES.values()]} is a special token): pass --chat_style=qwen|llama3")


class ChatFormat:
    """An instruct model's chat prompt: [system, user] messages rendered with render_chat and encoded
    with special tokens recognised anywhere, giving the ids of transformers'
    `apply_chat_template(messages, add_generation_prompt=True, tokenize=True)`. With an empty system_prompt
    the messages have no system message, and the template writes its own default one, if it has one
    (SmolLM2, Qwen2.5: see template_defaults), as transformers does."""

    def __init__(self, enc, style="auto", system_prompt=SYSTEM_PROMPT, extra_stop_ids=(), template=""):
        self.enc, self.style, self.system_prompt = enc, detect_style(enc) if style == "auto" else style, system_prompt
        self.default_system, self.system_prefix = template_defaults(template)
        if self.style not in STYLES:
            raise ValueError(f"unknown chat style {self.style!r}: use auto, qwen or llama3")
        end = STYLES[self.style][0]
        if end not in enc.special_tokens_set:
            raise ValueError(f"chat style {self.style!r} needs the special token {end} in the tokenizer")
        self.end_id = enc.encode_single_token(end)
        self.special_ids = {enc.encode_single_token(s) for s in enc.special_tokens_set}
        stops = [self.end_id] + [enc.encode_single_token(s) for s in ("<|endoftext|>", "<|end_of_text|>")
                                 if s in enc.special_tokens_set] + list(extra_stop_ids)
        self.stop_ids = sorted(set(stops))

    @classmethod
    def from_pretrained(cls, path, style="auto", system_prompt=SYSTEM_PROMPT):
        path = Path(path)
        return cls(load_tokenizer(path), style, system_prompt, extra_stop_ids=_config_eos(path),
                   template=chat_template(path))

    def encode(self, question):
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + \
                   [{"role": "user", "content": question}]
        return self.encode_chat(messages)

    def encode_chat(self, messages):
        """Prompt ids of a whole conversation, ending with the header of the assistant's turn."""
        text = render_chat(messages, self.style, default_system=self.default_system, system_prefix=self.system_prefix)
        return self.enc.encode(text, allowed_special="all")

    def decode(self, ids):
        return self.enc.decode([t for t in ids if t not in self.special_ids and t < self.enc.n_vocab])

    def target(self, solution):
        return self.enc.encode_ordinary(solution) + [self.end_id]


def split_holdout(problems, n_eval, what):
    """(train, test): the last n_eval problems of one file held out, when no separate test file is given."""
    if len(problems) <= n_eval:
        raise ValueError(f"{what} has {len(problems)} problems: too few to hold out --n_eval={n_eval} "
                         "for evaluation (pass --test_data or a smaller --n_eval)")
    return problems[:-n_eval], problems[-n_eval:]

# -----------------------------------------------------------------------------
# A checkpoint describes itself: how to prompt it, what it was trained on, its completion budget.
# train.py writes checkpoint_info() next to every checkpoint (nanorlvr.json); sample.py and analyze.py read
# it back through format_for / held_out_for / budget_for, the only places that tell the toy from a real model.

TOY_VOCAB = 260  # the toy tokenizer's 256 bytes + 4 specials: older toy checkpoints have no nanorlvr.json


def checkpoint_info(fmt, task: dict, max_new_tokens: int) -> dict:
    """What nanorlvr.json records: the prompt format, the task (toy settings or data files) and the
    completion budget of the run, so that any script can prompt and evaluate the checkpoint as train.py did."""
    prompt = {"format": "toy"} if isinstance(fmt, ToyFormat) else \
        {"format": "chat", "style": fmt.style, "system_prompt": fmt.system_prompt}
    return {"prompt": prompt, "task": task, "max_new_tokens": max_new_tokens}


def _info(path: Path) -> dict:
    return read_info(path) or {}


def _vocab_size(path: Path) -> int:
    return json.loads((path / "config.json").read_text()).get("vocab_size", 0)


def format_for(ckpt_dir, flag="--ckpt"):
    """The prompt format of any checkpoint folder: the one its nanorlvr.json records; for a plain Hugging
    Face dir, its tokenizer's chat template with the default system prompt; a checkpoint with neither
    nanorlvr.json nor tokenizer files but the toy's vocabulary size is an older toy checkpoint."""
    path = Path(ckpt_dir)
    prompt = _info(path).get("prompt")
    has_tokenizer = (path / "tokenizer.json").is_file()
    if prompt is None:
        if not has_tokenizer and _vocab_size(path) == TOY_VOCAB:
            prompt = {"format": "toy"}
        else:
            prompt = {"format": "chat", "style": "auto", "system_prompt": SYSTEM_PROMPT}
    if prompt["format"] == "toy":
        return ToyFormat(toy_tokenizer())
    if not has_tokenizer:
        raise UsageError(f"{flag}: {path} has no tokenizer.json: copy the tokenizer files of the model it "
                         "was made from into it")
    try:
        return ChatFormat.from_pretrained(path, prompt["style"], prompt["system_prompt"])
    except ValueError as e:  # an unsupported tokenizer or chat template
        raise UsageError(f"{flag}: {path}: {e}") from None


def format_for_pair(dir_a, dir_b, flags):
    """The prompt format of two checkpoints decoded together (that of dir_b, the trained one), after checking
    that they share one vocabulary: lock-step decoding mixes their logits token by token."""
    fa, fb = format_for(dir_a, flags[0]), format_for(dir_b, flags[1])
    va, vb = _vocab_size(Path(dir_a)), _vocab_size(Path(dir_b))
    probe = "What is 7+5? Answer: \\boxed{12}"
    if va != vb or type(fa) is not type(fb) or fa.enc.n_vocab != fb.enc.n_vocab or fa.encode(probe) != fb.encode(probe):
        raise UsageError(f"{flags[0]} and {flags[1]} have different vocabularies ({va} and {vb} logits, "
                         f"{fa.enc.n_vocab} and {fb.enc.n_vocab} tokens): give two checkpoints of one tokenizer")
    return fb


def budget_for(ckpt_dir) -> int:
    """The completion budget of the run that wrote the checkpoint (train.py's --max_new_tokens, used for its
    rollouts and its evaluations alike); 64 for an older toy checkpoint, 256 for a plain Hugging Face dir."""
    path = Path(ckpt_dir)
    info = _info(path)
    if "max_new_tokens" in info:
        return info["max_new_tokens"]
    return 64 if isinstance(format_for(path), ToyFormat) else 256


def load_problems(path, flag="--data"):
    """tasks.load_jsonl, with a missing file or an unparseable gold answer reported as the user's mistake."""
    try:
        return load_jsonl(path)
    except (OSError, ValueError, UsageError) as e:
        raise UsageError(f"{flag}: {e}") from None


def held_out_for(ckpt_dir, n, data="", data_dir="data", flag="--ckpt"):
    """The first n evaluation problems: those of --data if given, else the held-out problems of the run that
    wrote the checkpoint, as train.py evaluated on them (the toy's test split of its own task settings, the
    run's --test_data, or the last n_eval problems of its --data). A toy checkpoint older than nanorlvr.json
    gets the default toy task; a plain Hugging Face dir records no data, so it needs --data."""
    if data:
        return load_problems(data)[:n]
    path = Path(ckpt_dir)
    task = _info(path).get("task")
    if task is None and isinstance(format_for(path, flag), ToyFormat):
        task = {"toy": {}, "n_train": 8000, "n_test": 1000}  # ensure_toy_data's defaults, as train.py's
    if task is None:
        raise UsageError(f"{flag}: {path} records no data set (a plain Hugging Face dir): pass --data=FILE")
    if "toy" in task:
        test = ensure_toy_data(data_dir, TaskConfig(**task["toy"]), n_train=task["n_train"], n_test=task["n_test"])[1]
        return load_problems(test, f"{flag} (its toy test split)")[:n]
    what = f"{flag} (the data its run trained on; pass --data to use another file)"
    if task.get("test_data"):
        return load_problems(task["test_data"], what)[:n]
    return split_holdout(load_problems(task["data"], what), task["n_eval"], task["data"])[1][:n]
