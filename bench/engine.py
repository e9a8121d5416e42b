"""
Throughput of the sampling engine (tokens generated per second, every row running all max_new_tokens):

  toy      our engine vs a naive loop that re-runs the whole sequence each step (no KV cache), on the
           toy model, batch 64, 128 new tokens;
  qwen2    our engine vs transformers `generate` (greedy, its default dynamic cache) on the same randomly
           initialised Qwen2-architecture model (4 layers, 512 wide) loaded into both;
           plus the matmul floor: the same model's weight matmuls alone (no attention, norms, cache or
           sampling) for the same tokens, the most any engine computing in fp32 can reach on this machine;
  qwen0.5b (CUDA only) a Qwen2.5-0.5B-shaped model with random weights in bf16 at batch 64 and 256.
Our engine runs twice: the eager loop, and static=True (fixed batch, full-length masked cache, one
CUDA graph replayed per token on a GPU).

    python bench/engine.py [--which toy,qwen2,qwen0.5b] [--batch 64] [--new 128]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nanorlvr.engine import generate  # noqa: E402
from nanorlvr.model import GPT, GPTConfig  # noqa: E402


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def naive_generate(model, prompts, max_new_tokens):
    idx = torch.tensor(prompts, device=next(model.parameters()).device)
    for _ in range(max_new_tokens):
        nxt = model(idx)[:, -1].argmax(-1, keepdim=True)
        idx = torch.cat([idx, nxt], 1)
    return idx[:, len(prompts[0]):]


def timed(fn, device, repeats=1):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def prompts_for(batch, length, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=g).tolist()


def bench_toy(args, device):
    torch.manual_seed(0)
    model = GPT(GPTConfig(max_seq_len=256)).to(device).eval()
    prompts = prompts_for(args.batch, 16, 256)
    n = args.batch * args.new
    t_engine = timed(lambda: generate(model, prompts, args.new, temperature=0), device, args.repeats)
    t_naive = timed(lambda: naive_generate(model, prompts, args.new), device, 1)
    same = torch.equal(generate(model, prompts, args.new, temperature=0).ids, naive_generate(model, prompts, args.new))
    return [("toy 0.8M, engine (KV cache)", n / t_engine, t_engine), ("toy 0.8M, naive loop (no cache)", n / t_naive, t_naive),
            ("speedup", t_naive / t_engine, None), ("greedy outputs identical", same, None)]


def qwen2_config(hidden, layers, heads, kv_heads, inter, vocab):
    from transformers import Qwen2Config
    return Qwen2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=kv_heads, intermediate_size=inter, vocab_size=vocab,
                       max_position_embeddings=1024, tie_word_embeddings=True)


def bench_vs_transformers(args, device, hf_cfg, dtype, label):
    from transformers import AutoModelForCausalLM
    from nanorlvr.infra.hf import load_pretrained
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(hf_cfg, dtype=dtype).to(device).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = load_pretrained(d, dtype=dtype, device=device).eval()
    prompts = prompts_for(args.batch, 16, hf_cfg.vocab_size)
    x = torch.tensor(prompts, device=device)
    n = args.batch * args.new
    gen_hf = lambda: hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=args.new, min_new_tokens=args.new,
                                 do_sample=False, pad_token_id=0, eos_token_id=None)
    t_ours = timed(lambda: generate(ours, prompts, args.new, temperature=0), device, args.repeats)
    t_static = timed(lambda: generate(ours, prompts, args.new, temperature=0, static=True), device, args.repeats)
    same = torch.equal(generate(ours, prompts, args.new, temperature=0).ids,
                       generate(ours, prompts, args.new, temperature=0, static=True).ids)
    t_hf = timed(gen_hf, device, args.repeats)
    static = "static=True (one CUDA graph per token)" if device == "cuda" else "static=True"
    return [(f"{label}, our engine", n / t_ours, t_ours), (f"{label}, our engine, {static}", n / t_static, t_static),
            (f"{label}, transformers generate", n / t_hf, t_hf),
            ("speedup", t_hf / t_ours, None), ("speedup, static", t_hf / t_static, None),
            ("static greedy tokens identical", same, None)]


@torch.no_grad()
def bench_matmul_floor(args, device, hf_cfg, dtype):
    """Tokens/s of the model's weight matmuls alone at this batch: the compute every decoder must do."""
    h, inter = hf_cfg.hidden_size, hf_cfg.intermediate_size
    kv = hf_cfg.num_key_value_heads * h // hf_cfg.num_attention_heads
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, inter), (h, inter)] * hf_cfg.num_hidden_layers
    ws = [torch.randn(i, o, device=device, dtype=dtype) for i, o in shapes]
    wd = torch.randn(inter, h, device=device, dtype=dtype)
    lm = torch.randn(h, hf_cfg.vocab_size, device=device, dtype=dtype)
    x = torch.randn(args.batch, h, device=device, dtype=dtype)

    def steps():
        for _ in range(args.new):
            for i, w in enumerate(ws):
                y = x @ w
                if i % 6 == 5:
                    y @ wd
            x @ lm
    t = timed(steps, device, args.repeats)
    flops = 2 * args.batch * args.new * (sum(i * o for i, o in shapes) + inter * h * hf_cfg.num_hidden_layers + h * hf_cfg.vocab_size)
    return [(f"matmul floor ({flops / t / 1e9:.1f} GFLOP/s)", args.batch * args.new / t, t)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--which", default="toy,qwen2,qwen0.5b")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch}, {args.new} new tokens, greedy")
    rows = []
    which = args.which.split(",")
    if "toy" in which:
        rows += bench_toy(args, device)
    if "qwen2" in which:
        cfg = qwen2_config(512, 4, 8, 2, 1408, 32768)
        rows += bench_vs_transformers(args, device, cfg, torch.float32, "qwen2 4x512 fp32")
        rows += bench_matmul_floor(args, device, cfg, torch.float32)
    if "qwen0.5b" in which:
        if device != "cuda":
            print("qwen0.5b: skipped, no GPU present")
        else:
            cfg = qwen2_config(896, 24, 14, 2, 4864, 151936)
            rows += bench_vs_transformers(args, device, cfg, torch.bfloat16, f"qwen2.5-0.5B shape bf16 B={args.batch}")
    print("| what | tokens/s (or ratio) | seconds |\n|---|---|---|")
    for what, v, secs in rows:
        v = f"{v:.2f}" if isinstance(v, float) else v
        print(f"| {what} | {v} | {'' if secs is None else f'{secs:.2f}'} |")


if __name__ == "__main__":
    main()
