"""Specification of nanorlvr.papers.extrapolate: weight extrapolation (Paper 2), rank-k updates and AlphaRL (Paper 3)."""


import pytest
import torch

import nanorlvr.papers.extrapolate as ex


def make_sd(seed, dtype=torch.float32):
    """A tiny Llama/Qwen-style state dict with one layer."""
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "model.embed_tokens.weight": (7, 4),
        "model.layers.0.self_attn.q_proj.weight": (4, 4),
        "model.layers.0.self_attn.q_proj.bias": (4,),
        "model.layers.0.self_attn.q_norm.weight": (4,),
        "model.layers.0.input_layernorm.weight": (4,),
        "model.layers.0.post_attention_layernorm.bias": (4,),
        "model.layers.0.mlp.up_proj.weight": (6, 4),
        "model.layers.0.mlp.down_proj.weight": (4, 6),
        "model.norm.weight": (4,),
        "lm_head.weight": (7, 4),
    }
    return {k: torch.randn(s, generator=g).to(dtype) for k, s in shapes.items()}


UPDATE = {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight",
          "model.layers.0.mlp.down_proj.weight"}
NORMS = {"model.layers.0.self_attn.q_norm.weight", "model.layers.0.input_layernorm.weight",
         "model.layers.0.post_attention_layernorm.bias", "model.norm.weight"}


def test_name_predicates():
    sd = make_sd(0)
    assert {n for n in sd if ex.is_norm(n)} == NORMS
    assert {n for n, t in sd.items() if ex.is_update_matrix(n, t)} == UPDATE


# ----------------------------------------------------------------------------- Paper 2

def test_extrapolation_alpha_one_returns_t1_and_alpha_zero_returns_t0_except_norms():
    sd0, sd1 = make_sd(0), make_sd(1)
    out1 = ex.extrapolate_weights(sd0, sd1, 1.0)
    out0 = ex.extrapolate_weights(sd0, sd1, 0.0)
    for n in sd1:
        assert torch.allclose(out1[n], sd1[n])
        assert torch.equal(out0[n], sd1[n] if n in NORMS else sd0[n])


def test_extrapolation_hand_numbers_and_norms_copied_from_t1():
    sd0 = {"lm_head.weight": torch.tensor([1.0, 2.0]), "model.norm.weight": torch.tensor([1.0, 1.0])}
    sd1 = {"lm_head.weight": torch.tensor([2.0, 1.0]), "model.norm.weight": torch.tensor([3.0, 4.0])}
    out = ex.extrapolate_weights(sd0, sd1, 1.5)
    assert torch.allclose(out["lm_head.weight"], torch.tensor([2.5, 0.5]))  # 1 + 1.5*1, 2 + 1.5*(-1)
    assert torch.equal(out["model.norm.weight"], torch.tensor([3.0, 4.0]))


def test_rl_extra_jump_hand_numbers():
    # m = 20, n = 100: W = W_s + 6 (W_{s+m} - W_s); 0.5 + 6*0.25 = 2.0, -1 + 6*(-0.5) = -4
    sd_s = {"model.layers.0.mlp.up_proj.weight": torch.tensor([[0.5, -1.0]]), "model.norm.weight": torch.ones(2)}
    sd_sm = {"model.layers.0.mlp.up_proj.weight": torch.tensor([[0.75, -1.5]]), "model.norm.weight": torch.full((2,), 2.0)}
    out = ex.rl_extra_jump(sd_s, sd_sm, 20, 100)
    assert torch.allclose(out["model.layers.0.mlp.up_proj.weight"], torch.tensor([[2.0, -4.0]]))
    assert torch.equal(out["model.norm.weight"], torch.full((2,), 2.0))


def test_extrapolation_keeps_bf16_dtype_and_computes_difference_in_float32():
    sd0 = {"lm_head.weight": torch.tensor([1.0], dtype=torch.bfloat16)}
    sd1 = {"lm_head.weight": torch.tensor([1.0078125], dtype=torch.bfloat16)}  # one bf16 ulp above 1
    out = ex.extrapolate_weights(sd0, sd1, 2.0)["lm_head.weight"]
    assert out.dtype == torch.bfloat16 and out.item() == 1.015625


def test_mismatched_keys_raise():
    with pytest.raises(KeyError):
        ex.extrapolate_weights({"a": torch.ones(1)}, {"b": torch.ones(1)}, 2.0)


# ----------------------------------------------------------------------------- Paper 3: rank-k

def test_top_component_of_rank_one_matrix():
    u, v = torch.tensor([3.0, 4.0]), torch.tensor([1.0, 0.0, 0.0])
    s1, u1, v1 = ex.top_component(torch.outer(u, v))
    assert torch.isclose(s1, torch.tensor(5.0))
    assert torch.allclose(s1 * torch.outer(u1, v1), torch.outer(u, v), atol=1e-6)


