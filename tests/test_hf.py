"""
HF checkpoints in and out, with transformers as the reference: tiny random GPT-2 / Llama / Qwen2 / Qwen3 models
saved by transformers load into our GPT with the same logits and greedy generations, our exports load back
into transformers with the same logits, and broken checkpoints fail with messages that name the problem.
"""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config, Qwen3Config

from nanorlvr.engine import generate
from nanorlvr.infra.hf import config_from_hf, config_to_hf, load_pretrained, save_pretrained
from nanorlvr.model import GPT, GPTConfig
from margins import assert_greedy_path_is_clear

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
CASES = ["gpt2-tied", "gpt2-untied", "llama-tied-llama3rope", "llama-untied", "qwen2-tied", "qwen3-untied"]


def hf_config(case):
    name, tie = case.split("-")[0], "-tied" in case
    # initializer_range 0.2 (not 0.02): peaked logits, so greedy generations vary instead of repeating one token
    common = dict(vocab_size=128, tie_word_embeddings=tie, initializer_range=0.2, bos_token_id=None,
                  eos_token_id=None, pad_token_id=None)
    if name == "gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=64, **common)
    llama_like = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, **common)
    if name == "llama":
        return LlamaConfig(rope_parameters=LLAMA3_ROPE if "llama3rope" in case else None, **llama_like)
    if name == "qwen2":
        return Qwen2Config(**llama_like)
    return Qwen3Config(head_dim=32, **llama_like)  # head_dim != hidden / heads, as in real Qwen3 models


