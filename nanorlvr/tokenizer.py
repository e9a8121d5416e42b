"""
Tokenizers, all as `tiktoken.Encoding`s.

The toy task uses a byte-level encoding: the 256 single bytes are the whole vocabulary (so every digit is
one token and any text round-trips), plus the special tokens of the prompt format:

    <|user|>{question}<|assistant|>{solution}<|endoftext|>

`load_tokenizer(path)` builds an encoding from a Hugging Face `tokenizer.json` (byte-level BPE: GPT-2,
Qwen2/3, Llama 3, SmolLM2) for real checkpoints; their chat templates are in prompts.py.
"""
import json
from pathlib import Path

import regex  # tiktoken's own dependency: its regexes, run in Python for the rare text that needs it
import tiktoken

EOT, USER, ASSISTANT, PAD = "<|endoftext|>", "<|user|>", "<|assistant|>", "<|pad|>"
# no format uses PAD: it stays so that existing toy checkpoints (vocabulary 260) keep their shape
TOY_SPECIALS = (EOT, USER, ASSISTANT, PAD)


def toy_tokenizer() -> tiktoken.Encoding:
    ranks = {bytes([i]): i for i in range(256)}
    specials = {s: 256 + i for i, s in enumerate(TOY_SPECIALS)}
    # each character is its own piece; with single-byte ranks no merges exist anyway
    return tiktoken.Encoding(name="nanorlvr-toy", pat_str=r"(?s:.)", mergeable_ranks=ranks,
                             special_tokens=specials)


def encode_prompt(enc: tiktoken.Encoding, question: str) -> list[int]:
    """Token ids of the toy prompt format, up to and including the assistant marker."""
    return [enc.encode_single_token(USER)] + enc.encode_ordinary(question) + [enc.encode_single_token(ASSISTANT)]


# -----------------------------------------------------------------------------
# Hugging Face byte-level BPE tokenizers (GPT-2, Qwen2/3, Llama 3) as tiktoken encodings

