"""Sweep the fused kernels' launch parameters (columns per step, warps per program, chunks per row) on a
GPU and print the best per (output, dtype, B, V), as a share of the measured copy bandwidth. What
papers/kernels.py picks by default (`_warps`, `_split`) came from this sweep; run it again on a new GPU.
For sampling it also times the default launch with 7 Philox rounds instead of 10 (`K.PHILOX_ROUNDS`):
bf16 sampling is bound by instruction issue, and Philox is half of its instructions
(`python bench/kernel_compile.py --sass`).

    python bench/kernel_tune.py
"""
import sys
from pathlib import Path

import torch
import triton.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nanorlvr.papers import kernels as K  # noqa: E402

bench = lambda fn: triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")  # noqa: E731
src = torch.randn(2**28, device="cuda")
dst = torch.empty_like(src)
copy_gbs = 2 * src.nbytes / bench(lambda: dst.copy_(src)) / 1e6
print(f"{torch.cuda.get_device_name()}: copy {copy_gbs:.0f} GB/s")
default_warps = K._warps
for kind, fn in (("sample", K.mix_sample_triton), ("logprobs", K.mix_logprobs_triton)):
    for dtype in (torch.float32, torch.bfloat16):
        for B in (64, 256):
            for V in (50257, 151936):
                a = (3 * torch.randn(B, V, device="cuda")).to(dtype)
                b = (a.float() + torch.randn(B, V, device="cuda")).to(dtype)
                gbytes = (a.nbytes + b.nbytes + (B * V * 4 if kind == "logprobs" else B * 8)) / 1e9
                results = []
                for block in (512, 1024, 2048):
                    for warps in (4, 8, 16):
                        for chunks in (None, 1, 2, 4, 8, 16):
                            K.BLOCK, K._warps = block, (lambda a, w=warps: w)
                            try:
                                t = bench(lambda: fn(a, b, "logits", 1.5, 0.6, chunks=chunks))
                            except Exception as e:  # e.g. out of registers / shared memory
                                print(f"  skip block={block} warps={warps}: {type(e).__name__}")
                                continue
                            results.append((t, block, warps, chunks))
                K.BLOCK, K._warps = 1024, default_warps
                t0 = bench(lambda: fn(a, b, "logits", 1.5, 0.6))
                results.sort()
                share = lambda t: f"{100 * gbytes / t * 1e3 / copy_gbs:.0f}%"  # noqa: E731
                if kind == "sample":
                    K.PHILOX_ROUNDS = 7
                    t7 = bench(lambda: fn(a, b, "logits", 1.5, 0.6))
                    K.PHILOX_ROUNDS = 10
                    print(f"  Philox rounds 10 -> 7: {share(t0)} -> {share(t7)}")
                print(f"{kind} {str(dtype)[6:]} B={B} V={V}: default {share(t0)}; best " +
                      "; ".join(f"{share(t)} (block {bl}, warps {w}, chunks {c})" for t, bl, w, c in results[:3]), flush=True)
