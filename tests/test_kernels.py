"""Specifications of nanorlvr/papers/kernels.py: each Triton kernel computes what its torch reference does.

Without a GPU the kernels run in Triton's interpreter (conftest.py switches it on), which is slow, so
shapes stay small, except a vocabulary of a few blocks that is no multiple of the block, split over
chunks. With a GPU the same tests check the compiled kernels on CUDA tensors. Without one, a last test
still compiles every kernel for an H100 (bench/kernel_compile.py), which the interpreter cannot vouch for.
"""

import importlib.util
import math
import os
import subprocess
import sys

import pytest
import torch

if not torch.cuda.is_available():  # before anything imports triton (conftest.py has already done it)
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")
from nanorlvr.papers import kernels as K  # noqa: E402
from margins import assert_clear_argmax  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
LONG_V = 2 * K.BLOCK + 452  # three blocks, the last one partial
CHI2_999 = {7: 24.32}  # chi-square 0.999 quantile by degrees of freedom


def logits(B, V, dtype=torch.float32, seed=0):
    """Related logit rows a, b of shape (B, V), strided: the rows are slices of (B, 3, V) tensors."""
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(B, 3, V, generator=g)
    y = x + torch.randn(B, 3, V, generator=g)
    x, y = x.to(DEV, dtype), y.to(DEV, dtype)
    return x[:, -1, :], y[:, 0, :]


def rel_err(out, ref):
    return ((out - ref).norm() / ref.norm()).item()


CASES = [  # (B, V, dtype, chunks): B = 5 leaves 3 padding rows in the second group of 4
    (5, 37, torch.float32, None),
    (3, LONG_V, torch.float32, 2),
    (5, LONG_V, torch.bfloat16, None),
]


@pytest.mark.parametrize("mode,coef", [("logits", 1.5), ("dlogp", 0.1)])
@pytest.mark.parametrize("B,V,dtype,chunks", CASES)
def test_logprobs_kernel_matches_reference(mode, coef, B, V, dtype, chunks):
    a, b = logits(B, V, dtype)
    assert a.stride(0) == 3 * V  # rows are not contiguous
    out = K.mix_logprobs_triton(a, b, mode, coef, temperature=0.7, chunks=chunks)
    ref = K.mix_logprobs_torch(a, b, mode, coef, temperature=0.7)
    assert out.shape == (B, V) and out.dtype == torch.float32
    # bf16 inputs too: kernel and reference both upcast to fp32 before any arithmetic
    assert rel_err(out, ref) < 1e-5


@pytest.mark.parametrize("B,V,dtype,chunks", CASES)
def test_token_dlogp_kernel_matches_reference(B, V, dtype, chunks):
    a, b = logits(B, V, dtype, seed=1)
    tokens = torch.randint(V, (B,), generator=torch.Generator().manual_seed(1)).to(DEV)
    out = K.token_dlogp_triton(a, b, tokens, chunks=chunks)
    ref = K.token_dlogp_torch(a, b, tokens)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode,coef", [("logits", 1.5), ("dlogp", 0.1)])
def test_greedy_sample_is_argmax_of_mixed_logits(mode, coef):
    a, b = logits(6, LONG_V, seed=2)
    mixed = K.mixed_logits_torch(a, b, mode, coef)
    assert_clear_argmax(mixed)
    ref = mixed.argmax(-1)
    assert torch.equal(K.mix_sample_triton(a, b, mode, coef, temperature=0.0, chunks=2), ref)
    assert torch.equal(K.mix_sample_torch(a, b, mode, coef, temperature=0.0), ref)


def test_greedy_ties_pick_the_smallest_token_id_across_chunks():
    a, b = logits(2, LONG_V, seed=3)
    a[:, [7, K.BLOCK + 5]] = 100.0  # same maximum in both chunks
    b[:, [7, K.BLOCK + 5]] = 100.0
    out = K.mix_sample_triton(a, b, "logits", 1.5, temperature=0.0, chunks=2)
    assert out.tolist() == [7, 7]


