"""Lock-step decoding of two models: it equals mixing uncached full forwards, reduces to plain decoding at
coef 0, and the replacement gate fires exactly where its criterion holds."""
import pytest
import torch

from nanorlvr.papers.stats import token_metrics
from nanorlvr.engine import generate
from nanorlvr.papers.kernels import mixed_logits_torch
from nanorlvr.papers.lockstep import generate_lockstep
from nanorlvr.model import GPT, GPTConfig


PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11], [12], [13, 14, 15, 16]]
STOPS = [2, 16]
# every decision of the reference decoder (an argmax, a gate) must clear its boundary by this much: far above
# fp32 rounding, so the cached and uncached paths decide alike on any CPU, whatever its summation order
MARGIN = 1e-4


def clear_argmax(logits):
    """The argmax of (1, V) logits, asserting that the runner-up is not within MARGIN (no near-tie)."""
    top = logits[0].topk(2).values
    assert top[0] - top[1] > MARGIN, f"near-tie in the reference decoder: {top.tolist()}"
    return int(logits[0].argmax())


def tiny(seed, arch="llama"):
    """A random model with peaked logits (std 0.3 weights), so greedy choices have clear margins."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(arch=arch, vocab_size=24, n_layer=2, n_head=2, n_embd=32, max_seq_len=64)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


def uncached(model_a, model_b, prompt, n, step):
    """Reference decoder: full forwards of both models on the whole sequence at every step, no cache.
    step(la, lb) -> (token, fired) with (1, V) logits."""
    seq, fired = list(prompt), []
    for _ in range(n):
        x = torch.tensor([seq])
        with torch.no_grad():
            tok, f = step(model_a(x)[:, -1], model_b(x)[:, -1])
        seq.append(tok)
        fired.append(f)
        if tok in STOPS:
            break
    return seq[len(prompt):], fired


def greedy_mix(mode, coef):
    return lambda la, lb: (clear_argmax(mixed_logits_torch(la, lb, mode, coef)), True)


def criterion_of(m, criterion):
    return {"dlogp": m["dlogp"], "kl": m["kl"], "entropy": m["entropy_base"]}[criterion]


def greedy_gate(mode, coef, criterion, tau):
    def step(la, lb):
        y = torch.tensor([clear_argmax(la)])
        x = criterion_of(token_metrics(la, lb, y), criterion)
        assert abs(float(x) - tau) > MARGIN, f"criterion {float(x)} within {MARGIN} of tau {tau}"
        fire = bool(x <= tau) if criterion == "dlogp" else bool(x >= tau)
        return (greedy_mix(mode, coef)(la, lb)[0] if fire else int(y)), fire
    return step


def widest_gap(values):
    """The midpoint of the widest gap between consecutive values of the middle third of `values` (sorted): a
    threshold near the median that splits them with no value near it (the median itself is one of them)."""
    v = values.detach().sort().values
    mid = v[len(v) // 3:2 * len(v) // 3 + 1]
    i = int((mid[1:] - mid[:-1]).argmax())
    return float(mid[i] + mid[i + 1]) / 2


def check_against_uncached(a, b, step, **kw):
    g = generate_lockstep(a, b, PROMPTS, 12, temperature=0, stop_ids=STOPS, **kw)
    for i, p in enumerate(PROMPTS):
        toks, fired = uncached(a, b, p, 12, step)
        assert g.tokens[i] == toks, (i, g.tokens[i], toks)
        assert g.fired[i, :len(toks)].tolist() == fired and not g.fired[i, len(toks):].any()
    return g


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("mode,coef", [("logits", 1.5), ("dlogp", 0.5)])
def test_dense_lockstep_equals_uncached_mixed_forwards(arch, mode, coef):
    a, b = tiny(0, arch), tiny(1, arch)
    g = check_against_uncached(a, b, greedy_mix(mode, coef), mode=mode, coef=coef)
    assert g.lengths.min() < g.lengths.max()  # rows left the batch while others kept decoding
    assert g.fired.sum() == g.lengths.sum() and g.replacement_ratio == 1.0


@pytest.mark.parametrize("criterion", ["dlogp", "kl", "entropy"])
def test_gated_lockstep_equals_uncached_and_fires_where_the_criterion_holds(criterion):
    a, b = tiny(0), tiny(1)
    # a threshold in the widest gap of the criterion's middle values on model a's own greedy tokens: some
    # positions fire, some not, and the reference decoder asserts that no position lies within MARGIN of it
    values = []
    for p, toks in zip(PROMPTS, generate(a, PROMPTS, 12, temperature=0).tokens):
        seq = torch.tensor([p + toks])
        m = token_metrics(a(seq)[0, len(p) - 1:-1], b(seq)[0, len(p) - 1:-1], seq[0, len(p):])
        values.append(criterion_of(m, criterion))
    tau = widest_gap(torch.cat(values))
    g = check_against_uncached(a, b, greedy_gate("dlogp", 0.3, criterion, tau), mode="dlogp", coef=0.3,
                               gate=criterion, tau=tau)
    assert 0 < g.fired.sum() < g.lengths.sum()


def test_sampled_tokens_kept_by_the_gate_pass_it_and_logprobs_are_of_their_distribution():
    a, b = tiny(0), tiny(1)
    tau, T = -0.5, 0.8
    g = generate_lockstep(a, b, PROMPTS, 10, "dlogp", 0.2, temperature=T, gate="dlogp", tau=tau, seed=0)
    for i, p in enumerate(PROMPTS):
        seq = torch.tensor([p + g.tokens[i]])
        la, lb = a(seq)[0, len(p) - 1:-1], b(seq)[0, len(p) - 1:-1]
        y = seq[0, len(p):]
        dlogp = token_metrics(la, lb, y)["dlogp"]
        fired = g.fired[i, :len(y)]
        assert (dlogp[~fired] > tau - MARGIN).all()  # a kept base token never meets the criterion (up to rounding)
        mix = (mixed_logits_torch(la, lb, "dlogp", 0.2) / T).log_softmax(-1)
        ref = torch.where(fired, mix.gather(1, y[:, None])[:, 0], (la / T).log_softmax(-1).gather(1, y[:, None])[:, 0])
        torch.testing.assert_close(g.logprobs[i, :len(y)], ref, atol=1e-5, rtol=1e-5)
    assert 0 < g.fired.sum() < g.lengths.sum()


def test_coef_zero_reduces_to_plain_decoding():
    a, b = tiny(0), tiny(1)
    for T, top_p in [(0, 1.0), (1.0, 1.0), (0.7, 0.9)]:
        kw = dict(temperature=T, top_p=top_p, stop_ids=STOPS, seed=5)
        plain_a, plain_b = generate(a, PROMPTS, 12, **kw), generate(b, PROMPTS, 12, **kw)
        alpha0 = generate_lockstep(a, b, PROMPTS, 12, "logits", 0.0, **kw)        # paper 2: alpha 0 = model a
        gamma0 = generate_lockstep(a, b, PROMPTS, 12, "dlogp", 0.0, **kw)         # paper 1 dense: gamma 0 = model b
        assert alpha0.tokens == plain_a.tokens and gamma0.tokens == plain_b.tokens
        torch.testing.assert_close(alpha0.logprobs, plain_a.logprobs, atol=1e-5, rtol=1e-5)
    # greedy gated decoding: never firing is model a; always firing with gamma 0 is model b
    kw = dict(temperature=0, stop_ids=STOPS)
    never = generate_lockstep(a, b, PROMPTS, 12, "dlogp", 0.1, gate="random", tau=0.0, seed=0, **kw)
    always = generate_lockstep(a, b, PROMPTS, 12, "dlogp", 0.0, gate="random", tau=1.0, seed=0, **kw)
    assert never.tokens == generate(a, PROMPTS, 12, **kw).tokens and not never.fired.any()
    assert always.tokens == generate(b, PROMPTS, 12, **kw).tokens and always.replacement_ratio == 1.0


def test_batch_size_chunks_and_seeds():
    a, b = tiny(0), tiny(1)
    kw = dict(temperature=1.0, stop_ids=STOPS, gate="dlogp", tau=-0.3)
    whole = generate_lockstep(a, b, PROMPTS, 10, "dlogp", 0.1, seed=3, **kw)
    again = generate_lockstep(a, b, PROMPTS, 10, "dlogp", 0.1, seed=3, **kw)
    other = generate_lockstep(a, b, PROMPTS, 10, "dlogp", 0.1, seed=4, **kw)
    assert torch.equal(whole.ids, again.ids) and not torch.equal(whole.ids, other.ids)
    greedy = dict(temperature=0, stop_ids=STOPS)
    chunked = generate_lockstep(a, b, PROMPTS, 10, "logits", 2.0, batch_size=3, **greedy)
    assert chunked.tokens == generate_lockstep(a, b, PROMPTS, 10, "logits", 2.0, **greedy).tokens
    assert chunked.fired.shape == (len(PROMPTS), 10)
