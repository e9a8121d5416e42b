"""
Analyses of a GRPO run and of (base, RL) model pairs, one subcommand per paper method. Each writes
report.json, PNG plots and summary.md into --out (default out/analysis/<subcommand>).

    python analyze.py dlogp --base=out/grpo/step_000000 --rl=out/grpo/step_000150   # paper 1: token metrics
    python analyze.py linearity --run=out/grpo                                       # paper 2: linearity R^2
    python analyze.py extrapolate --run=out/grpo --t0=50 --t1=100 --alpha=1,1.5,2,3  # paper 2, Eq. 2
    python analyze.py rank1 --base=out/grpo/step_000000 --rl=out/grpo/step_000150    # paper 3: rank-1 model
    python analyze.py alpharl --run=out/grpo --window=2,3                            # paper 3: AlphaRL
    python analyze.py dlogp --base=smollm2 --rl=out/smol --data=gsm8k_test.jsonl     # any checkpoints, data

Any checkpoint works, the toy or a Hugging Face model: each is prompted in its own format, and accuracy is
greedy accuracy (avg@k with --k=k) on the first --n_eval problems of --data, or by default on the held-out
problems of the run that trained it (prompts.py: format_for, held_out_for). The defaults are the settings of
the README's results table (greedy on 1,000 problems; dlogp: on 500, four replacement ratios), so a run's
figures compare with it, and each subcommand finishes in minutes on the quickstart's run on a laptop CPU;
every analysis prints, and writes to report.json and summary.md, the settings its figures depend on.
"""
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from nanorlvr.infra import checkpoint as ckpt
from nanorlvr.infra.common import UsageError, floats, log, opt, parse_config, pick_device, run_main, write_json
from nanorlvr.papers.lockstep import GATES
from nanorlvr.prompts import budget_for, format_for, format_for_pair, held_out_for


def ints(s, flag):
    return [int(x) for x in floats(s, flag)]


@dataclass
class Common:
    """flags of every subcommand"""
    out: str = opt("", "output folder (default out/analysis/<subcommand>)")
    device: str = opt("auto", "auto | cpu | cuda | mps")
    threads: int = opt(0, "torch CPU threads (0: torch's default)")
    data: str = opt("", "held-out problems: GSM8K / MATH / toy jsonl (empty: the held-out problems of the "
                        "trained run)")
    data_dir: str = opt("data", "where the toy task's jsonl files are (generated if missing)")
    n_eval: int = opt(1000, "held-out problems for accuracy")
    k: int = opt(0, "samples per problem for avg@k (0: greedy accuracy)")
    temperature: float = opt(1.0, "sampling temperature")
    top_p: float = opt(1.0, "nucleus for sampling (paper 1 used 0.7)")
    max_new_tokens: int = opt(0, "completion budget (0: the trained run's own, train.py's --max_new_tokens)")
    seed: int = opt(1234, "seed of sampling (1234 = train.py's evaluation) and of entry selection")
    batch_size: int = opt(32, "sequences per teacher-forced forward")

    def validate(self):
        if self.k < 0 or self.n_eval < 1 or self.max_new_tokens < 0 or self.temperature < 0:
            raise UsageError("need --k >= 0, --n_eval >= 1, --max_new_tokens >= 0 and --temperature >= 0")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"--top_p must be in (0, 1], not {self.top_p}")


@dataclass
class Dlogp(Common):
    """paper 1: token metrics of base vs RL text, token replacement"""
    base: str = opt("", "base checkpoint (a checkpoint folder, or a run folder: its last step)")
    rl: str = opt("", "RL checkpoint (a checkpoint folder, or a run folder: its last step)")
    n_eval: int = opt(500, "held-out problems for the accuracy of each replacement ratio")
    n_prompts: int = opt(200, "held-out prompts for the token metrics")
    samples: int = opt(4, "responses per prompt from each model")
    ratios: str = opt("0.02,0.05,0.1,0.2", "target replacement ratios of the sweep ('' skips it; the wider "
                                           "sweep: 0.01,0.02,0.05,0.1,0.2,0.3,0.4)")
    criteria: str = opt(",".join(GATES), "gate criteria to sweep")

    def validate(self):
        super().validate()
        need(self, "base", "rl")
        floats(self.ratios, "--ratios")
        if not set(self.criteria.split(",")) <= set(GATES):
            raise UsageError(f"--criteria: each of {', '.join(GATES)}, not {self.criteria!r}")


