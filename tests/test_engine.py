"""The sampling engine: batching must not change a row, seeds reproduce, log-probs are the model's."""
import torch

from nanorlvr.engine import generate, sample_next
from nanorlvr.logprobs import completion_logprobs, pack
from nanorlvr.model import GPT, GPTConfig
from margins import assert_greedy_path_is_clear

PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11], [12], [13, 14, 15, 16]]


def tiny(arch="llama"):
    torch.manual_seed(0)
    return GPT(GPTConfig(arch=arch, vocab_size=50, n_layer=2, n_head=2, n_embd=32, max_seq_len=64)).eval()


def test_greedy_row_is_the_same_alone_and_in_a_mixed_length_batch():
    for arch in ("llama", "gpt2"):
        model = tiny(arch)
        batch = generate(model, PROMPTS, 16, temperature=0, stop_ids=[7])
        assert_greedy_path_is_clear(model, PROMPTS, batch.tokens)
        for i, p in enumerate(PROMPTS):
            alone = generate(model, [p], 16, temperature=0, stop_ids=[7])
            assert alone.tokens[0] == batch.tokens[i]


def test_greedy_equals_argmax_of_an_uncached_forward():
    model = tiny()
    out = generate(model, [PROMPTS[1]], 10, temperature=0).tokens[0]
    assert_greedy_path_is_clear(model, [PROMPTS[1]], [out])
    seq = list(PROMPTS[1])
    for _ in range(10):
        seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert out == seq[len(PROMPTS[1]):]


def test_seeded_sampling_is_reproducible_and_seeds_differ():
    model = tiny()
    a = generate(model, PROMPTS, 20, temperature=1.0, seed=3)
    b = generate(model, PROMPTS, 20, temperature=1.0, seed=3)
    c = generate(model, PROMPTS, 20, temperature=1.0, seed=4)
    assert torch.equal(a.ids, b.ids) and not torch.equal(a.ids, c.ids)


def test_returned_logprobs_equal_teacher_forced_recomputation():
    model = tiny()
    g = generate(model, PROMPTS, 20, temperature=1.0, seed=0, stop_ids=[3, 9])
    idx, plen, clen = pack(PROMPTS, g.tokens)
    logp, mask = completion_logprobs(model, idx, plen, clen)
    torch.testing.assert_close(logp, g.logprobs[:, :logp.size(1)] * mask, atol=1e-5, rtol=1e-5)
    # at temperature T the log-probs are those of logits / T
    g = generate(model, PROMPTS, 12, temperature=0.7, seed=0)
    logp, mask = completion_logprobs(model, *pack(PROMPTS, g.tokens), temperature=0.7)
    torch.testing.assert_close(logp, g.logprobs[:, :logp.size(1)], atol=1e-5, rtol=1e-5)


def test_stop_tokens_lengths_and_truncation():
    model = tiny()
    g = generate(model, PROMPTS, 30, temperature=1.0, seed=1, stop_ids=[5, 6, 7, 8])
    for toks, n, trunc in zip(g.tokens, g.lengths.tolist(), g.truncated.tolist()):
        assert len(toks) == n
        stops = [t in (5, 6, 7, 8) for t in toks]
        assert stops.count(True) == (0 if trunc else 1)
        assert trunc == (not stops[-1]) and (not trunc or n == 30)


def test_stop_strings():
    model = tiny()
    decode = lambda ids: "".join(chr(97 + i % 26) for i in ids)
    free = generate(model, PROMPTS, 20, temperature=0)
    assert_greedy_path_is_clear(model, PROMPTS, free.tokens)
    target = decode(free.tokens[0][3:5])  # a string the first row is known to produce
    g = generate(model, PROMPTS, 20, temperature=0, stop_strings=[target], decode=decode)
    first = next(i for i in range(1, 21) if target in decode(free.tokens[0][:i]))  # first time it appears
    assert g.tokens[0] == free.tokens[0][:first] and not g.truncated[0]


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.tensor([[4.0, 3.0, 2.0, -5.0, -6.0]]).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    tok, lp = sample_next(logits, top_k=2, generator=gen)
    assert set(tok.tolist()) == {0, 1}
    p = torch.softmax(logits[0, :2], 0)
    torch.testing.assert_close(lp.exp(), p[tok])  # log-probs of the renormalised distribution
    tok, _ = sample_next(logits, top_p=0.5, generator=gen)  # p(0) = 0.66 > 0.5: only the top token
    assert set(tok.tolist()) == {0}


def sharp(arch="llama"):
    """tiny() with sharper logits: varied greedy output with clear margins, so stop ids end rows at
    different steps and float differences in the last bit cannot flip a token."""
    model = tiny(arch)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8)
    return model


def stops_for(model):
    """Stop ids that end the first three rows of PROMPTS at different steps."""
    plain = generate(model, PROMPTS, 24, temperature=0).ids
    assert_greedy_path_is_clear(model, PROMPTS, plain.tolist())
    return sorted({int(plain[i, 3 + 5 * i]) for i in range(3)})