# the pre-tokenisation regex of tokenizers' ByteLevel(use_regex=True), i.e. GPT-2's
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Digits(individual_digits=True) then that regex (StarCoder, SmolLM): each digit is a piece, and the regex runs
# on the text between digits, so no piece spans a digit and a run of spaces may end just before one
GPT2_DIGITS_PATTERN = r"""\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""


def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's map from the printable characters used in byte-level vocabularies back to raw bytes:
    printable Latin-1 bytes stand for themselves, the other 68 bytes are shifted to chr(256 + n)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, n = {}, 0
    for b in range(256):
        if b in printable:
            out[chr(b)] = b
        else:
            out[chr(256 + n)] = b
            n += 1
    return out


def _split_pattern(pre) -> str:
    """The one splitting regex of a tokenizer.json pre_tokenizer (Split, ByteLevel, or a Sequence of them,
    possibly opening with Digits(individual_digits=True))."""
    steps = pre["pretokenizers"] if pre and pre["type"] == "Sequence" else [pre] if pre else []
    patterns, byte_level, digits = [], False, False
    for p in steps:
        if p["type"] == "Digits" and p.get("individual_digits") and not patterns:
            digits = True
        elif p["type"] == "Split" and "Regex" in p["pattern"]:
            if p.get("invert") or p.get("behavior") != "Isolated":
                raise ValueError(f"unsupported Split pre-tokenizer {p}: only behavior 'Isolated', not inverted")
            patterns.append(p["pattern"]["Regex"])
        elif p["type"] == "ByteLevel":
            if p.get("add_prefix_space"):
                raise ValueError("ByteLevel add_prefix_space=True is not supported")
            if p.get("use_regex", True):
                patterns.append(GPT2_DIGITS_PATTERN if digits else GPT2_PATTERN)
            byte_level = True
        else:
            raise ValueError(f"unsupported pre-tokenizer {p['type']!r} ({p})")
    if not byte_level:
        raise ValueError("not a byte-level BPE tokenizer: its pre_tokenizer has no ByteLevel step")
    if len(patterns) != 1:
        raise ValueError(f"need exactly one splitting regex in the pre_tokenizer, found {len(patterns)}")
    if digits and patterns[0] != GPT2_DIGITS_PATTERN:
        raise ValueError("a Digits pre-tokenizer is supported only before ByteLevel(use_regex=True)")
    return patterns[0]


def _check_merges(bpe: dict, added: dict) -> None:
    """tiktoken merges the adjacent pair whose concatenation has the lowest id, so the ids of merge results
    must follow merge order (several merges may make the same token), and, unless whole pieces are looked up
    first (ignore_merges, as tiktoken does), every multi-byte token must be made by some merge."""
    vocab, last, made = bpe["vocab"], -1, set()
    for i, m in enumerate(bpe.get("merges", [])):
        a, b = m.split(" ") if isinstance(m, str) else m
        if a not in vocab or b not in vocab or a + b not in vocab:
            raise ValueError(f"merge {i} ({a!r}, {b!r}) uses or makes a token missing from the vocab")
        if vocab[a + b] < last:
            raise ValueError(f"merge {i} ({a!r}, {b!r}) makes id {vocab[a + b]} after a merge made id {last}: "
                             "token ids do not follow merge order, which tiktoken requires")
        last = vocab[a + b]
        made.add(a + b)
    if not bpe.get("ignore_merges"):
        orphans = [t for t in vocab if len(t) > 1 and t not in made and t not in added]
        if orphans:
            raise ValueError(f"{len(orphans)} vocab tokens are made by no merge (e.g. {orphans[:5]})")


def load_tokenizer(path) -> tiktoken.Encoding:
    """A tiktoken encoding equivalent to a Hugging Face byte-level BPE `tokenizer.json` (or a directory holding
    one). Added tokens become special tokens (encode with `allowed_special=...` to recognise them in text).
    A byte with no token of its own is dropped, as `tokenizers` does (see ByteLevelBPE).
    Not reproduced: the post-processor (Llama 3's automatic <|begin_of_text|>: add it yourself) and an NFC
    normalizer (Qwen: text is taken as already NFC-normalised, as almost all text is)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    tj = json.loads(path.read_text(encoding="utf-8"))
    bpe = tj["model"]
    if bpe.get("type") != "BPE" or bpe.get("byte_fallback") or bpe.get("continuing_subword_prefix") \
            or bpe.get("end_of_word_suffix") or bpe.get("dropout"):
        raise ValueError(f"{path}: only plain byte-level BPE models are supported")
    norm = tj.get("normalizer")
    if norm and norm["type"] != "NFC" and not (norm["type"] == "Sequence" and not norm["normalizers"]):
        raise ValueError(f"{path}: unsupported normalizer {norm['type']!r}")
    pattern = _split_pattern(tj.get("pre_tokenizer"))
    added = {t["content"]: t["id"] for t in tj.get("added_tokens", [])}
    _check_merges(bpe, added)
    to_byte, ranks = byte_level_alphabet(), {}
    for token, i in bpe["vocab"].items():
        if token in added:
            continue
        if any(c not in to_byte for c in token):
            raise ValueError(f"{path}: vocab token {token!r} is not in the byte-level alphabet")
        ranks[bytes(to_byte[c] for c in token)] = i
    absent = bytes(b for b in range(256) if bytes([b]) not in ranks)
    return ByteLevelBPE(name=path.parent.name or "hf", pat_str=pattern, mergeable_ranks=ranks,
                        special_tokens=added, absent=absent)


class ByteLevelBPE(tiktoken.Encoding):
    """A tiktoken encoding whose vocabulary may lack a token for some single bytes (SmolLM2's has none for
    21 bytes, e.g. 0x04 and 0xF1). HF tokenizers' BPE, with no unk token, drops such a byte from its
    pre-tokenized piece and merges what is left; tiktoken would fail on it. Text without those bytes (nearly
    all text) takes tiktoken's fast path; other text is split here with the same regex and each piece, its
    absent bytes deleted, is merged by tiktoken."""

    def __init__(self, *, absent: bytes = b"", **kwargs):
        super().__init__(**kwargs)
        self.absent = absent
        self._split = regex.compile(self._pat_str)

    def __getstate__(self):  # pickled (e.g. for worker processes) with the absent bytes
        return {**super().__getstate__(), "absent": self.absent}

    def _has_absent(self, text: str) -> bool:
        if not self.absent:
            return False
        raw = text.encode("utf-8", "replace")
        return len(raw.translate(None, self.absent)) != len(raw)

    def encode_ordinary(self, text: str) -> list[int]:
        if not self._has_absent(text):
            return super().encode_ordinary(text)
        out = []
        for piece in self._split.findall(text):
            kept = piece.encode("utf-8", "replace").translate(None, self.absent)
            out += self._encode_single_piece(kept) if kept else []
        return out

    def encode(self, text: str, *, allowed_special=frozenset(), disallowed_special="all") -> list[int]:
        if not self._has_absent(text):
            return super().encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special)
        allowed = self.special_tokens_set if allowed_special == "all" else set(allowed_special)
        disallowed = self.special_tokens_set - allowed if disallowed_special == "all" else set(disallowed_special)
        if found := sorted(s for s in disallowed if s in text):
            raise ValueError(f"text contains the special token {found[0]!r}: pass allowed_special= to encode it "
                             "as one token, or disallowed_special=() to encode it as text")
        if not allowed:
            return self.encode_ordinary(text)
        # allowed special tokens are cut out first (the longest where two start at one place); between them is text
        out, alternation = [], "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True))
        for i, chunk in enumerate(regex.split(f"({alternation})", text)):
            out += [self.encode_single_token(chunk)] if i % 2 else self.encode_ordinary(chunk)
        return out

