"""
Held-out accuracy with the verifier: greedy accuracy, avg@k (mean accuracy of k samples at temperature T)
and the unbiased pass@k, on the same problems for every model so that numbers are comparable.

`evaluate` is the one evaluation: train.py calls it on each rank's share (and combines them), sample.py and
analyze.py through `evaluator`, which fixes the problems and settings once so that every model they compare
is scored the same way. A response cut off by the token budget scores 0, as in the GRPO reward
(verifier.reward); the share truncated is reported next to every accuracy, so a budget that is too small
shows as such rather than as a weak model.
"""
import torch

from nanorlvr.papers.stats import pass_at_k
from nanorlvr.engine import generate
from nanorlvr.verifier import extract_answer, reward


@torch.no_grad()
def evaluate(model, fmt, problems, k=8, temperature=1.0, max_new_tokens=64, batch_size=1024, seed=1234,
             generate_fn=None, static=False, top_p=1.0):
    """Accuracy on `problems` (dicts with question / answer). Returns a dict of fractions in [0, 1].
    fmt: the prompt format (prompts.py: prompts.format_for gives a checkpoint's). Completions come from
    engine.generate (batch_size rows at once, nucleus top_p; static: its fixed-batch decoding), or from
    generate_fn(prompts, temperature, seed) -> Generation when given (e.g. lock-step extrapolation)."""
    was_training = model.training
    model.eval()
    prompts = [fmt.encode(p["question"]) for p in problems]
    golds = [p["answer"] for p in problems]
    gen = generate_fn or (lambda ps, temp, s: generate(model, ps, max_new_tokens, temperature=temp, top_p=top_p,
                                                         seed=s, stop_ids=fmt.stop_ids, batch_size=batch_size,
                                                         static=static))
    # greedy: one completion per problem
    g = gen(prompts, 0.0, seed)
    texts = [fmt.decode(c) for c in g.tokens]
    questions = [p["question"] for p in problems]
    greedy = reward(texts, golds, truncated=g.truncated.tolist(), questions=questions)
    whole = (~g.truncated).tolist()
    out = {"n": len(problems), "greedy_acc": sum(greedy) / len(problems),
           "greedy_exact_match": sum(w and extract_answer(t) == a for t, a, w in zip(texts, golds, whole)) / len(problems),
           "greedy_truncated": g.truncated.float().mean().item()}
    # sampled: k completions per problem at `temperature` (avg@k, pass@k)
    if k:
        s = gen([p for p in prompts for _ in range(k)], temperature, seed + 1)
        ok = reward([fmt.decode(c) for c in s.tokens], [a for a in golds for _ in range(k)],
                    truncated=s.truncated.tolist(), questions=[q for q in questions for _ in range(k)])
        out["truncated"] = s.truncated.float().mean().item()  # of the k samples per problem
        per_problem = [sum(ok[i * k:(i + 1) * k]) for i in range(len(problems))]
        out[f"avg{k}"] = sum(ok) / len(ok)
        out[f"pass{k}"] = sum(pass_at_k(k, c, k) for c in per_problem) / len(problems)
        out["mean_len"] = s.lengths.float().mean().item()
    model.train(was_training)
    return out


def evaluator(fmt, problems, k=8, temperature=1.0, max_new_tokens=64, top_p=1.0, seed=1234, batch_size=1024):
    """evaluate_fn(model, generate_fn=None) -> evaluate()'s dict plus "acc": avg@k (greedy accuracy if k = 0).
    Every model it is given is scored on the same problems with the same settings and seeds."""
    def evaluate_fn(model, generate_fn=None):
        r = evaluate(model, fmt, problems, k=k, temperature=temperature, max_new_tokens=max_new_tokens,
                     batch_size=batch_size, seed=seed, generate_fn=generate_fn, top_p=top_p)
        return {**r, "acc": r[f"avg{k}"] if k else r["greedy_acc"]}
    return evaluate_fn
