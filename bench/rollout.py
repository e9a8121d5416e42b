"""
Rollout throughput on two workloads that can be set beside published engines, each against transformers
`generate` on the same random-weight model in the same run:

  nanovllm  nano-vllm's benchmark: Qwen3-0.6B shape, 256 sequences, prompt lengths and output budgets drawn
            uniformly from 100..1024 (seed 0), prompt ids below 10,000, temperature 0.6, no stop token:
            every row runs exactly its budget. tokens/s counts the budgets' tokens, as nano-vllm does.
  grpo      GRPO-shaped: P prompts of 100..300 tokens, G = 8 samples each, temperature 1, output lengths
            spread like chains of thought (log-normal around a third of --max_new, cut at 16 and --max_new;
            emulated with a budget per row, since random weights never stop). Our engine with the shared
            prefill (one per prompt) and without it; the prefill alone timed both ways.

transformers `generate` cannot end a row at its own budget without a stop token, so it runs every row to the
longest budget; its tokens/s counts the same useful tokens. The decode roofline is the time the decode
steps cannot beat on this device: every step reads all weights once and the KV cache of its running rows,
bytes / the measured copy bandwidth (one batch holding every row: the fewest weight reads). "share" is that
time over the measured total (which also holds the prefill and the sampling).

    python bench/rollout.py                                    # the full shapes (for a GPU)
    python bench/rollout.py --layers=2 --seqs=32 --max_len=256 --prompts=4 --max_new=256   # a CPU-sized run
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nanorlvr.engine import generate  # noqa: E402
from nanorlvr.infra.hf import load_pretrained  # noqa: E402


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def copy_bandwidth(device, mib=256):
    """Bytes moved per second by a same-size copy (read + write), the best of five."""
    x = torch.empty(mib * 2 ** 20 // 4, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    best = min(timed(lambda: y.copy_(x), device)[0] for _ in range(5))
    return 2 * x.numel() * 4 / best


def our_model(args, device, dtype):
    """Ours alone (no transformers needed): the same Qwen3 shape, its own random weights."""
    from nanorlvr.model import GPT, GPTConfig
    cfg = GPTConfig(arch="llama", vocab_size=args.vocab, n_layer=args.layers, n_head=args.heads, n_kv_head=args.kv_heads,
                    n_embd=args.hidden, head_dim=args.head_dim, intermediate_size=args.inter, max_seq_len=4096,
                    norm_eps=1e-6, rope_theta=1e6, qk_norm=True, tie_embeddings=True)
    torch.manual_seed(0)
    return GPT(cfg).to(device=device, dtype=dtype).eval()


def models(args, device, dtype):
    """transformers' Qwen3 with random weights, and ours loaded from the same files."""
    from transformers import AutoModelForCausalLM, Qwen3Config
    cfg = Qwen3Config(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.kv_heads, head_dim=args.head_dim, intermediate_size=args.inter,
                      vocab_size=args.vocab, max_position_embeddings=4096, tie_word_embeddings=True)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(cfg, dtype=dtype).to(device).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = load_pretrained(d, dtype=dtype, device=device).eval()
    return hf, ours


