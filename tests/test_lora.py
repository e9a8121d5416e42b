"""
LoRA (nanorlvr/lora.py): step 0 is exactly the base, only the adapters learn, the merged weights are
W + (alpha / r) B A, PEFT loads the saved adapter onto the base and gives the merged checkpoint's logits,
the memory estimate counts adapters only, and train.py resumes a LoRA run bit-exactly.
"""
import copy
import json

import pytest
import torch
from safetensors.torch import load_file

import train
from killed import main_killed_after
from nanorlvr import lora
from nanorlvr.infra import checkpoint as ckpt
from nanorlvr.infra import precision as prec
from nanorlvr.infra.common import UsageError
from nanorlvr.model import GPT, GPTConfig

ARCHS = {"llama": dict(), "qwen2": dict(qkv_bias=True), "qwen3": dict(qk_norm=True),
         "gpt2": dict(arch="gpt2")}


def tiny(arch="llama", seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=64, n_layer=2, n_head=4, n_kv_head=2 if arch != "gpt2" else 0, n_embd=32,
                         max_seq_len=32, tie_embeddings=arch in ("llama", "gpt2"), **ARCHS[arch])).eval()


def randomise_b(model, seed=1):
    """B away from its zero init (as after training), so that the adapters change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora.adapters(model).values():
            m.lora_B.copy_(0.05 * torch.randn(m.lora_B.shape, generator=g))


IDX = torch.randint(0, 64, (3, 12), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("arch", ARCHS)
def test_at_step_0_the_adapted_model_and_its_merged_copy_give_exactly_the_base_logits(arch):
    base = tiny(arch)
    model = copy.deepcopy(base)
    names = lora.add_adapters(model, rank=2, alpha=32, seed=0)
    per_layer = 6 if arch == "gpt2" else 7  # q, k, v, o (+ gate), up, down
    assert len(names) == 2 * per_layer
    assert all(m.lora_A.abs().sum() > 0 for m in lora.adapters(model).values())  # A random, B zero
    with torch.no_grad():
        assert torch.equal(model(IDX), base(IDX))
        assert torch.equal(prec.SamplingCopy(model, "fp32").get()(IDX), base(IDX))


def test_only_the_adapters_get_gradients_and_change():
    model = tiny()
    lora.add_adapters(model, rank=2, alpha=32, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = train.make_optimizer(model, 0.1, 0.0)
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == \
        {id(p) for m in lora.adapters(model).values() for p in (m.lora_A, m.lora_B)}
    for _ in range(2):  # step 1 moves B only (B = 0: A's gradient is exactly 0), step 2 A too
        optimizer.zero_grad()
        model(IDX).logsumexp(-1).mean().backward()
        optimizer.step()
    for name, p in model.named_parameters():
        if name.endswith(("lora_A", "lora_B")):
            assert not torch.equal(p, before[name]), name
        else:
            assert p.grad is None and torch.equal(p, before[name]), name


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])
def test_merged_weights_are_w_plus_alpha_over_r_b_a(precision):
    model = tiny()
    lora.add_adapters(model, rank=3, alpha=8, targets=("q_proj", "down_proj"), seed=0)
    copy_ = prec.SamplingCopy(model, precision)  # made at step 0, refreshed by get() after training moved B
    randomise_b(model)
    merged = lora.merged_state_dict(model)
    sampler = copy_.get()
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    for name, m in lora.adapters(model).items():
        want = m.weight.double() + (8 / 3) * m.lora_B.double() @ m.lora_A.double()
        torch.testing.assert_close(merged[f"{name}.weight"].double(), want, rtol=1e-6, atol=1e-7)
        assert torch.equal(sampler.get_submodule(name).weight, merged[f"{name}.weight"].to(dtype))
    assert not any(k.endswith(("lora_A", "lora_B")) for k in merged)
    assert torch.equal(merged["model.layers.0.self_attn.k_proj.weight"],  # not a target: the base
                       model.model.layers[0].self_attn.k_proj.weight)
    if precision == "fp32":  # the unmerged training forward and the merged sampler differ by rounding only
        with torch.no_grad():
            torch.testing.assert_close(sampler(IDX), model(IDX), rtol=1e-5, atol=1e-5)


def test_base_view_is_the_model_with_its_adapters_off():
    base = tiny()
    model = copy.deepcopy(base)
    lora.add_adapters(model, rank=2, alpha=32, seed=0)
    randomise_b(model)
    with torch.no_grad():
        assert torch.equal(lora.BaseView(model)(IDX), base(IDX))
        assert not torch.equal(model(IDX), base(IDX))  # and on again afterwards


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_peft_loads_the_saved_adapter_onto_the_base_and_gives_the_merged_checkpoints_logits(arch, tmp_path):
    transformers, peft = pytest.importorskip("transformers"), pytest.importorskip("peft")
    model = tiny(arch)
    ckpt.save_model(model, tmp_path / "base")
    lora.add_adapters(model, rank=2, alpha=16, seed=0)
    randomise_b(model)
    ckpt.save_model(model, tmp_path / "step")
    hf_base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    # PEFT's own layout for this model: the same tensor names and shapes as ours
    ref = peft.get_peft_model(copy.deepcopy(hf_base), peft.LoraConfig(r=2, lora_alpha=16, target_modules=list(lora.TARGETS)))
    want = {k: v.shape for k, v in peft.get_peft_model_state_dict(ref).items()}
    ours = load_file(tmp_path / "step" / lora.ADAPTER_DIR / lora.ADAPTER_WEIGHTS)
    assert {k: v.shape for k, v in ours.items()} == want
    with torch.no_grad():
        adapted_model = peft.PeftModel.from_pretrained(hf_base, tmp_path / "step" / lora.ADAPTER_DIR).eval()
        adapted = adapted_model(IDX).logits
        merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "step").eval()(IDX).logits
        with adapted_model.disable_adapter():
            plain = adapted_model(IDX).logits
    assert (merged - plain).abs().max() > 1e-3  # the adapter matters
    torch.testing.assert_close(adapted, merged, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged, model(IDX).detach(), rtol=1e-5, atol=1e-5)  # transformers reads it as is


def test_memory_estimate_counts_gradients_and_adamw_of_the_adapters_only():
    mcfg = GPTConfig(n_layer=1, n_embd=32, n_head=2, vocab_size=64)  # intermediate 96, kv width 32
    a = 3 * (4 * (32 + 32) + 3 * (32 + 96))  # rank 3: q, k, v, o (32 -> 32), gate, up, down (32 <-> 96)
    model = GPT(mcfg)
    lora.add_adapters(model, rank=3, alpha=32)
    assert lora.count_adapter_params(mcfg, 3) == a == sum(p.numel() for p in lora.trainable(model))
    kw = dict(gen_rows=4, update_rows=2, prompt_len=8, new_tokens=8, precision="bf16-mixed", kl=True)
    full, low = prec.memory_estimate(mcfg, **kw), prec.memory_estimate(mcfg, **kw, lora_rank=3)
    n = full["params"]
    assert (low["grads"], low["adamw"], low["ref_model"]) == (4 * a, 8 * a, 0)
    assert low["weights"] == 4 * n + 4 * a and low["sampling_copy"] == 2 * n
    assert full["grads"] == 4 * n and full["ref_model"] == 2 * n


@pytest.mark.parametrize("arg", ["--lora_rank=-1", "--lora_alpha=0", "--lora_targets=q_proj,lm_head",
                                 "--lora_targets=", "--stage=sft --lora_rank=1"])
def test_bad_lora_flags_are_usage_errors_naming_the_flag(arg, tmp_path):
    with pytest.raises(UsageError, match="--lora_"):
        train.parse_config(train.TrainConfig, arg.split() + [f"--base_dir={tmp_path}"])

# -----------------------------------------------------------------------------
# train.py with LoRA: resume is bit-exact


TINY = ["--n_layer=2", "--n_embd=64", "--n_head=2", "--n_ops=1", "--max_num=9", "--p_direct=0", "--n_train=200",
        "--n_test=16", "--n_eval=16", "--eval_k=2", "--prompts_per_step=4", "--group_size=8", "--max_new_tokens=16",
        "--warmup=1", "--threads=1", "--verify_workers=1"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("lora")
    train.main(TINY + ["--stage=sft", "--sft_steps=100", "--sft_batch=32", f"--data_dir={d}/data",
                       f"--base_dir={d}/base"])
    return d


def grpo(base, out, halt_after=0):
    # LoRA with the KL term (the reference: the base, adapters off) and gradient checkpointing
    args = TINY + ["--stage=grpo", f"--data_dir={base}/data", f"--base_dir={base}/base", f"--out_dir={out}",
                   "--steps=4", "--save_every=2", "--lr=3e-2", "--lora_rank=2", "--kl_coef=0.05", "--grad_ckpt=true"]
    args += ["--resume=true"] if halt_after == 0 and (out / "grpo").exists() else []
    return main_killed_after(train, args, halt_after) if halt_after else train.main(args)


def test_a_resumed_lora_run_ends_with_the_weights_and_adapter_of_an_uninterrupted_one(base, tmp_path):
    grpo(base, tmp_path / "a")
    grpo(base, tmp_path / "b", halt_after=3)  # "killed" after step 3, saved at 2
    grpo(base, tmp_path / "b")                # resumed from step 2
    a, b = tmp_path / "a/grpo/step_000004", tmp_path / "b/grpo/step_000004"
    wa, wb, w0 = (ckpt.load_model(p).state_dict() for p in (a, b, tmp_path / "a/grpo/step_000000"))
    assert not all(torch.equal(wa[k], w0[k]) for k in wa), "training changed nothing"
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ad_a, ad_b = a / lora.ADAPTER_DIR, b / lora.ADAPTER_DIR
    assert (ad_a / lora.ADAPTER_WEIGHTS).read_bytes() == (ad_b / lora.ADAPTER_WEIGHTS).read_bytes()
    assert json.loads((ad_a / lora.ADAPTER_CONFIG).read_text())["r"] == 2
    # the embedding, norms and head are the base's: only the adapted matrices moved
    assert torch.equal(wa["model.embed_tokens.weight"], w0["model.embed_tokens.weight"])
    assert torch.equal(wa["model.norm.weight"], w0["model.norm.weight"])


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_a_saved_lora_checkpoint_loads_back_as_the_merged_model(arch, tmp_path):
    model = tiny(arch)
    lora.add_adapters(model, rank=2, alpha=32, seed=0)
    randomise_b(model)
    ckpt.save_model(model, tmp_path / "step")
    with torch.no_grad():
        torch.testing.assert_close(ckpt.load_model(tmp_path / "step")(IDX), model(IDX), rtol=1e-5, atol=1e-5)
    # GPT-2's fused attention has no per-matrix PEFT adapter: merged weights only
    assert (tmp_path / "step" / lora.ADAPTER_DIR).is_dir() == (arch != "gpt2")