def assert_same(a, b):
    assert torch.equal(a.ids, b.ids) and torch.equal(a.lengths, b.lengths) and torch.equal(a.truncated, b.truncated)
    # the same tokens; their log-probs to float precision (sharp() logits are large, the cache layouts differ)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-4, rtol=1e-4)


def test_static_decoding_gives_the_same_tokens_as_the_eager_loop():
    for arch in ("llama", "gpt2"):
        model = sharp(arch)
        stops = stops_for(model)
        for kw in (dict(temperature=0), dict(temperature=1.0, seed=5)):  # greedy and seeded sampling
            a = generate(model, PROMPTS, 24, stop_ids=stops, **kw)
            b = generate(model, PROMPTS, 24, stop_ids=stops, static=True, **kw)
            assert len(set(a.lengths.tolist())) > 1, "the rows should stop at different steps"
            assert_same(a, b)


def test_inverse_cdf_sampling_picks_the_token_whose_interval_holds_u():
    logits = torch.tensor([0.5, 0.3, 0.2, 0.0]).log().repeat(4, 1)  # cumulative 0.5, 0.8, 1.0, 1.0
    tok, lp = sample_next(logits, u=torch.tensor([0.0, 0.49, 0.6, 0.95]))
    assert tok.tolist() == [0, 0, 1, 2]  # never token 3, of probability 0
    torch.testing.assert_close(lp.exp(), torch.tensor([0.5, 0.5, 0.3, 0.2]))


GROUPS = [p for p in PROMPTS for _ in range(3)]  # G = 3 samples per prompt, prompt-major as in GRPO


def test_shared_prefill_prefills_each_distinct_prompt_once_and_gives_the_unshared_output():
    model = sharp()
    stops = stops_for(model)
    rows = []
    model.model.embed_tokens.register_forward_hook(lambda m, inp, out: rows.append(inp[0].shape))
    for static in (False, True):
        for kw in (dict(temperature=0), dict(temperature=1.0, seed=7)):
            rows.clear()
            shared = generate(model, GROUPS, 20, stop_ids=stops, static=static, **kw)
            assert rows[0] == (len(PROMPTS), max(map(len, PROMPTS)))  # the prefill: one row per distinct prompt
            unshared = generate(model, GROUPS, 20, stop_ids=stops, static=static, share_prefix=False, **kw)
            assert_same(shared, unshared)
    # seeded rows of one prompt differ (each has its own uniforms), and a repeat of a prompt alone is itself
    g = generate(model, GROUPS, 20, temperature=1.0, seed=7)
    assert len({tuple(t) for t in g.tokens[:3]}) > 1


def test_checking_for_finished_rows_every_few_tokens_changes_nothing():
    model = sharp()
    stops = stops_for(model)
    for kw in (dict(temperature=0), dict(temperature=1.0, seed=2)):
        every = generate(model, GROUPS, 24, stop_ids=stops, check_every=1, **kw)
        for n in (5, 64):
            assert_same(every, generate(model, GROUPS, 24, stop_ids=stops, check_every=n, **kw))


def test_refilling_finished_slots_with_waiting_rows_gives_the_all_at_once_output():
    model = sharp()
    stops = stops_for(model)
    seen = []
    model.model.embed_tokens.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    for kw in (dict(temperature=0), dict(temperature=1.0, seed=3)):
        whole = generate(model, GROUPS, 24, stop_ids=stops, **kw)
        for bs, every in ((4, 1), (5, 3), (1, 8)):
            seen.clear()
            assert_same(whole, generate(model, GROUPS, 24, stop_ids=stops, batch_size=bs, check_every=every, **kw))
            assert max(seen) <= bs  # never more rows at once than batch_size
        assert len(set(whole.lengths.tolist())) > 1


def _reference_logprobs(model, idx, plen, clen, temperature):
    """Log-probs and entropies from the whole (N, T, V) logits, indexed token by token."""
    logp_all = torch.log_softmax(model(idx).float() / temperature, -1)
    logp, ent = torch.zeros(len(idx), int(clen.max())), torch.zeros(len(idx), int(clen.max()))
    for i in range(len(idx)):
        for j in range(int(clen[i])):
            pos = int(plen[i]) - 1 + j
            logp[i, j] = logp_all[i, pos, idx[i, pos + 1]]
            ent[i, j] = -(logp_all[i, pos].exp() * logp_all[i, pos]).sum()
    return logp, ent


