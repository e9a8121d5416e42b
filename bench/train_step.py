"""
Time and memory of one GRPO step as train.py runs it on a GPU: one rollout (the engine, from the bf16
sampling copy) and one update (grpo.grpo_update: fp32 master weights, bf16 autocast, micro-batches, AdamW),
with and without gradient checkpointing, on a Qwen2.5-0.5B-shaped model with random weights
(hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocab 151936, tied). Every row runs all
--new_tokens (no stop token), and every group has mixed rewards, so every row is in the update.
Prints seconds, tokens/s and peak memory (torch.cuda.max_memory_allocated) next to precision.memory_estimate.
Without a GPU it runs a tiny shape on the CPU, to check that it works, and says so.

    python bench/train_step.py                      # 64 rows x (128 prompt + 512 completion), micro-batch 8
    python bench/train_step.py --micro_batch=16 --rows=128 --model=1.5b
    python bench/train_step.py --lora_rank=1        # the same with rank-1 LoRA adapters
    python bench/train_step.py --estimate_only      # the memory tables of docs/scaling.md
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nanorlvr import lora  # noqa: E402
from nanorlvr.infra import precision  # noqa: E402
from nanorlvr.engine import generate  # noqa: E402
from nanorlvr.grpo import GRPOConfig, Rollout, grpo_update  # noqa: E402
from nanorlvr.model import GPT, GPTConfig  # noqa: E402

QWEN = dict(arch="llama", vocab_size=151936, max_seq_len=32768, rope_theta=1e6, norm_eps=1e-6, qkv_bias=True)
SHAPES = {  # Qwen2.5 instruct models
    "0.5b": GPTConfig(n_layer=24, n_head=14, n_kv_head=2, n_embd=896, intermediate_size=4864, tie_embeddings=True, **QWEN),
    "1.5b": GPTConfig(n_layer=28, n_head=12, n_kv_head=2, n_embd=1536, intermediate_size=8960, tie_embeddings=True, **QWEN),
    "3b": GPTConfig(n_layer=36, n_head=16, n_kv_head=2, n_embd=2048, intermediate_size=11008, tie_embeddings=True, **QWEN),
    "7b": GPTConfig(n_layer=28, n_head=28, n_kv_head=4, n_embd=3584, intermediate_size=18944, tie_embeddings=False,
                    **{**QWEN, "vocab_size": 152064}),
    "tiny": GPTConfig(n_layer=2, n_head=4, n_kv_head=2, n_embd=64, intermediate_size=128, vocab_size=512, qkv_bias=True),
}
GiB = 2 ** 30


def estimate_table():
    """Peak GiB per GPU by precision.memory_estimate for the recipe of docs/scaling.md (prompt 256 tokens,
    bf16-mixed, no reference model): rows sampled at once = --gen_batch, micro-batch = --micro_batch."""
    print("| model | params | rows per generate | new tokens | micro-batch | grad ckpt | weights+grads+AdamW+copy | "
          "rollout | update | total |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in ("0.5b", "1.5b", "3b"):
        for rows, new, micro, ck in ((256, 1024, 8, False), (256, 1024, 8, True), (256, 1024, 16, True),
                                     (128, 1024, 8, True)):
            m = precision.memory_estimate(SHAPES[name], gen_rows=rows, update_rows=micro, prompt_len=256, new_tokens=new,
                                     grad_ckpt=ck)
            static = m["weights"] + m["grads"] + m["adamw"] + m["sampling_copy"]
            print(f"| {name} | {m['params'] / 1e9:.2f}B | {rows} | {new} | {micro} | {'yes' if ck else 'no'} | "
                  f"{static / GiB:.1f} | {m['rollout_peak'] / GiB:.1f} | {m['update_peak'] / GiB:.1f} | "
                  f"{m['total'] / GiB:.1f} |")
    lora_table()


def lora_table():
    """Full fine-tuning against LoRA (rank 1 and 16, every attention and MLP linear) at the recipe's settings
    (256 rows per generate, micro-batch 8, gradient checkpointing, 1024 new tokens): peak GiB per GPU."""
    runs = [("full", "bf16-mixed", 0), ("LoRA r=1", "bf16-mixed", 1), ("LoRA r=16", "bf16-mixed", 16),
            ("LoRA r=16", "bf16", 16)]
    print("\n| model | params | " + " | ".join(f"{n}, {p}" for n, p, _ in runs) + " | trainable r=1 / r=16 |")
    print("|---|---|" + "---|" * len(runs) + "---|")
    for name in ("0.5b", "1.5b", "3b", "7b"):
        ms = [precision.memory_estimate(SHAPES[name], gen_rows=256, update_rows=8, prompt_len=256, new_tokens=1024,
                                        precision=p, grad_ckpt=True, lora_rank=r) for _, p, r in runs]
        t1, t16 = (lora.count_adapter_params(SHAPES[name], r) / 1e6 for r in (1, 16))
        print(f"| {name} | {ms[0]['params'] / 1e9:.2f}B | " + " | ".join(f"{m['total'] / GiB:.1f}" for m in ms) +
              f" | {t1:.2f}M / {t16:.1f}M |")


def parse(argv=None):
    """The flags (argv None: sys.argv); bench/gpu_check.py passes its own."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="0.5b", choices=[k for k in SHAPES if k != "tiny"])
    ap.add_argument("--rows", type=int, default=64, help="sequences (P x G) in the step")
    ap.add_argument("--group_size", type=int, default=8)
    ap.add_argument("--prompt_len", type=int, default=128)
    ap.add_argument("--new_tokens", type=int, default=512)
    ap.add_argument("--micro_batch", type=int, default=8, help="rows per forward/backward (0: all at once)")
    ap.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "bf16", "fp32"])
    ap.add_argument("--grad_ckpt", default="off,on", help="gradient checkpointing settings to time: off,on | off | on")
    ap.add_argument("--lora_rank", type=int, default=0, help="r > 0: train rank-r LoRA adapters (nanorlvr/lora.py)")
    ap.add_argument("--estimate_only", action="store_true", help="print the memory table and exit")
    return ap.parse_args(argv)


