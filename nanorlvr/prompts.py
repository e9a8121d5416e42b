"""
How a problem becomes a prompt, and a completion becomes text: one small object per model family.

    ToyFormat(enc)                      <|user|>{question}<|assistant|> ... <|endoftext|>   (the toy, from scratch)
    ChatFormat.from_pretrained(path)    the instruct chat template of a HF checkpoint (ChatML or Llama 3 style)

Both have `.encode(question) -> ids`, `.stop_ids` (any of them ends a completion), `.decode(ids) -> text`
(special tokens dropped) and `.target(solution) -> ids` (an SFT target, the end token included).
rollout / evaluate / SFT take one of these instead of calling the toy `encode_prompt` directly.
"""
import json
import re
from datetime import datetime
from pathlib import Path

from nanorlvr.tokenizer import encode_prompt, load_tokenizer

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
