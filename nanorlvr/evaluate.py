"""
Held-out accuracy with the verifier: greedy accuracy, avg@k (mean accuracy of k samples at temperature T)
and the unbiased pass@k, on the same problems for every model so that numbers are comparable.

A response cut off by the token budget (no end token) scores 0, here and in the GRPO reward (`score` is
the one place both go through): it never gave its final answer, even if the last number it wrote happens
to match the gold ("... 4 * 4 =" would otherwise count for gold 4). The share truncated is reported next
to every accuracy, so a budget that is too small shows as such rather than as a weak model.
"""
import torch

from nanorlvr.analysis import pass_at_k
from nanorlvr.engine import generate
from nanorlvr.verifier import extract_answer, verify_batch


def score(completions, golds, decode, workers=2, truncated=None):
    """Decode completions (lists of ids) with decode(ids) -> text (a prompt format's, prompts.py) and verify
    them against gold answers -> (list of bools, texts). truncated: (N,) bools, the rows that hit the token
    budget without an end token; they score False whatever they say (no final answer was given)."""
    texts = [decode(c) for c in completions]
    ok = verify_batch(texts, golds, workers=workers)
    if truncated is not None:
        ok = [o and not t for o, t in zip(ok, truncated.tolist())]
    return ok, texts


@torch.no_grad()
def evaluate(model, fmt, problems, k=8, temperature=1.0, max_new_tokens=64, batch_size=1024, seed=1234,
             generate_fn=None, static=False):
    """Accuracy on `problems` (dicts with question / answer). Returns a dict of fractions in [0, 1].
    generate_fn(prompts, temperature, seed) -> Generation replaces plain sampling (e.g. extrapolation).
    fmt: the prompt format (prompts.py: prompts.format_for gives a checkpoint's). static: engine.generate's fixed-batch decoding."""
    was_training = model.training
    model.eval()
    prompts = [fmt.encode(p["question"]) for p in problems]
    golds = [p["answer"] for p in problems]
    gen = generate_fn or (lambda ps, temp, s: generate(model, ps, max_new_tokens, temperature=temp, seed=s,
                                                         stop_ids=fmt.stop_ids, batch_size=batch_size, static=static))
    g = gen(prompts, 0.0, seed)
    greedy, texts = score(g.tokens, golds, fmt.decode, truncated=g.truncated)
    whole = (~g.truncated).tolist()
    out = {"n": len(problems), "greedy_acc": sum(greedy) / len(problems),
           "greedy_exact_match": sum(w and extract_answer(t) == a for t, a, w in zip(texts, golds, whole)) / len(problems),
           "greedy_truncated": g.truncated.float().mean().item()}
    if k:
        s = gen([p for p in prompts for _ in range(k)], temperature, seed + 1)
        ok, _ = score(s.tokens, [a for a in golds for _ in range(k)], fmt.decode, truncated=s.truncated)
        out["truncated"] = s.truncated.float().mean().item()  # of the k samples per problem
        per_problem = [sum(ok[i * k:(i + 1) * k]) for i in range(len(problems))]
        out[f"avg{k}"] = sum(ok) / len(ok)
        out[f"pass{k}"] = sum(pass_at_k(k, c, k) for c in per_problem) / len(problems)
        out["mean_len"] = s.lengths.float().mean().item()
    model.train(was_training)
    return out