@dataclass
class Linearity(Common):
    """paper 2: R^2 vs step of weights and log-probs"""
    run: str = opt("", "run folder with step_* checkpoints")
    n_probe: int = opt(64, "held-out prompts of the base-sampled log-prob probe")
    control: str = opt("", "optional second run (e.g. SFT-like) for the weight R^2")

    def validate(self):
        super().validate()
        need(self, "run")


@dataclass
class Rank1(Common):
    """paper 3: norm-matched rank-k model and its recovery"""
    base: str = opt("", "base checkpoint (a checkpoint folder, or a run folder: its last step)")
    rl: str = opt("", "RL checkpoint (a checkpoint folder, or a run folder: its last step)")
    rank: int = opt(1, "k of the rank-k update")

    def validate(self):
        super().validate()
        need(self, "base", "rl")
        if self.rank < 1:
            raise UsageError(f"--rank must be >= 1, not {self.rank}")


@dataclass
class AlphaRL(Common):
    """paper 3: predict the final model from an early window"""
    run: str = opt("", "run folder with step_* checkpoints")
    window: str = opt("2", "window sizes K: checkpoints after step 0 used for the fit (comma list sweeps)")
    add_to: str = opt("w0", "w0 (paper) | wk (authors' code: adds the update to W_K)")
    with_w0: bool = opt(False, "also fit the point a = 0 at step 0")

    def validate(self):
        super().validate()
        need(self, "run")
        ints(self.window, "--window")
        if self.add_to not in ("w0", "wk"):
            raise UsageError(f"--add_to must be w0 or wk, not {self.add_to!r}")


@dataclass
class Extrapolate(Common):
    """paper 2, Eq. 2: weight extrapolation sweep"""
    run: str = opt("", "run folder with step_* checkpoints")
    t0: int = opt(-1, "earlier checkpoint step")
    t1: int = opt(-1, "later checkpoint step")
    alpha: str = opt("1,1.5,2,3", "extrapolation factors")

    def validate(self):
        super().validate()
        need(self, "run")
        floats(self.alpha, "--alpha")
        if not 0 <= self.t0 < self.t1:
            raise UsageError(f"give the steps of two checkpoints, --t0 < --t1 (not {self.t0}, {self.t1})")


COMMANDS = {"dlogp": Dlogp, "linearity": Linearity, "rank1": Rank1, "alpharl": AlphaRL,
            "extrapolate": Extrapolate}