def measure(args) -> dict:
    """One rollout (eager, then static=True) and one update per --grad_ckpt setting; prints each line and
    returns the figures: seconds, peak and estimated GiB, and the rollout/training log-prob gap (grpo_update's
    logp_diff_mean/max of the first update: the bf16 sampling copy against the master weights under autocast)."""
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if not cuda and args.model != "tiny":  # (gpu_check's dry run sets its own tiny sizes)
        print("no GPU present: a tiny shape on the CPU, only to check that the benchmark runs")
        args.model, args.rows, args.prompt_len, args.new_tokens, args.micro_batch = "tiny", 8, 16, 32, 4
    mcfg = SHAPES[args.model]
    print(f"{args.model}: {precision.count_params(mcfg) / 1e6:.0f}M params, {args.rows} rows x ({args.prompt_len} prompt + "
          f"{args.new_tokens} completion), micro-batch {args.micro_batch}, {args.precision}, "
          f"{torch.cuda.get_device_name() if cuda else 'cpu'}")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    model = GPT(mcfg).to(device=device, dtype=precision.weight_dtype(args.precision))
    if args.lora_rank:
        lora.add_adapters(model, args.lora_rank, 32.0)
    sampler = precision.SamplingCopy(model, args.precision)
    opt = torch.optim.AdamW(lora.trainable(model), lr=1e-6, betas=(0.9, 0.95), weight_decay=0.0)
    prompts = torch.randint(0, mcfg.vocab_size, (args.rows, args.prompt_len)).tolist()
    out = {"model": args.model, "rows": args.rows, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
           "micro_batch": args.micro_batch, "precision": args.precision}

    def peak():
        return torch.cuda.max_memory_allocated() / GiB if cuda else float("nan")

    def reset():
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    generate(sampler.get(), prompts[:2], 4, seed=0)  # warm-up
    reset()
    t = time.time()
    g = generate(sampler.get(), prompts, args.new_tokens, temperature=1.0, seed=0)
    sync()
    s = out["rollout_s"] = time.time() - t
    out["rollout_peak_gib"] = peak()
    print(f"rollout: {s:.2f} s, {args.rows * args.new_tokens / s:,.0f} new tokens/s, peak {peak():.1f} GiB")
    t = time.time()
    generate(sampler.get(), prompts, args.new_tokens, temperature=1.0, seed=0, static=True)
    sync()
    out["rollout_static_s"] = time.time() - t
    print(f"rollout, static=True (CUDA graph per token): {out['rollout_static_s']:.2f} s, "
          f"{args.rows * args.new_tokens / out['rollout_static_s']:,.0f} new tokens/s, peak {peak():.1f} GiB")

    r = torch.zeros(args.rows)
    r[::2] = 1.0  # every group mixed: every row has a non-zero advantage
    roll = Rollout([list(p) for p in prompts], g.tokens, g.logprobs.cpu(), torch.zeros(args.rows, dtype=torch.bool), r, s, 0.0)
    del g
    cfg = GRPOConfig(group_size=args.group_size, max_new_tokens=args.new_tokens, micro_batch=args.micro_batch)
    ctx = precision.autocast(args.precision, device)
    tokens = args.rows * (args.prompt_len + args.new_tokens)
    for ck in (c == "on" for c in args.grad_ckpt.split(",")):
        model.grad_ckpt, key = ck, f"update_ckpt_{'on' if ck else 'off'}"
        opt.zero_grad(set_to_none=True)
        try:
            first = grpo_update(model, opt, roll, cfg, autocast=ctx)  # warm-up (and the AdamW states)
            reset()
            t = time.time()
            stats = grpo_update(model, opt, roll, cfg, autocast=ctx)
            sync()
            s = time.time() - t
        except torch.OutOfMemoryError:
            print(f"update, grad ckpt {'on ' if ck else 'off'}: out of memory (lower --micro_batch)")
            out[key] = {"oom": True}
            opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            continue
        est = precision.memory_estimate(mcfg, gen_rows=args.rows, update_rows=args.micro_batch or args.rows,
                                   prompt_len=args.prompt_len, new_tokens=args.new_tokens, precision=args.precision,
                                   grad_ckpt=ck, lora_rank=args.lora_rank)
        static = sum(est[k] for k in ("weights", "grads", "adamw", "sampling_copy"))
        out[key] = {"s": s, "tokens_per_s": tokens / s, "peak_gib": peak(), "estimate_gib": (static + est["update_peak"]) / GiB,
                    "loss": stats.get("loss", float("nan"))}
        if "logp_diff_mean" not in out:  # the very first update: its weights are still the rollout's
            out["logp_diff_mean"], out["logp_diff_max"] = first.get("logp_diff_mean"), first.get("logp_diff_max")
        print(f"update, grad ckpt {'on ' if ck else 'off'}: {s:.2f} s, {tokens / s:,.0f} tokens/s, peak {peak():.1f} GiB "
              f"(estimate {(static + est['update_peak']) / GiB:.1f}), loss {stats.get('loss', float('nan')):.4f}")
    est = precision.memory_estimate(mcfg, gen_rows=args.rows, update_rows=args.micro_batch or args.rows,
                                    prompt_len=args.prompt_len, new_tokens=args.new_tokens, precision=args.precision,
                                    lora_rank=args.lora_rank)
    out["rollout_estimate_gib"] = (est["weights"] + est["sampling_copy"] + est["rollout_peak"]) / GiB
    print(f"rollout peak estimate {out['rollout_estimate_gib']:.1f} GiB "
          "(weights + sampling copy + rollout: the rollout above ran before any gradient or AdamW state existed)")
    return out


def main():
    args = parse()
    if args.estimate_only:
        return estimate_table()
    if not torch.cuda.is_available():
        torch.set_num_threads(2)
    measure(args)


if __name__ == "__main__":
    main()
