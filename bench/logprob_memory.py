"""
Peak memory and time of the update's log-probs (logprobs.completion_logprobs, forward + backward) with a
real vocabulary: the whole (rows, T, vocab) logits at once, against lm_head on the completion tokens only,
logprobs.LOGITS_PER_CHUNK logits at a time and recomputed in the backward. The model is Qwen2.5-shaped at the
ends (vocabulary 151,936, tied embeddings) with a small body, so the vocabulary-sized tensors dominate, as
they do in a real update. Each measurement runs in a fresh process. On the CPU: fp32, peak resident memory
(ru_maxrss) above the resident memory just before the call; on a GPU: bf16 autocast,
torch.cuda.max_memory_allocated above the allocation just before the call.

    python bench/logprob_memory.py [--rows=4 --prompt=128 --completion=512 --n_embd=256]
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nanorlvr import logprobs  # noqa: E402
from nanorlvr.model import GPT, GPTConfig  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--rows", type=int, default=4, help="sequences in the micro-batch")
parser.add_argument("--prompt", type=int, default=128, help="prompt tokens per row")
parser.add_argument("--completion", type=int, default=512, help="completion tokens per row")
parser.add_argument("--n_embd", type=int, default=256, help="width of the small body (2 layers)")
parser.add_argument("--vocab", type=int, default=151936)
parser.add_argument("--one", default="", help="internal: measure one variant (whole | chunked) and print JSON")
args = parser.parse_args()
MiB = 2 ** 20


def rss_now():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(variant):
    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    cfg = GPTConfig(arch="llama", vocab_size=args.vocab, n_layer=2, n_head=4, n_kv_head=2, n_embd=args.n_embd,
                    intermediate_size=4 * args.n_embd, tie_embeddings=True, max_seq_len=4096)
    model = GPT(cfg).to(dev)
    T = args.prompt + args.completion
    idx = torch.randint(0, args.vocab, (args.rows, T), device=dev)
    plen = torch.full((args.rows,), args.prompt, device=dev)
    clen = torch.full((args.rows,), args.completion, device=dev)
    chunk = 2 ** 62 if variant == "whole" else logprobs.LOGITS_PER_CHUNK
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    def step():
        with autocast:
            logp, mask, ent = logprobs.completion_logprobs(model, idx, plen, clen, 1.0, with_entropy=True, chunk=chunk)
        (logp.sum() / mask.sum()).backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up (allocator, kernels); the peak below is of the second call
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_now()
    t0 = time.perf_counter()
    step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_mib": (peak - base) / MiB, "seconds": seconds,
                      "device": torch.cuda.get_device_name() if cuda else "cpu"}))


if args.one:
    measure(args.one)
    sys.exit()

T = args.prompt + args.completion
print(f"{args.rows} rows x ({args.prompt} prompt + {args.completion} completion tokens), vocab {args.vocab}, "
      f"LOGITS_PER_CHUNK = 2^{logprobs.LOGITS_PER_CHUNK.bit_length() - 1} "
      f"({logprobs.LOGITS_PER_CHUNK // args.vocab} tokens per chunk); whole logits would be "
      f"{args.rows * (T - 1) * args.vocab / 1e9:.2f}e9 elements")
res = {}
for variant in ("whole", "chunked"):
    cmd = [sys.executable, __file__, f"--one={variant}"] + [a for a in sys.argv[1:] if not a.startswith("--one")]
    res[variant] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    print(f"{variant:8s} peak {res[variant]['peak_mib']:8.0f} MiB above the start, "
          f"forward + backward {res[variant]['seconds']:.2f} s ({res[variant]['device']})", flush=True)
w, c = res["whole"], res["chunked"]
print(f"chunked / whole: memory {c['peak_mib'] / w['peak_mib']:.3f}x, time {c['seconds'] / w['seconds']:.2f}x")