def roofline_seconds(model, prompts, budgets, bandwidth):
    """Decode steps' bytes over the bandwidth: max(budget) reads of the weights (the embedding table is only
    gathered from, unless tied to the head) plus every row's KV cache at each of its steps."""
    c = model.config
    elem = next(model.parameters()).element_size()
    weights = sum(p.numel() for n, p in model.named_parameters() if c.tie_embeddings or "embed_tokens" not in n) * elem
    kv_per_token = c.n_layer * 2 * c.n_kv_head * c.head_dim * elem
    kv = sum(m * len(p) + m * (m - 1) // 2 for p, m in zip(prompts, budgets)) * kv_per_token
    return (max(budgets) * weights + kv) / bandwidth


def hf_generate(hf, prompts, max_new, temperature, device):
    """transformers generate on left-padded prompts, every row to max_new tokens (no stop token)."""
    P = max(len(p) for p in prompts)
    x = torch.zeros(len(prompts), P, dtype=torch.long, device=device)
    mask = torch.zeros_like(x)
    for i, p in enumerate(prompts):
        x[i, P - len(p):], mask[i, P - len(p):] = torch.tensor(p), 1
    return hf.generate(x, attention_mask=mask, max_new_tokens=max_new, min_new_tokens=max_new, do_sample=True,
                       temperature=temperature, top_k=None, top_p=None, pad_token_id=0, eos_token_id=None)


def nanovllm_workload(args):
    g = torch.Generator().manual_seed(0)
    rand = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    prompts = [[rand(0, min(args.vocab, 10000) - 1) for _ in range(rand(args.min_len, args.max_len))]
               for _ in range(args.seqs)]
    return prompts, [rand(args.min_len, args.max_len) for _ in range(args.seqs)]


def grpo_workload(args):
    g = torch.Generator().manual_seed(0)
    distinct = [torch.randint(0, min(args.vocab, 10000), (int(torch.randint(100, 301, (1,), generator=g)),),
                              generator=g).tolist() for _ in range(args.prompts)]
    prompts = [p for p in distinct for _ in range(args.group)]
    lengths = (torch.randn(len(prompts), generator=g) * 0.6).exp() * args.max_new / 3
    return prompts, lengths.round().long().clamp(16, args.max_new).tolist()


def run(label, ours, hf, prompts, budgets, temperature, device, bandwidth, shared_too, repeats):
    useful = sum(budgets)
    roof = roofline_seconds(ours, prompts, budgets, bandwidth)
    rows = []
    generate(ours, prompts[:2], 4, temperature=temperature, seed=1)  # warm-up
    variants = [("our engine" + (", shared prefill" if shared_too else ""), True)]
    if shared_too:
        variants.append(("our engine, one prefill per sample", False))
    best = {}
    for _ in range(repeats):  # the variants interleaved, the best time of each: a shared machine's load drifts
        for name, share in variants:
            t_pre = None
            if shared_too:  # the prefill alone: a budget of one token
                t_pre, _ = timed(lambda: generate(ours, prompts, 1, temperature=temperature, seed=0, share_prefix=share), device)
            t, _ = timed(lambda: generate(ours, prompts, budgets, temperature=temperature, seed=0, share_prefix=share), device)
            old = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(old[0], t_pre or old[0]), min(old[1], t))
    for name, (t_pre, t) in best.items():
        rows.append((f"{label}, {name}", None if t_pre == float("inf") else t_pre, t, useful / t, roof / t))
    if device == "cuda":  # the CUDA-graph path: one budget for all rows, so every row runs the longest one
        t, _ = timed(lambda: generate(ours, prompts, max(budgets), temperature=temperature, seed=0, static=True), device)
        rows.append((f"{label}, our engine, static=True (all rows to the longest budget)", None, t, useful / t, roof / t))
    if hf is not None:  # None: transformers is not installed
        t, _ = timed(lambda: hf_generate(hf, prompts, max(budgets), temperature, device), device)
        rows.append((f"{label}, transformers generate (all rows to the longest budget)", None, t, useful / t, roof / t))
    return rows


def parse(argv=None):
    """The flags (argv None: sys.argv); bench/gpu_check.py passes its own."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--which", default="nanovllm,grpo")
    p.add_argument("--layers", type=int, default=28, help="Qwen3-0.6B: 28 layers, 1024 wide, 16/8 heads of 128")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv_heads", type=int, default=8)
    p.add_argument("--head_dim", type=int, default=128)
    p.add_argument("--inter", type=int, default=3072)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--seqs", type=int, default=256, help="nanovllm: sequences")
    p.add_argument("--min_len", type=int, default=100, help="nanovllm: shortest prompt and budget")
    p.add_argument("--max_len", type=int, default=1024, help="nanovllm: longest prompt and budget")
    p.add_argument("--prompts", type=int, default=32, help="grpo: distinct prompts")
    p.add_argument("--group", type=int, default=8, help="grpo: samples per prompt")
    p.add_argument("--max_new", type=int, default=1024, help="grpo: completion budget")
    p.add_argument("--repeats", type=int, default=1, help="runs of each of our variants, interleaved (the best counts)")
    p.add_argument("--threads", type=int, default=0)
    return p.parse_args(argv)


def main():
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    name = torch.cuda.get_device_name() if device == "cuda" else f"no GPU present: CPU, {torch.get_num_threads()} threads"
    bandwidth = copy_bandwidth(device)
    hf, ours = models(args, device, dtype)
    print(f"device: {name}; torch {torch.__version__}; {dtype}; copy bandwidth {bandwidth / 1e9:.1f} GB/s; "
          f"Qwen3 shape {args.layers} layers x {args.hidden}, vocab {args.vocab} ({ours.num_params() / 1e6:.0f}M parameters)")
    rows = []
    if "nanovllm" in args.which:
        prompts, budgets = nanovllm_workload(args)
        print(f"nanovllm: {len(prompts)} sequences, prompts {args.min_len}..{args.max_len}, {sum(budgets)} output tokens")
        rows += run("nanovllm", ours, hf, prompts, budgets, 0.6, device, bandwidth, False, args.repeats)
    if "grpo" in args.which:
        prompts, budgets = grpo_workload(args)
        print(f"grpo: {args.prompts} prompts x G={args.group}, prompts 100..300, {sum(budgets)} output tokens "
              f"(median {sorted(budgets)[len(budgets) // 2]}, max {max(budgets)})")
        rows += run("grpo", ours, hf, prompts, budgets, 1.0, device, bandwidth, True, args.repeats)
    print("| what | prefill s | total s | tokens/s | share of decode roofline |\n|---|---|---|---|---|")
    for what, pre, t, tps, share in rows:
        print(f"| {what} | {'' if pre is None else f'{pre:.2f}'} | {t:.2f} | {tps:.1f} | {share:.1%} |")


if __name__ == "__main__":
    main()
