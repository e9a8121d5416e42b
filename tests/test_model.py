"""The GPT: cached decoding equals a full forward, for every family the config covers."""
import pytest
import torch

from nanorlvr.model import GPT, GPTConfig, KVCache

VARIANTS = {
    "llama": dict(),
    "gpt2": dict(arch="gpt2"),
    "qwen2-gqa-bias": dict(n_kv_head=2, qkv_bias=True, tie_embeddings=False),
    "qwen3-qknorm-headdim": dict(n_kv_head=2, qk_norm=True, head_dim=48),
    "llama3-rope-scaling": dict(rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                                  high_freq_factor=4.0, original_max_position_embeddings=16)),
}


def tiny(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, n_layer=2, n_head=4, n_embd=64, max_seq_len=64, **kw)).eval()


@pytest.mark.parametrize("name", VARIANTS)
def test_kv_cached_logits_equal_uncached(name):
    model = tiny(**VARIANTS[name])
    x = torch.randint(0, 97, (3, 20))
    full = model(x)
    cache = KVCache(model.config, 3, 32, "cpu", torch.float32)
    parts = [model(x[:, :7], cache=cache)]                    # prefill
    for t in range(7, 20):                                    # then one token at a time
        parts.append(model(x[:, t:t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_logits_shape_and_causality():
    model = tiny()
    x = torch.randint(0, 97, (2, 10))
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 1) % 97  # changing the future must not change the past
    assert model(x).shape == (2, 10, 97)
    torch.testing.assert_close(model(x)[:, :6], model(y)[:, :6])


def test_last_only_gives_the_last_position_of_the_full_logits():
    model = tiny()
    x = torch.randint(0, 97, (2, 9))
    torch.testing.assert_close(model(x, last_only=True), model(x)[:, -1:])


def test_tied_head_shares_the_embedding():
    m = tiny()
    assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
    m2 = tiny(tie_embeddings=False)
    assert m2.lm_head.weight.data_ptr() != m2.model.embed_tokens.weight.data_ptr()


def test_grouped_query_attention_shapes():
    m = tiny(n_kv_head=1)
    assert m.model.layers[0].self_attn.k_proj.weight.shape == (16, 64)  # one kv head of head_dim 16
    assert m(torch.randint(0, 97, (1, 5))).shape == (1, 5, 97)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError):
        GPTConfig(n_head=4, n_kv_head=3)
    with pytest.raises(ValueError):
        GPTConfig(arch="mamba")