def test_logprobs_in_vocabulary_chunks_equal_whole_logits_with_the_same_gradients():
    model = tiny()
    g = generate(model, PROMPTS, 9, temperature=1.0, seed=2, stop_ids=[3])
    idx, plen, clen = pack(PROMPTS, g.tokens)
    want, want_ent = _reference_logprobs(model, idx, plen, clen, 0.8)
    grads = []
    # everything at once; 7 completion tokens at a time (V = 50); the same with the blocks checkpointed too
    for chunk, grad_ckpt in ((10 ** 9, False), (7 * 50, False), (7 * 50, True)):
        model.zero_grad()
        model.grad_ckpt = grad_ckpt
        logp, mask, ent = completion_logprobs(model, idx, plen, clen, temperature=0.8, with_entropy=True, chunk=chunk)
        torch.testing.assert_close(logp, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ent, want_ent, atol=1e-5, rtol=1e-5)
        assert not ent.requires_grad
        (logp * torch.linspace(-1, 1, logp.numel()).view_as(logp)).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_chunked_logprobs_apply_lm_head_to_completion_tokens_only_chunk_by_chunk():
    model = tiny()
    g = generate(model, PROMPTS, 9, temperature=1.0, seed=2, stop_ids=[3])
    idx, plen, clen = pack(PROMPTS, g.tokens)
    seen = []
    model.lm_head.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[:-1].numel()))
    logp, _ = completion_logprobs(model, idx, plen, clen, chunk=7 * 50)
    assert max(seen) <= 7 and sum(seen) == int(clen.sum())  # forward: no prompt or padding position
    seen.clear()
    logp.sum().backward()
    assert max(seen) <= 7 and sum(seen) == int(clen.sum())  # the backward recomputes one chunk at a time
    with torch.no_grad():
        seen.clear()
        completion_logprobs(model, idx, plen, clen, chunk=7 * 50)
        assert max(seen) <= 7 and sum(seen) == int(clen.sum())


def test_logprobs_of_empty_completions_are_empty_in_either_path():
    model = tiny()
    idx, plen, clen = pack(PROMPTS[:2], [[], []])
    for chunk in (10 ** 9, 50):
        logp, mask, ent = completion_logprobs(model, idx, plen, clen, with_entropy=True, chunk=chunk)
        assert logp.shape == mask.shape == ent.shape == (2, 0)


def test_a_budget_per_row_cuts_each_row_where_its_own_budget_ends():
    model = sharp()
    stops = stops_for(model)
    budgets = [3, 24, 7, 1, 12, 20, 5, 9, 2, 16, 11, 4]
    free = generate(model, GROUPS, 24, stop_ids=stops, temperature=1.0, seed=4)
    for bs in (None, 5):
        g = generate(model, GROUPS, budgets, stop_ids=stops, temperature=1.0, seed=4, batch_size=bs)
        for i, m in enumerate(budgets):
            n = min(m, int(free.lengths[i]))
            assert g.tokens[i] == free.tokens[i][:n] and int(g.lengths[i]) == n
            assert bool(g.truncated[i]) == (m < int(free.lengths[i]) or bool(free.truncated[i]) and m == 24)
    assert g.truncated.any() and not g.truncated.all()


def test_on_the_cpu_a_batch_is_cut_to_the_working_set_and_the_rows_are_unchanged(monkeypatch):
    from nanorlvr import engine
    from nanorlvr.papers.lockstep import generate_lockstep
    model = tiny()
    torch.manual_seed(1)
    other = GPT(model.config).eval()
    c = model.config
    per_row = 2 * c.n_layer * c.n_kv_head * c.head_dim * 20 * 4 + 8 * 4 * c.vocab_size  # hand-computed, 20 positions
    assert engine.rows_within([model], 20, 100, budget=3 * per_row) == 3
    assert engine.rows_within([model, other], 20, 100, budget=3 * per_row) == 1
    assert engine.rows_within([model], 20, 2, budget=3 * per_row) == 2  # never more than asked
    prompts = PROMPTS * 3
    whole = generate(model, prompts, 12, temperature=1.0, seed=5)
    pair = generate_lockstep(model, other, prompts, 12, "logits", 1.5, seed=5)
    monkeypatch.setattr(engine, "CPU_WORKING_SET", 2 * per_row)  # two rows at a time
    cut = generate(model, prompts, 12, temperature=1.0, seed=5)
    assert cut.tokens == whole.tokens
    torch.testing.assert_close(cut.logprobs, whole.logprobs)
    assert generate_lockstep(model, other, prompts, 12, "logits", 1.5, seed=5).tokens == pair.tokens


def test_the_toys_evaluation_batch_is_not_cut():
    """The quickstart model (4 layers of 128, vocabulary 260) decodes 1,024 rows at once on the CPU at its
    longest (prompt + budget = its 128 positions), one model or two in lock-step: its figures stay put."""
    from nanorlvr.engine import rows_within
    toy = GPT(GPTConfig(arch="llama", vocab_size=260, n_layer=4, n_head=4, n_embd=128, max_seq_len=128))
    assert rows_within([toy], 128, 1024) == 1024 and rows_within([toy, toy], 96, 1024) == 1024


def test_a_long_generation_with_rows_waiting_says_how_far_it_is(monkeypatch, capsys):
    import time
    clock = iter(range(0, 10_000, 40))  # every look at the clock: 40 s later
    monkeypatch.setattr(time, "time", lambda: next(clock))
    generate(tiny(), PROMPTS * 4, 6, temperature=1.0, seed=0, batch_size=4, check_every=1)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "rows started" in ln]
    assert lines and lines[-1].startswith("  generate: ") and "/16 rows started, eta ~" in lines[-1]
