"""
Sample from a checkpoint, or from two checkpoints decoded in lock-step with logit extrapolation, and
measure held-out accuracy. Any checkpoint works, the toy or a Hugging Face model: each is prompted in its
own format (the toy's, or its chat template), and evaluated by default on the held-out problems of the run
that trained it (prompts.py: format_for, held_out_for).

    python sample.py --ckpt=out/grpo --prompt="(3+4)*5" --answer=35              # a run dir: its last step
    python sample.py --ckpt=SmolLM2-135M-Instruct --prompt="What is 7+5?" --temperature=0
    python sample.py --ckpt=out/grpo --eval=200 --k=8 --out=eval.json
    python sample.py --ckpt=out/smol --eval=50 --data=gsm8k_test.jsonl            # GSM8K / MATH / toy jsonl
    python sample.py --extrapolate=logits --ckpt0=out/grpo/step_000050 --ckpt1=out/grpo --alpha=1.5 --eval=200
    python sample.py --extrapolate=dlogp --base=out/base --rl=out/grpo --gamma=0.1 --tau=-0.3 --eval=200
    python sample.py --extrapolate=dlogp --replace_only=true ...   (gamma 0: replace from the RL model)
    python sample.py --extrapolate=dlogp --dense=true ...          (every position extrapolated, RL-led)
    python sample.py --extrapolate=logits ... --sweep=true --alpha_sweep=0,1,1.5,2,3   # markdown table
    python sample.py --extrapolate=dlogp ... --sweep=true --gamma_sweep=0,0.1 --tau_sweep=-0.2,-0.3,-0.4
"""
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from nanorlvr.infra import checkpoint as ckpt
from nanorlvr.infra.common import UsageError, floats, log, opt, parse_config, pick_device, run_main, write_json
from nanorlvr.engine import generate
from nanorlvr.evaluate import evaluator
from nanorlvr.papers.lockstep import GATES, generate_lockstep, lockstep_generate_fn, replacement_ratio
from nanorlvr.prompts import budget_for, format_for, format_for_pair, held_out_for, load_problems
from nanorlvr.verifier import reward


@dataclass
class SampleConfig:
    ckpt: str = opt("out/grpo", "checkpoint: a checkpoint folder (a HF dir too), or a run folder "
                                "(its last step)")
    prompt: str = opt("", "a question, e.g. (3+4)*5, rendered in the model's prompt format (chat template)")
    prompt_file: str = opt("", "questions, one per line (or a .jsonl of problems, with their answers)")
    answer: str = opt("", "gold answer of --prompt: each completion is verified against it")
    num_samples: int = opt(4, "completions per prompt (1 when greedy)")
    temperature: float = opt(1.0, "sampling temperature (0: greedy)")
    top_p: float = opt(1.0, "nucleus")
    max_new_tokens: int = opt(0, "completion budget (0: the trained run's own, train.py's --max_new_tokens)")
    seed: int = opt(1234, "sampling seed")
    threads: int = opt(0, "torch CPU threads (0: torch's default)")
    device: str = opt("auto", "auto | cpu | cuda | mps")
    batch_size: int = opt(512, "rows decoded at once")
    # evaluation
    eval: int = opt(0, "evaluate on this many held-out problems (0: sample the prompts instead)")
    k: int = opt(8, "samples per problem for avg@k / pass@k")
    data: str = opt("", "problems to evaluate on: GSM8K / MATH / toy jsonl (empty: the trained run's "
                        "held-out ones)")
    data_dir: str = opt("data", "where the toy task's jsonl files live (generated if missing)")
    out: str = opt("", "write the evaluation (or sweep) as json here")
    # lock-step extrapolation
    extrapolate: str = opt("none", "none | logits (paper 2, Eq. 1) | dlogp (paper 1)")
    ckpt0: str = opt("out/grpo/step_000050", "logits: the earlier checkpoint t0")
    ckpt1: str = opt("out/grpo", "logits: the later checkpoint t1")
    alpha: float = opt(1.5, "logits: z = z0 + alpha (z1 - z0), alpha = (t' - t0) / (t1 - t0)")
    base: str = opt("out/base", "dlogp: the base model (leads generation when gated)")
    rl: str = opt("out/grpo", "dlogp: the RL model")
    gamma: float = opt(0.1, "dlogp: score = (1 + gamma) log pi_RL - gamma log pi_base")
    gate: str = opt("dlogp", "dlogp: criterion of the replacement gate: dlogp | kl | entropy | random")
    tau: float = opt(-0.3, "dlogp: gate threshold (dlogp <= tau, kl >= tau, entropy >= tau, rand < tau)")
    replace_only: bool = opt(False, "dlogp: gamma = 0, replace gated tokens by the RL model's")
    dense: bool = opt(False, "dlogp: no gate, every position from the extrapolated distribution (RL-led)")
    # sweeps (one evaluation per setting, --eval problems, 200 if not given)
    sweep: bool = opt(False, "print a markdown accuracy table over the sweep values")
    alpha_sweep: str = opt("0,1,1.5,2,3", "logits: alphas of the sweep")
    gamma_sweep: str = opt("", "dlogp: gammas of the sweep (default: --gamma)")
    tau_sweep: str = opt("", "dlogp: taus of the sweep (default: --tau)")

    def validate(self):
        if self.extrapolate not in ("none", "logits", "dlogp"):
            raise UsageError(f"--extrapolate must be none, logits or dlogp, not {self.extrapolate!r}")
        if self.gate not in GATES:
            raise UsageError(f"--gate must be one of {', '.join(GATES)}, not {self.gate!r}")
        if self.sweep and self.extrapolate == "none":
            raise UsageError("--sweep sweeps an extrapolation: give --extrapolate=logits or dlogp")
        if not (self.prompt or self.prompt_file or self.eval or self.sweep):
            raise UsageError("give --prompt, --prompt_file or --eval=N")
        if self.prompt_file and not Path(self.prompt_file).is_file():
            raise UsageError(f"--prompt_file: {self.prompt_file} does not exist")
        if (self.num_samples < 1 or self.k < 0 or self.eval < 0 or self.max_new_tokens < 0
                or self.temperature < 0):
            raise UsageError("need --num_samples >= 1, --k, --eval, --max_new_tokens and --temperature >= 0")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"--top_p must be in (0, 1], not {self.top_p}")
        for flag in ("alpha_sweep", "gamma_sweep", "tau_sweep"):
            floats(getattr(self, flag), f"--{flag}")


