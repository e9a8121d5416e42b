"""
The rollout/training log-prob gap: the same sampled tokens scored by the sampler (the engine's log-probs)
and by the trainer (completion_logprobs, as grpo_update computes them), for each precision of train.py:

  fp32        sampler = the fp32 model; trainer = the same model (engine vs teacher-forced forward only);
  bf16        sampler = the bf16 model; trainer = the same bf16 model;
  bf16-mixed  sampler = a bf16 copy (precision.SamplingCopy); trainer = the fp32 master weights under bf16 autocast.

For each: mean and max |log pi_train - log pi_rollout| over the completion tokens, the share of tokens whose
first-step ratio pi_train / pi_rollout already lies outside PPO's clip range [1 - 0.2, 1 + 0.28], and the
mean truncated-importance weight min(ratio, 2).

    python bench/mismatch.py --model=out/base                 # the toy (prompts from its task)
    python bench/mismatch.py --model=path/to/hf_model_dir     # a real model, the same questions in its chat template
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nanorlvr.infra import checkpoint as ckpt  # noqa: E402
from nanorlvr.engine import generate  # noqa: E402
from nanorlvr.infra.precision import SamplingCopy, autocast  # noqa: E402
from nanorlvr.prompts import format_for  # noqa: E402
from nanorlvr.logprobs import completion_logprobs, pack  # noqa: E402
from nanorlvr.tasks import ensure_toy_data, load_jsonl  # noqa: E402


def gap(precision, path, prompts, stop_ids, args):
    model = ckpt.load_model(path, dtype=torch.bfloat16 if precision == "bf16" else torch.float32).eval()
    g = generate(SamplingCopy(model, precision).get(), prompts, args.max_new, temperature=args.temperature, seed=0,
                 stop_ids=stop_ids, batch_size=args.batch)
    rows, d = range(0, len(prompts), args.batch), []
    with torch.no_grad(), autocast(precision, "cpu"):
        for i in rows:  # the trainer's log-probs, as grpo_update gets them
            idx, plen, clen = pack(prompts[i:i + args.batch], g.tokens[i:i + args.batch])
            logp, mask = completion_logprobs(model, idx, plen, clen, args.temperature)
            d.append((logp.float() - g.logprobs[i:i + args.batch, :logp.size(1)])[mask.bool()])
    d = torch.cat(d)
    ratio = d.exp()
    return {"tokens": d.numel(), "mean": d.abs().mean().item(), "max": d.abs().max().item(),
            "outside_clip": ((ratio < 0.8) | (ratio > 1.28)).float().mean().item(),
            "tis2": ratio.clamp(max=2.0).mean().item()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a run checkpoint (the toy) or a Hugging Face model directory")
    p.add_argument("--n_prompts", type=int, default=32)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--max_new", type=int, default=48)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=64, help="rows per generate / scoring call")
    p.add_argument("--data_dir", default="data", help="where the toy task's questions are (generated if missing)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = ckpt.resolve_checkpoint(args.model, "--model")
    _, test = ensure_toy_data(args.data_dir)
    questions = [q["question"] for q in load_jsonl(test)[:args.n_prompts]]
    fmt = format_for(path, "--model")  # the checkpoint's own prompt format: the toy's or its chat template
    stop_ids = fmt.stop_ids
    prompts = [fmt.encode(q) for q in questions for _ in range(args.group)]
    print(f"{path.name}: {args.n_prompts} prompts x {args.group} samples, T={args.temperature}, up to {args.max_new} tokens; "
          f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| precision | tokens | mean abs gap | max abs gap | ratio outside [0.8, 1.28] | mean min(ratio, 2) |\n|---|---|---|---|---|---|")
    for precision in ("fp32", "bf16", "bf16-mixed"):
        r = gap(precision, path, prompts, stop_ids, args)
        print(f"| {precision} | {r['tokens']} | {r['mean']:.2e} | {r['max']:.2e} | {r['outside_clip']:.2%} | {r['tis2']:.4f} |")


if __name__ == "__main__":
    main()
