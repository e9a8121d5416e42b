"""
Analyses of a GRPO run and of (base, RL) model pairs, one subcommand per paper method. Each writes
report.json, PNG plots and summary.md into --out (default out/analysis/<subcommand>).

    python analyze.py dlogp --base=out/grpo/step_000000 --rl=out/grpo/step_000150   # paper 1: token metrics, replacement
    python analyze.py linearity --run=out/grpo                                       # paper 2: weight / log-prob R^2
    python analyze.py extrapolate --run=out/grpo --t0=50 --t1=100 --alpha=1,1.5,2,3  # paper 2, Eq. 2
    python analyze.py rank1 --base=out/grpo/step_000000 --rl=out/grpo/step_000150    # paper 3: rank-1 model
    python analyze.py alpharl --run=out/grpo --window=2,3                            # paper 3: AlphaRL

Accuracy is avg@k on the first --n_eval held-out toy problems (greedy accuracy with --k=0).
"""
import argparse
import math
import time
from pathlib import Path

import torch

from nanorlvr.common import log, pick_device, write_json
from nanorlvr.tokenizer import toy_tokenizer


def floats(s):
    return [float(x) for x in s.split(",") if x]


def ints(s):
    return [int(x) for x in s.split(",") if x]


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", default="", help="output folder (default out/analysis/<subcommand>)")
    common.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    common.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    common.add_argument("--data_dir", default="data", help="where the toy task's jsonl files are")
    common.add_argument("--n_eval", type=int, default=500, help="held-out problems for accuracy")
    common.add_argument("--k", type=int, default=8, help="samples per problem for avg@k (0: greedy accuracy)")
    common.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    common.add_argument("--top_p", type=float, default=1.0, help="nucleus for sampling (paper 1 used 0.7)")
    common.add_argument("--max_new_tokens", type=int, default=64, help="completion budget")
    common.add_argument("--seed", type=int, default=1234,
                        help="seed of sampling (1234 = train.py's evaluation) and of entry selection")
    common.add_argument("--batch_size", type=int, default=32, help="sequences per teacher-forced forward")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("dlogp", parents=[common], help="paper 1: token metrics of base vs RL text, token replacement")
    s.add_argument("--base", required=True, help="base checkpoint folder")
    s.add_argument("--rl", required=True, help="RL checkpoint folder")
    s.add_argument("--n_prompts", type=int, default=200, help="held-out prompts for the token metrics")
    s.add_argument("--samples", type=int, default=4, help="responses per prompt from each model")
    s.add_argument("--ratios", type=floats, default=floats("0.01,0.02,0.05,0.1,0.2,0.3,0.4"),
                   help="target replacement ratios of the sweep ('' skips the replacement part)")
    s.add_argument("--criteria", default="dlogp,kl,entropy,random", help="gate criteria to sweep")

    s = sub.add_parser("linearity", parents=[common], help="paper 2: R^2 vs step of weights and log-probs")
    s.add_argument("--run", required=True, help="run folder with step_* checkpoints")
    s.add_argument("--n_probe", type=int, default=256, help="held-out prompts of the base-sampled log-prob probe")
    s.add_argument("--control", default="", help="optional second run (e.g. SFT-like) for the weight R^2")

    s = sub.add_parser("rank1", parents=[common], help="paper 3: norm-matched rank-k model and its recovery")
    s.add_argument("--base", required=True, help="base checkpoint folder")
    s.add_argument("--rl", required=True, help="RL checkpoint folder")
    s.add_argument("--rank", type=int, default=1, help="k of the rank-k update")

    s = sub.add_parser("alpharl", parents=[common], help="paper 3: predict the final model from an early window")
    s.add_argument("--run", required=True, help="run folder with step_* checkpoints")
    s.add_argument("--window", type=ints, default=ints("2"),
                   help="window sizes K: checkpoints after step 0 used for the fit (comma list sweeps)")
    s.add_argument("--add_to", default="w0", help="w0 (paper) | wk (authors' code: adds the update to W_K)")
    s.add_argument("--with_w0", type=lambda v: v.lower() in ("1", "true", "yes"), default=False,
                   help="also fit the point a = 0 at step 0")

    s = sub.add_parser("extrapolate", parents=[common], help="paper 2, Eq. 2: weight extrapolation sweep")
    s.add_argument("--run", required=True, help="run folder with step_* checkpoints")
    s.add_argument("--t0", type=int, required=True, help="earlier checkpoint step")
    s.add_argument("--t1", type=int, required=True, help="later checkpoint step")
    s.add_argument("--alpha", type=floats, default=floats("1,1.5,2,3"), help="extrapolation factors")
    return p


def jsonable(x):
    """nan / inf -> None, tensors -> lists, recursively (report.json stays strict JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def main(argv=None):
    args = build_parser().parse_args(argv)
    from nanorlvr import analyses_weights as W  # after parsing: --help stays fast
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or f"out/analysis/{args.cmd}")
    out.mkdir(parents=True, exist_ok=True)
    device, enc, t_start = pick_device(args.device), toy_tokenizer(), time.time()
    problems = W.held_out(max(args.n_eval, getattr(args, "n_prompts", 0), getattr(args, "n_probe", 0)), args.data_dir)
    evaluate_fn = W.make_evaluator(enc, problems[:args.n_eval], args.k, args.temperature, args.max_new_tokens,
                                   args.top_p, args.seed)
    log(f"analyze {args.cmd} on {device}, writing to {out}")
    if args.cmd == "dlogp":
        from nanorlvr.analyses_tokens import run_dlogp
        report, summary = run_dlogp(args.base, args.rl, out, enc, problems[:args.n_prompts], evaluate_fn,
                                    samples=args.samples, ratios=args.ratios, criteria=args.criteria.split(","),
                                    max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                    top_p=args.top_p, k=args.k, seed=args.seed, batch_size=args.batch_size,
                                    device=device)
    elif args.cmd == "linearity":
        report, summary = W.run_linearity(args.run, out, enc, problems[:args.n_probe], device, args.max_new_tokens,
                                          args.temperature, args.seed, args.batch_size, args.control or None)
    elif args.cmd == "rank1":
        report, summary = W.run_rank1(args.base, args.rl, out, evaluate_fn, args.rank, device)
    elif args.cmd == "alpharl":
        report, summary = W.run_alpharl(args.run, out, evaluate_fn, args.window, args.add_to, args.with_w0, device)
    else:
        report, summary = W.run_extrapolate(args.run, out, evaluate_fn, args.t0, args.t1, args.alpha, device)
    seconds = time.time() - t_start
    write_json(out / "report.json", jsonable({"command": args.cmd, "args": vars(args), **report, "seconds": seconds}))
    text = f"# analyze.py {args.cmd}\n\n" + "\n".join(f"- {line}" for line in summary) + "\n"
    (out / "summary.md").write_text(text)
    log(text + f"\n{seconds:.0f}s; report in {out / 'report.json'}")
    return report


if __name__ == "__main__":
    main()