def settings(cfg):
    """(label, dict of generate_lockstep arguments) per setting: the single one, or the sweep's grid."""
    if cfg.extrapolate == "logits":
        alphas = floats(cfg.alpha_sweep) if cfg.sweep else [cfg.alpha]
        return [(f"alpha={a:g}", dict(mode="logits", coef=a)) for a in alphas]
    if cfg.replace_only:  # gamma 0: the RL model's token replaces the base's where the gate fires
        gammas = [0.0]
    else:
        gammas = floats(cfg.gamma_sweep or str(cfg.gamma)) if cfg.sweep else [cfg.gamma]
    if cfg.dense:
        return [(f"dense gamma={g:g}", dict(mode="dlogp", coef=g)) for g in gammas]
    taus = floats(cfg.tau_sweep or str(cfg.tau)) if cfg.sweep else [cfg.tau]
    return [(f"gate {cfg.gate} tau={t:g} gamma={g:g}", dict(mode="dlogp", coef=g, gate=cfg.gate, tau=t))
            for g in gammas for t in taus]


def summary(label, r, k):
    s = f"{label}: n={r['n']} greedy {r['greedy_acc']:.3f} (truncated {r['greedy_truncated']:.3f})"
    if k:  # truncated responses score 0: their share is printed beside each accuracy
        s += f"  avg@{k} {r[f'avg{k}']:.3f}  pass@{k} {r[f'pass{k}']:.3f} (truncated {r['truncated']:.3f})"
    return s + (f"  replaced {r['replacement_ratio']:.3f}" if "replacement_ratio" in r else "")


def evaluate_all(cfg, model, pair, fmt, problems):
    """One evaluation per setting (plus plain reference rows in a sweep); a markdown table if sweeping."""
    rows, evaluate_fn = [], evaluator(fmt, problems, cfg.k, cfg.temperature, cfg.max_new_tokens, cfg.top_p,
                                      cfg.seed, cfg.batch_size)
    if pair is None or cfg.sweep:  # plain sampling: the model, or both models as the sweep's reference rows
        for name, m in ([("plain", model)] if pair is None else [("plain a", pair[0]), ("plain b", pair[1])]):
            rows.append((name, evaluate_fn(m)))
            log(summary(*rows[-1], cfg.k))
    for label, kw in (settings(cfg) if pair is not None else []):
        calls = [] if kw.get("gate") else None  # the replacement ratio means something only when gated
        fn = lockstep_generate_fn(*pair, max_new_tokens=cfg.max_new_tokens, stop_ids=fmt.stop_ids,
                                  top_p=cfg.top_p, batch_size=cfg.batch_size, calls=calls, **kw)
        rows.append((label, evaluate_fn(model, fn)))
        if calls is not None:
            rows[-1][1]["replacement_ratio"] = replacement_ratio(calls)
        log(summary(*rows[-1], cfg.k))
    if cfg.sweep:
        k = cfg.k
        log(f"\n| setting | greedy | avg@{k} | pass@{k} | replaced |\n|---|---|---|---|---|")
        for label, r in rows:
            rep = f"{r['replacement_ratio']:.3f}" if "replacement_ratio" in r else "-"
            log(f"| {label} | {r['greedy_acc']:.3f} | {r.get(f'avg{k}', 0):.3f} | "
                f"{r.get(f'pass{k}', 0):.3f} | {rep} |")
    if cfg.out:
        write_json(cfg.out, {"config": asdict(cfg), "results": [dict(setting=lb, **r) for lb, r in rows]})


