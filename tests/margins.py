"""Guards for tests that compare greedy (argmax) decisions of two computations.

Two paths that compute the same logits in a different order (cached vs uncached decoding, batched vs alone,
ours vs transformers, a Triton kernel vs torch) agree to about 1e-6, and hosts differ in summation order and
SIMD width. An argmax whose runner-up lies within that distance may flip on the next CPU. These helpers
assert that every decision a test relies on clears its boundary by MARGIN, so that a green test stays
green on any host, and a seed or model change that creates a near-tie fails loudly here instead.
"""
import torch

MARGIN = 1e-4


def top2_gap(logits):
    """Gap between the largest and second-largest value along the last dim."""
    top = logits.float().topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def assert_clear_argmax(logits, margin=MARGIN):
    gap = top2_gap(logits)
    assert gap.min() > margin, f"argmax near-tie: top-2 gap {gap.min().item():.2e} <= {margin}"


def assert_greedy_path_is_clear(forward, prompts, completions, margin=MARGIN):
    """Teacher-force each prompt + its greedy completion through forward(ids (1, T)) -> logits (1, T, V) and
    assert a clear argmax at every position that chose a completion token."""
    for p, c in zip(prompts, completions):
        if not c:
            continue
        with torch.no_grad():
            logits = forward(torch.tensor([list(p) + list(c)]))[0, len(p) - 1:len(p) + len(c) - 1]
        assert_clear_argmax(logits, margin)