def make_hf_model(case, seed=0):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(case)).eval()
    with torch.no_grad():  # biases and norm gains are initialised to 0 / 1: perturb them so they are tested
        for name, p in model.named_parameters():
            if "bias" in name or "norm" in name or name.split(".")[-2].startswith("ln"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def saved_hf_model(case, path):
    model = make_hf_model(case)
    model.save_pretrained(path)
    return model


def batch(seed=1, shape=(2, 12)):
    return torch.randint(0, 128, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", CASES)
def test_loaded_model_matches_transformers_logits_and_greedy_generation(tmp_path, case):
    ref = saved_hf_model(case, tmp_path)
    ours = load_pretrained(tmp_path)
    assert ours.config.tie_embeddings == ("-tied" in case)
    assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == ours.config.tie_embeddings
    x = batch()
    with torch.no_grad():
        assert (ours(x) - ref(x).logits).abs().max() < 1e-4
        want = ref.generate(x[:, :8], max_new_tokens=20, do_sample=False)[:, 8:].tolist()
    assert_greedy_path_is_clear(ours, x[:, :8].tolist(), want)
    assert generate(ours, x[:, :8].tolist(), 20, temperature=0.0).tokens == want


@pytest.mark.parametrize("case", CASES)
def test_exported_checkpoint_loads_in_transformers(tmp_path, case):
    src, dst = tmp_path / "src", tmp_path / "dst"
    saved_hf_model(case, src)
    (src / "tokenizer.json").write_text("{}")
    cfg = json.loads((src / "config.json").read_text())
    cfg["eos_token_id"] = 7
    (src / "config.json").write_text(json.dumps(cfg))
    ours = load_pretrained(src)
    save_pretrained(ours, dst, tokenizer_dir=src)
    assert (dst / "tokenizer.json").is_file() and (dst / "generation_config.json").is_file()
    exported = json.loads((dst / "config.json").read_text())
    assert exported["architectures"] == cfg["architectures"] and exported["eos_token_id"] == 7
    # tied weights are stored once, under the same names transformers uses
    assert sorted(load_file(dst / "model.safetensors")) == sorted(load_file(src / "model.safetensors"))
    ref = AutoModelForCausalLM.from_pretrained(dst).eval()
    x = batch()
    with torch.no_grad():
        assert (ours(x) - ref(x).logits).abs().max() < 1e-4
        assert torch.equal(ours(x), load_pretrained(dst)(x))


def test_toy_model_exports_as_llama_and_transformers_agrees(tmp_path):
    torch.manual_seed(0)
    ours = GPT(GPTConfig(n_layer=2, n_embd=64, max_seq_len=64))
    save_pretrained(ours, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    ref = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    x = torch.randint(0, ours.config.vocab_size, (2, 12))
    with torch.no_grad():
        assert (ours(x) - ref(x).logits).abs().max() < 1e-4
    assert load_pretrained(tmp_path).config == ours.config


def test_sharded_checkpoint_loads(tmp_path):
    ref = make_hf_model("qwen3-untied")
    ref.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    x = batch()
    with torch.no_grad():
        assert (load_pretrained(tmp_path)(x) - ref(x).logits).abs().max() < 1e-4


def test_gpt2_checkpoint_in_original_openai_layout_loads(tmp_path):
    # openai-community/gpt2 stores no "transformer." prefix and keeps the causal-mask buffers
    ref = saved_hf_model("gpt2-tied", tmp_path)
    sd = {k.removeprefix("transformer."): v for k, v in load_file(tmp_path / "model.safetensors").items()}
    sd.update({f"h.{i}.attn.bias": torch.ones(1, 1, 64, 64).tril() for i in range(2)})
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    x = batch()
    with torch.no_grad():
        assert (load_pretrained(tmp_path)(x) - ref(x).logits).abs().max() < 1e-4


def test_dtype_casts_weights_but_keeps_rope_in_fp32(tmp_path):
    saved_hf_model("llama-tied-llama3rope", tmp_path)
    model = load_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.inv_freq.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", ["gpt2-tied", "qwen2-tied"])
def test_loads_on_cuda_in_bf16_by_default_and_matches_transformers_bf16(tmp_path, case):
    saved_hf_model(case, tmp_path)
    ours = load_pretrained(tmp_path, device="cuda")
    assert {(p.device.type, p.dtype) for p in ours.parameters()} == {("cuda", torch.bfloat16)}
    ref = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).cuda().eval()
    x = batch().cuda()
    with torch.no_grad():  # logits reach ~6 here; bf16 vs fp32 differs by ~0.15, ours vs HF (both bf16) by < 0.05
        assert (ours(x).float() - ref(x).logits.float()).abs().max() < 0.1
        want = ref.generate(x[:, :8], max_new_tokens=20, do_sample=False)[:, 8:].tolist()
    assert generate(ours, x[:, :8].tolist(), 20, temperature=0.0).tokens == want


def test_config_round_trips_and_reads_legacy_rope_keys():
    for cfg in [GPTConfig(), GPTConfig(arch="gpt2", tie_embeddings=False), GPTConfig(qkv_bias=True, n_kv_head=2),
                GPTConfig(qk_norm=True, head_dim=64, rope_theta=1e6),
                GPTConfig(rope_theta=5e5, rope_scaling={k: v for k, v in LLAMA3_ROPE.items() if k != "rope_theta"})]:
        d = config_to_hf(cfg)
        assert config_from_hf(d) == cfg
        legacy = {k: v for k, v in d.items() if k != "rope_parameters"}  # transformers < 5 style
        assert config_from_hf(legacy) == cfg


def test_unsupported_architecture_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPTNeoXForCausalLM"]}))
    with pytest.raises(ValueError, match=r"unsupported architecture 'GPTNeoXForCausalLM'.*LlamaForCausalLM"):
        load_pretrained(tmp_path)
    with pytest.raises(ValueError, match="mlp_bias"):
        config_from_hf({**config_to_hf(GPTConfig()), "mlp_bias": True})


def test_missing_directory_and_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config_to_hf(GPTConfig())))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_pretrained(tmp_path)


def test_shape_mismatch_names_tensor_and_shapes(tmp_path):
    saved_hf_model("llama-untied", tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "vocab_size": 100}))
    with pytest.raises(ValueError, match=r"tensor (model.embed_tokens|lm_head).weight.*\(128, 64\).*\(100, 64\)"):
        load_pretrained(tmp_path)


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    saved_hf_model("gpt2-tied", tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    sd["transformer.extra.weight"] = sd.pop("transformer.h.1.mlp.c_fc.weight")
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing tensors \['model.layers.1.mlp.up_proj.weight'\].*extra.weight"):
        load_pretrained(tmp_path)