def test_rank_one_of_rank_one_update_is_exact():
    g = torch.Generator().manual_seed(0)
    Wb = torch.randn(5, 3, generator=g)
    Wrl = Wb + torch.outer(torch.randn(5, generator=g), torch.randn(3, generator=g))
    assert torch.allclose(ex.rank_k_update(Wb, Wrl, 1), Wrl, atol=1e-5)


def test_rank_k_update_matches_the_update_norm_and_hand_example():
    # dW = diag(3, 4): top component is 4 e2 e2^T, rescaled to ||dW||_F = 5
    Wb = torch.zeros(2, 2)
    out = ex.rank_k_update(Wb, torch.diag(torch.tensor([3.0, 4.0])), 1)
    assert torch.allclose(out, torch.tensor([[0.0, 0.0], [0.0, 5.0]]), atol=1e-6)
    g = torch.Generator().manual_seed(1)
    Wb, Wrl = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    for k in (1, 2):
        assert torch.isclose(torch.linalg.norm(ex.rank_k_update(Wb, Wrl, k) - Wb), torch.linalg.norm(Wrl - Wb))
    assert torch.allclose(ex.rank_k_update(Wb, Wrl, 4), Wrl, atol=1e-5)  # full rank: identity


def test_rank_k_update_of_zero_update_returns_base():
    Wb = torch.randn(3, 3)
    assert torch.equal(ex.rank_k_update(Wb, Wb.clone(), 1), Wb)