def sample_prompts(cfg, model, pair, fmt):
    """Print num_samples completions of each prompt, verified when a gold answer is known."""
    if cfg.prompt_file.endswith(".jsonl"):
        problems = load_problems(cfg.prompt_file, "--prompt_file")
    elif cfg.prompt_file:
        lines = Path(cfg.prompt_file).read_text().splitlines()
        problems = [{"question": q.strip(), "answer": ""} for q in lines if q.strip()]
    else:
        problems = [{"question": cfg.prompt, "answer": cfg.answer}]
    n = 1 if cfg.temperature == 0 else cfg.num_samples  # greedy: every sample would be the same
    prompts = [fmt.encode(p["question"]) for p in problems for _ in range(n)]
    golds = [p["answer"] for p in problems for _ in range(n)]
    kw = dict(temperature=cfg.temperature, top_p=cfg.top_p, stop_ids=fmt.stop_ids, seed=cfg.seed,
              batch_size=cfg.batch_size)
    if pair is None:
        g = generate(model, prompts, cfg.max_new_tokens, **kw)
    else:
        label, setting = settings(cfg)[0]
        g = generate_lockstep(*pair, prompts, cfg.max_new_tokens, **setting, **kw)
    ok = [None] * len(prompts)
    known = [i for i, a in enumerate(golds) if a]
    if known:
        for i, v in zip(known, reward([fmt.decode(g.tokens[i]) for i in known], [golds[i] for i in known],
                                      truncated=g.truncated[known].tolist(),
                                      questions=[problems[i // n]["question"] for i in known])):
            ok[i] = v
    for i, toks in enumerate(g.tokens):
        if i % n == 0:
            log(f"\n### {problems[i // n]['question']}")
        mark = "" if ok[i] is None else ("  [correct]" if ok[i] else "  [wrong]")
        log(f"--- sample {i % n}{' (truncated)' if g.truncated[i] else ''}{mark}")
        log(fmt.decode(toks))
    if pair is not None and setting.get("gate"):
        log(f"\n{label}: the gate fired at {g.replacement_ratio:.3f} of the generated positions")
    if known:
        log(f"correct: {sum(ok[i] for i in known)}/{len(known)}")


@torch.no_grad()
def main(argv=None):
    cfg = parse_config(SampleConfig, argv, description=__doc__.strip().split("\n\n")[0])
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    # the checkpoints, and the trained one's prompt format: both of a pair must share one vocabulary
    if cfg.extrapolate == "none":
        trained, flag = ckpt.resolve_checkpoint(cfg.ckpt, "--ckpt"), "--ckpt"
        fmt, paths = format_for(trained, flag), [trained]
    else:
        flags = ("--ckpt0", "--ckpt1") if cfg.extrapolate == "logits" else ("--base", "--rl")
        paths = [ckpt.resolve_checkpoint(getattr(cfg, f[2:]), f) for f in flags]
        fmt, trained, flag = format_for_pair(*paths, flags), paths[1], flags[1]
    cfg.max_new_tokens = cfg.max_new_tokens or budget_for(trained)
    problems = None
    if cfg.eval or cfg.sweep:
        problems = held_out_for(trained, cfg.eval or 200, cfg.data, cfg.data_dir, flag)
    models = [ckpt.load_model(p, device=device).eval() for p in paths]
    pair, model = (None, models[0]) if len(models) == 1 else (tuple(models), models[1])
    log(f"model{'s' if pair else ''} {', '.join(map(str, paths))}: {type(fmt).__name__}, "
        f"{cfg.max_new_tokens} new tokens at most")
    if problems is not None:
        evaluate_all(cfg, model, pair, fmt, problems)
    else:
        sample_prompts(cfg, model, pair, fmt)


if __name__ == "__main__":
    run_main(main)
