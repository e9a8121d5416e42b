"""Benchmark the fused logit-extrapolation kernels against the torch reference (eager, torch.compile).

For B in {1, 64, 256}, V in {50257, 151936}, fp32 and bf16 logits, and both outputs (log-probs
(B, V) fp32, or one Gumbel-max sample per row), prints a markdown table of median times, the
achieved bandwidth (bytes of a and b read once + bytes written, over the time) and its share of the
device's copy bandwidth, measured in the same run (a large device-to-device copy: bytes read +
written, over the time). Without a GPU only the torch path runs, on fewer shapes and iterations.

    python bench/kernel.py [--mode=logits|dlogp] [--compile=1] [--short=1]

--short=1 (bench/gpu_check.py): one vocabulary (151936; the CPU: 50257) and B in {1, 256} (the CPU: 1).
"""

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, uninstalled
from nanorlvr.papers import kernels as K  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--mode", default="logits", choices=K.MODES, help="paper 2's Eq. 1, or paper 1's rule")
parser.add_argument("--compile", type=int, default=1, help="also time torch.compile of the torch reference")
parser.add_argument("--short", type=int, default=0, help="1: one vocabulary and two batch sizes (a quick check)")
args = parser.parse_args()
cuda = torch.cuda.is_available()
dev = "cuda" if cuda else "cpu"
coef = 1.5 if args.mode == "logits" else 0.1  # alpha of paper 2, gamma of paper 1
T = 0.6


def bench(fn):
    """Median milliseconds of fn() (on a GPU: CUDA events, L2 flushed before each call)."""
    if cuda:
        import triton.testing
        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


if cuda:
    src = torch.randn(2**28, device=dev)  # 1 GiB
    dst = torch.empty_like(src)
    copy_gbs = 2 * src.nbytes / bench(lambda: dst.copy_(src)) / 1e6
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, date {datetime.date.today()}")
    print(f"device-to-device copy: {copy_gbs:.0f} GB/s (bytes read + written)")
    batches = (1, 64, 256)
else:
    print("NO GPU PRESENT: timing the torch reference on the CPU only (no Triton, no torch.compile),")
    print("3 iterations each. Run on a CUDA machine for the kernel numbers.")
    batches = (1, 64)
batches = ((1, 256) if cuda else (1,)) if args.short else batches
vocabs = ((151936,) if cuda else (50257,)) if args.short else (50257, 151936)

kinds = {"logprobs": (K.mix_logprobs_triton, K.mix_logprobs_torch), "sample": (K.mix_sample_triton, K.mix_sample_torch)}
compiled = {kind: torch.compile(ref, dynamic=True) for kind, (_, ref) in kinds.items()} if args.compile else {}
lines = []
for kind, (fused, ref) in kinds.items():
    for dtype in (torch.float32, torch.bfloat16):
        for B in batches:
            for V in vocabs:
                gen = torch.Generator(dev).manual_seed(0)
                a = (3 * torch.randn(B, V, device=dev, generator=gen)).to(dtype)
                b = (a.float() + torch.randn(B, V, device=dev, generator=gen)).to(dtype)
                gbytes = (a.nbytes + b.nbytes + (B * V * 4 if kind == "logprobs" else B * 8)) / 1e9
                t_eager = bench(lambda: ref(a, b, args.mode, coef, T))
                head = f"| {kind} | {str(dtype)[6:]} | {B} | {V} |"
                if not cuda:
                    lines.append(f"{head} {t_eager:.1f} | {gbytes / t_eager * 1e3:.1f} |")
                    print(lines[-1], flush=True)
                    continue
                t = bench(lambda: fused(a, b, args.mode, coef, T))
                # the floor for this size: a device copy moving as many bytes (read + written) as the kernel
                src = torch.empty(int(gbytes * 1e9) // 8, device=dev)
                dst = torch.empty_like(src)
                t_copy = bench(lambda: dst.copy_(src))
                err = ""
                if kind == "logprobs":
                    out, want = fused(a, b, args.mode, coef, T), ref(a, b, args.mode, coef, T)
                    err = f"{((out - want).norm() / want.norm()).item():.1e}"
                comp = "n/a | n/a"
                if args.compile:
                    try:
                        fn = compiled[kind]
                        tc = bench(lambda: fn(a, b, args.mode, coef, T))
                        comp = f"{1e3 * tc:.1f} | {tc / t:.1f}"
                    except Exception as e:  # torch.compile is optional here
                        print(f"torch.compile failed ({kind} {dtype} B={B} V={V}): {type(e).__name__}: {e}")
                gbs = gbytes / t * 1e3
                lines.append(f"{head} {1e3 * t:.1f} | {gbs:.0f} | {100 * gbs / copy_gbs:.0f}% | {1e3 * t_copy:.1f} | "
                             f"{1e3 * t_eager:.1f} | {t_eager / t:.1f} | {comp} | {err} |")
                print(lines[-1], flush=True)

print(f"\nmode={args.mode} coef={coef} T={T}; GB/s counts a and b read once plus the output written; "
      "same-size copy: a device copy moving those bytes, the floor at that size (launch included)")
if cuda:
    print("| out | dtype | B | V | fused µs | GB/s | % copy BW | same-size copy µs | eager µs | × eager | compile µs | "
          "× compile | rel err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
else:
    print("| out | dtype | B | V | torch eager ms (CPU) | GB/s |")
    print("|---|---|---|---|---|---|")
print("\n".join(lines))
if cuda:
    print("\nlogprobs reads a and b twice (log-sum-exp pass, then write pass): where the second read misses L2,")
    print("its share of copy BW at these counted bytes is capped near 60% (fp32) / 67% (bf16).")