def test_rank_k_state_dict_touches_only_update_matrices_and_reports_shares():
    sd_b, sd_rl = make_sd(0), make_sd(1)
    dW_up = torch.tensor([[3.0, 0, 0, 0], [0, 4, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [3, 0, 0, 0], [0, 4, 0, 0]])
    sd_rl["model.layers.0.mlp.up_proj.weight"] = sd_b["model.layers.0.mlp.up_proj.weight"] + dW_up
    out, shares = ex.rank_k_state_dict(sd_b, sd_rl, 1)
    assert set(shares) == UPDATE
    for n in sd_b:
        if n not in UPDATE:
            assert torch.equal(out[n], sd_b[n])
    # dW_up has orthogonal columns of squared norms 18 and 32: s^2 = 32, 18 -> share 32/50
    assert abs(shares["model.layers.0.mlp.up_proj.weight"] - 32 / 50) < 1e-6
    dW = sd_rl["model.layers.0.self_attn.q_proj.weight"] - sd_b["model.layers.0.self_attn.q_proj.weight"]
    s = torch.linalg.svdvals(dW)
    assert abs(shares["model.layers.0.self_attn.q_proj.weight"] - (s[0] ** 2 / (s ** 2).sum()).item()) < 1e-6


# ----------------------------------------------------------------------------- Paper 3: AlphaRL

def linear_rank_one_trajectory(steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    W0 = torch.randn(5, 4, generator=g)
    u, v = torch.randn(5, generator=g), torch.randn(4, generator=g)
    return W0, u, v, [W0 + k * torch.outer(u, v) for k in steps]


def test_linear_fit_predict_hand_numbers():
    # points (0,1), (1,3), (2,5): line 1 + 2x -> 11 at x = 5; second column constant 7
    y = torch.tensor([[1.0, 7.0], [3.0, 7.0], [5.0, 7.0]])
    assert torch.allclose(ex.linear_fit_predict(y, torch.tensor([0.0, 1.0, 2.0]), 5.0), torch.tensor([11.0, 7.0]))


def test_alpharl_predicts_an_exactly_linear_rank_one_trajectory():
    steps = [10, 20, 30]
    W0, u, v, window = linear_rank_one_trajectory(steps)
    pred = ex.alpharl_predict(W0, window, steps, 100)
    assert torch.allclose(pred, W0 + 100 * torch.outer(u, v), atol=1e-4)


@pytest.mark.parametrize("flips", [(True, False, False), (False, True, False), (False, False, True), (True, False, True)])
def test_alpharl_is_invariant_to_svd_sign_flips(monkeypatch, flips):
    # the SVD may return (-u1, -v1) for any checkpoint; inject that and check the prediction is unchanged
    steps = [10, 20, 30]
    W0, u, v, window = linear_rank_one_trajectory(steps, seed=3)
    real, calls = ex.top_component, []

    def flipped(dW):
        s, u1, v1 = real(dW)
        flip = flips[len(calls)]
        calls.append(flip)
        return (s, -u1, -v1) if flip else (s, u1, v1)

    monkeypatch.setattr(ex, "top_component", flipped)
    pred = ex.alpharl_predict(W0, window, steps, 75)
    assert len(calls) == 3
    assert torch.allclose(pred, W0 + 75 * torch.outer(u, v), atol=1e-4)


def test_alpharl_add_to_wk_double_counts_the_window_update():
    steps = [1, 2, 4]
    W0, u, v, window = linear_rank_one_trajectory(steps)
    pred = ex.alpharl_predict(W0, window, steps, 10, add_to="wk")
    assert torch.allclose(pred, W0 + (4 + 10) * torch.outer(u, v), atol=1e-4)


def test_alpharl_window_may_include_w0_as_a_zero_point():
    # a_0 = 0 at step 0 plus a_k at 1: line through (0, 0) and (1, a_1) -> a* = 3 a_1
    W0, u, v, window = linear_rank_one_trajectory([0, 1])
    assert torch.allclose(ex.alpharl_predict(W0, window, [0, 1], 3), W0 + 3 * torch.outer(u, v), atol=1e-5)


def test_alpharl_state_dict_predicts_matrices_and_copies_the_rest_from_last_window():
    steps = [1, 2]
    sd0 = make_sd(0)
    g = torch.Generator().manual_seed(5)
    uv = {n: torch.outer(torch.randn(t.shape[0], generator=g), torch.randn(t.shape[1], generator=g))
          for n, t in sd0.items() if n in UPDATE}
    window = []
    for k in steps:
        sd = {n: t + k * uv[n] if n in UPDATE else make_sd(10 + k)[n] for n, t in sd0.items()}
        window.append(sd)
    out = ex.alpharl_state_dict(sd0, window, steps, 5)
    for n in sd0:
        expect = sd0[n] + 5 * uv[n] if n in UPDATE else window[-1][n]
        assert torch.allclose(out[n], expect, atol=1e-4)


def test_alpharl_needs_two_distinct_steps():
    W0, _, _, window = linear_rank_one_trajectory([1, 1])
    with pytest.raises(ValueError):
        ex.alpharl_predict(W0, window, [1, 1], 5)
    with pytest.raises(ValueError):
        ex.alpharl_predict(W0, window[:1], [1], 5)


def test_rl_extra_jumps_only_at_segment_ends_by_eq3_and_stops_at_the_last_step():
    # m = 2 real steps, then n = 3 virtual: W = W_s + (5/2)(W_{s+2} - W_s) for weights, norms from W_{s+2}
    model = torch.nn.ModuleDict({"proj": torch.nn.Linear(3, 2), "norm": torch.nn.LayerNorm(2)})
    extra = ex.RLExtra(2, 3)
    extra.start(0, model)
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    assert extra.jump(model, real_steps=1, step=1, total_steps=100) == 0  # mid-segment: nothing moves
    assert extra.jump(model, real_steps=2, step=2, total_steps=100) == 3
    for k, v in model.state_dict().items():
        expected = w0[k] + 0.5 if ex.is_norm(k) else w0[k] + 2.5 * 0.5
        torch.testing.assert_close(v, expected)
    assert extra.segment_start[0] == 5 and torch.equal(extra.segment_start[1]["proj.weight"], model.proj.weight)
    assert extra.jump(model, real_steps=4, step=6, total_steps=7) == 1  # cut at total_steps
    assert ex.RLExtra(0, 3).jump(model, real_steps=2, step=2, total_steps=100) == 0  # m = 0: RL-Extra off


def test_alpharl_rescaled_gives_the_window_update_its_full_frobenius_norm():
    # dW_K = rank-1 s u v^T plus a small orthogonal rank-1 part: predicting step K itself (a* = a_K), the
    # rescaled update has ||dW_K||_F, the unscaled one only s1 (hand-computed: sqrt(3^2 + 1^2) vs 3)
    W0 = torch.zeros(4, 3)
    a, b = torch.eye(4), torch.eye(3)
    dW1, dW2 = 1.5 * torch.outer(a[0], b[0]), 3.0 * torch.outer(a[0], b[0]) + torch.outer(a[1], b[1])
    plain = ex.alpharl_predict(W0, [dW1, dW2], [1, 2], 2)
    scaled = ex.alpharl_predict(W0, [dW1, dW2], [1, 2], 2, rescale=True)
    assert torch.linalg.matrix_norm(plain - W0).item() == pytest.approx(3.0, rel=1e-5)
    assert torch.linalg.matrix_norm(scaled - W0).item() == pytest.approx(10 ** 0.5, rel=1e-5)
    assert torch.allclose(scaled - W0, (plain - W0) * 10 ** 0.5 / 3, atol=1e-5)  # same direction