def test_zero_temperature_logprobs_are_one_hot_at_the_argmax():
    a, b = logits(3, 37, seed=4)
    out = K.mix_logprobs_triton(a, b, "logits", 1.5, temperature=0.0)
    mixed = K.mixed_logits_torch(a, b, "logits", 1.5)
    assert_clear_argmax(mixed)
    top = mixed.argmax(-1)
    assert torch.equal(out.exp(), torch.nn.functional.one_hot(top, 37).float())
    assert torch.equal(K.mix_logprobs_torch(a, b, "logits", 1.5, temperature=0.0), out)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_zero_coef_reduces_to_one_model(impl):
    a, b = logits(3, 37, seed=5)
    alpha0 = K.mix_logprobs(a, b, "logits", 0.0, temperature=0.6, impl=impl)
    gamma0 = K.mix_logprobs(a, b, "dlogp", 0.0, temperature=0.6, impl=impl)
    assert rel_err(alpha0, (a.float() / 0.6).log_softmax(-1)) < 1e-6  # alpha = 0: the earlier model a
    assert rel_err(gamma0, (b.float() / 0.6).log_softmax(-1)) < 1e-6  # gamma = 0: the RL model b


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_dlogp_mode_is_policy_times_probability_ratio_to_the_gamma(impl):
    a, b = logits(3, 37, seed=6)
    pa, pb = a.double().softmax(-1), b.double().softmax(-1)
    extrap = pb * (pb / pa) ** 0.1  # paper 1: pi_RL * (pi_RL / pi_base)^gamma, renormalised
    out = K.mix_logprobs(a, b, "dlogp", 0.1, impl=impl)
    assert rel_err(out.double().exp(), extrap / extrap.sum(-1, keepdim=True)) < 1e-5


@pytest.mark.parametrize("impl,rounds", [("torch", None), ("triton", 10), ("triton", 7)])
def test_gumbel_samples_follow_the_mixed_distribution(impl, rounds, monkeypatch):
    monkeypatch.setattr(K, "PHILOX_ROUNDS", rounds)  # 7 Philox rounds: the cheaper option bench/kernel_tune.py times
    n, V, T = 800, 8, 0.7
    a1 = torch.randn(V, generator=torch.Generator().manual_seed(7))
    b1 = a1 + (torch.linspace(-2, 1, V) - a1) / 1.5  # z = a + 1.5 (b - a) = linspace(-2, 1)
    a, b = a1.to(DEV).expand(n, V), b1.to(DEV).expand(n, V)  # one distribution, row stride 0
    tokens = K.mix_sample(a, b, "logits", 1.5, temperature=T, seed=123, impl=impl)
    counts = torch.bincount(tokens.cpu(), minlength=V).double()
    expected = n * K.mix_logprobs_torch(a1[None], b1[None], "logits", 1.5, T)[0].double().exp()
    assert expected.min() > 5  # the chi-square approximation holds
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < CHI2_999[V - 1], (counts, expected)


def test_sample_is_reproducible_per_seed_and_varies_across_seeds():
    a, b = logits(8, 50, seed=8)
    a, b = a / 10, b / 10  # flat distributions: many likely tokens
    s1 = K.mix_sample_triton(a, b, "dlogp", 0.1, seed=1)
    assert torch.equal(s1, K.mix_sample_triton(a, b, "dlogp", 0.1, seed=1))
    assert not torch.equal(s1, K.mix_sample_triton(a, b, "dlogp", 0.1, seed=2))
    assert s1.dtype == torch.int64 and ((0 <= s1) & (s1 < 50)).all()


def test_auto_dispatch_uses_triton_only_for_cuda_tensors():
    a, b = logits(2, 37, seed=9)
    assert K._use_triton("auto", a) == a.is_cuda
    assert K._use_triton("torch", a) is False and K._use_triton("triton", a) is True


@pytest.mark.skipif(importlib.util.find_spec("triton.backends.nvidia") is None, reason="Triton has no CUDA backend here")
def test_every_kernel_compiles_for_an_h100():
    # the interpreter above accepts Python that Triton's compiler refuses; compile each launch for sm_90
    script = os.path.join(os.path.dirname(__file__), "..", "bench", "kernel_compile.py")
    run = subprocess.run([sys.executable, "-W", "ignore", script, "--sm=90"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "kernel variants compiled for sm_90" in run.stdout


# hand-computed values of the two papers' formulas
def test_logits_extrapolation_hand_numbers():
    z = K.mixed_logits_torch(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]]), "logits", 1.5)[0]
    assert torch.allclose(z, torch.tensor([1.5, 1.0]))


def test_direction_extrapolation_scores_hand_numbers():
    # pi_base = (1/2, 1/2), pi_RL = (3/4, 1/4), gamma = 0.1: score = 1.1 log pi_RL - 0.1 log pi_base
    s = K.mixed_logits_torch(torch.zeros(1, 2), torch.log(torch.tensor([[3.0, 1.0]])), "dlogp", 0.1)[0]
    expect = torch.tensor([1.1 * math.log(0.75) - 0.1 * math.log(0.5), 1.1 * math.log(0.25) - 0.1 * math.log(0.5)])
    assert torch.allclose(s, expect)
    # softmax of the score is pi_RL (pi_RL / pi_base)^gamma, normalised: proportional to 0.75 * 1.5^0.1, 0.25 * 0.5^0.1
    q = torch.tensor([0.75 * 1.5 ** 0.1, 0.25 * 0.5 ** 0.1])
    assert torch.allclose(torch.softmax(s, -1), q / q.sum())