def need(cfg, *flags):
    missing = [f"--{f}" for f in flags if not getattr(cfg, f)]
    if missing:
        raise UsageError(f"{' and '.join(missing)} required")


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
    cfg = parse_config(COMMANDS, argv, description=__doc__.strip().split("\n\n")[0])
    cmd = next(name for name, cls in COMMANDS.items() if type(cfg) is cls)
    # after parsing, so that --help stays fast
    from nanorlvr.papers import paper1_direction, paper2_linearity, paper3_alpharl
    from nanorlvr.evaluate import evaluator
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # the trained checkpoint (the RL model, or the run's last step) says how to prompt and what to evaluate on
    if hasattr(cfg, "base"):
        base, rl = ckpt.resolve_checkpoint(cfg.base, "--base"), ckpt.resolve_checkpoint(cfg.rl, "--rl")
        fmt, trained, flag = format_for_pair(base, rl, ("--base", "--rl")), rl, "--rl"
    else:
        trained, flag = ckpt.resolve_checkpoint(cfg.run, "--run"), "--run"
        ckpt.list_checkpoints(cfg.run)  # a step folder given as --run: a one-line error now, not later
        fmt = format_for(trained, flag)
    max_new_tokens = cfg.max_new_tokens or budget_for(trained)
    out = Path(cfg.out or f"out/analysis/{cmd}")
    out.mkdir(parents=True, exist_ok=True)
    device, t_start = pick_device(cfg.device), time.time()
    n_problems = max(cfg.n_eval, getattr(cfg, "n_prompts", 0), getattr(cfg, "n_probe", 0))
    problems = held_out_for(trained, n_problems, cfg.data, cfg.data_dir, flag)
    evaluate_fn = evaluator(fmt, problems[:cfg.n_eval], cfg.k, cfg.temperature, max_new_tokens, cfg.top_p,
                            cfg.seed)
    settings = {"accuracy": f"avg@{cfg.k} at T = {cfg.temperature:g}" if cfg.k else "greedy",
                "n_eval": len(problems[:cfg.n_eval]), "problems": cfg.data or "the run's held-out problems",
                "max_new_tokens": max_new_tokens, "top_p": cfg.top_p, "seed": cfg.seed}
    if cmd == "dlogp":  # the token metrics' own sample, and the sweep
        settings.update(probe=f"{cfg.n_prompts} prompts x {cfg.samples} responses per model at T = "
                              f"{cfg.temperature:g}", ratios=cfg.ratios, criteria=cfg.criteria)
    if cmd == "linearity":
        settings["probe"] = f"{cfg.n_probe} prompts"
    log(f"analyze {cmd} on {device}: accuracy {settings['accuracy']} on {settings['n_eval']} problems, budget "
        f"{max_new_tokens} tokens, writing to {out}")
    if cmd == "dlogp":
        report, summary = paper1_direction.run_dlogp(
            base, rl, out, fmt, problems[:cfg.n_prompts], evaluate_fn, samples=cfg.samples,
            ratios=floats(cfg.ratios, "--ratios"), criteria=cfg.criteria.split(","),
            max_new_tokens=max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, k=cfg.k,
            seed=cfg.seed, batch_size=cfg.batch_size, device=device)
    elif cmd == "linearity":
        report, summary = paper2_linearity.run_linearity(
            cfg.run, out, fmt, problems[:cfg.n_probe], device, max_new_tokens, cfg.temperature, cfg.seed,
            cfg.batch_size, cfg.control or None)
    elif cmd == "rank1":
        report, summary = paper3_alpharl.run_rank1(base, rl, out, evaluate_fn, cfg.rank, device)
    elif cmd == "alpharl":
        report, summary = paper3_alpharl.run_alpharl(cfg.run, out, evaluate_fn, ints(cfg.window, "--window"),
                                                     cfg.add_to, cfg.with_w0, device)
    else:
        report, summary = paper2_linearity.run_extrapolate(cfg.run, out, evaluate_fn, cfg.t0, cfg.t1,
                                                           floats(cfg.alpha, "--alpha"), device)
    seconds = time.time() - t_start
    report_json = {"command": cmd, "args": asdict(cfg), "settings": settings, "max_new_tokens": max_new_tokens,
                   **report, "seconds": seconds}
    write_json(out / "report.json", jsonable(report_json))
    summary = [f"Settings: accuracy {settings['accuracy']} on {settings['n_eval']} problems "
               f"({settings['problems']}), budget {max_new_tokens} tokens"
               + (f"; probe {settings['probe']}" if "probe" in settings else "") + "."] + summary
    text = f"# analyze.py {cmd}\n\n" + "\n".join(f"- {line}" for line in summary) + "\n"
    (out / "summary.md").write_text(text)
    log(text + f"\n{seconds:.0f}s; report in {out / 'report.json'}")
    return report


if __name__ == "__main__":
    run_main(main)
