"""
Train: the SFT base model, then GRPO on it (with paper 1's low-probability reweighting and paper 2's
RL-Extra as options). `python train.py` with no arguments is the CPU quickstart: it generates the toy
task, trains the SFT base if out/base is missing, runs GRPO into out/grpo, and writes out/summary.json
with the held-out accuracy before and after RL.

    python train.py                                  # quickstart (SFT if needed, then GRPO)
    python train.py --stage=sft                      # only the base model
    python train.py --stage=grpo --reweight=lowprob  # paper 1, training-time reweighting
    python train.py --stage=grpo --rl_extra=20,20 --run=rlextra  # paper 2, Eq. 3, beside the quickstart's run
    python train.py --stage=grpo --lora_rank=1 --lr=3e-4 --run=lora1  # LoRA rank 1 (nanorlvr/lora.py)
    python train.py --stage=grpo --resume=true       # continue a stopped run exactly
    python train.py --stage=grpo --init_from=Qwen2.5-0.5B-Instruct --data=data/gsm8k/train.jsonl ...
                                                     # a real model (docs/scaling.md)
    torchrun --nproc_per_node=8 train.py ...          # several GPUs (nanorlvr/infra/dist.py)

The file reads top to bottom: setup -> SFT -> the GRPO loop -> summary (main, at the end); its flags are
nanorlvr/train_config.py's TrainConfig. One GRPO step is nanorlvr/grpo.py (rollout, grpo_update) and its
maths nanorlvr/grpo_loss.py.
"""
import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch

from nanorlvr import lora
from nanorlvr.infra import checkpoint as ckpt
from nanorlvr.infra import dist, precision as prec
from nanorlvr.infra.common import (Progress, UsageError, append_jsonl, check_each, log, parse_config,
                                   pick_device, rng_state, run_main, secs_str, seed_everything, write_json)
from nanorlvr.evaluate import evaluate
from nanorlvr.papers.extrapolate import RLExtra
from nanorlvr.grpo import grpo_update, informative_rollout, micro_batches, packed_rows, rollout
from nanorlvr.infra.hf import config_from_hf
from nanorlvr.model import GPT, GPTConfig
from nanorlvr.prompts import ChatFormat, ToyFormat, checkpoint_info, split_holdout
from nanorlvr.infra.runlog import eval_line, log_step, step_row
from nanorlvr.logprobs import completion_logprobs, pack
from nanorlvr.tasks import TaskConfig, ensure_toy_data, load_jsonl, step_batch
from nanorlvr.tokenizer import toy_tokenizer
from nanorlvr.train_config import TrainConfig  # every flag, its bounds and checks

# -----------------------------------------------------------------------------
# setup: the optimizer, the data, the model's size, evaluation and what each checkpoint says about itself


def make_optimizer(model, lr, weight_decay):
    """AdamW. Its learning rate is set before every step from the step count (lr_factor)."""
    # beta2 0.95 rather than 0.999: the second moment follows the gradient's scale faster (nanoGPT's choice)
    # (with LoRA only the adapters are trained: lora.trainable is every parameter otherwise)
    return torch.optim.AdamW(lora.trainable(model), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))


def lr_factor(step, warmup, total, schedule):
    """The learning rate of step `step` (counted from 0) as a share of the peak: linear warmup, then constant
    or a cosine down to 0.1 at `total`. A function of the step count alone: a skipped step, a resumed run,
    an RL-Extra jump (whose virtual steps count) and a fresh optimizer after one all stay on the schedule."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    return 1.0


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


def toy_task(cfg):
    return TaskConfig(n_ops=cfg.n_ops, max_num=cfg.max_num, p_direct=cfg.p_direct)


def toy_model_config(cfg, enc):
    return GPTConfig(vocab_size=enc.n_vocab, n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head,
                     n_kv_head=cfg.n_head, max_seq_len=128)


def read_data(cfg):
    """(train, test) of --data (and --test_data), every line checked (tasks.load_jsonl); None for the toy."""
    if not cfg.data:
        return None

    def read(flag):
        path = getattr(cfg, flag)
        if not Path(path).is_file():
            raise UsageError(f"--{flag}={path}: no such file")
        return load_jsonl(path)
    train, test = check_each(lambda: read("data"), lambda: read("test_data") if cfg.test_data else None)
    if cfg.test_data:
        return train, test[:cfg.n_eval]
    if len(train) <= cfg.n_eval:
        raise UsageError(f"--n_eval={cfg.n_eval}: {cfg.data} has only {len(train)} problems, too few to "
                         "hold out that many for evaluation: pass --test_data or a smaller --n_eval")
    return split_holdout(train, cfg.n_eval, cfg.data)


def check_start(cfg):
    """The model the run starts from is there: --init_from's, or (GRPO alone) the SFT base."""
    if cfg.init_from:  # before any tokenizer is read from it
        ckpt.require_hf_dir(cfg.init_from, "--init_from")
    elif cfg.stage == "grpo" and not (Path(cfg.base_dir) / "config.json").is_file():
        raise UsageError(f"--base_dir: no Hugging Face checkpoint at {cfg.base_dir} (config.json "
                         "missing): train it with --stage=sft (or --stage=all), or give --init_from")


def check_world(cfg, sft, W):
    """What torchrun's W ranks need of the flags (W is known only now)."""
    if W > 1 and sft:
        raise UsageError(f"--stage={cfg.stage}: SFT runs in one process: train the base without "
                         "torchrun first")
    if cfg.prompts_per_step % W:
        raise UsageError(f"--prompts_per_step={cfg.prompts_per_step}: must be a multiple of the {W} ranks "
                         "(each rank takes whole prompt groups)")


def load_task(cfg, data):
    """(enc, prompt format, train, test): the toy's or --init_from's tokenizer, --data (read_data) or the
    toy task (generated here if missing)."""
    fmt = ChatFormat.from_pretrained(cfg.init_from, cfg.chat_style, cfg.system_prompt) if cfg.init_from \
        else ToyFormat(toy_tokenizer())
    if data:
        return (fmt.enc, fmt, *data)
    task = toy_task(cfg)
    if dist.is_main():  # one writer
        ensure_toy_data(cfg.data_dir, task, n_train=cfg.n_train, n_test=max(cfg.n_test, cfg.n_eval))
    dist.barrier()
    train_path, test_path = ensure_toy_data(cfg.data_dir, task, n_train=cfg.n_train,
                                            n_test=max(cfg.n_test, cfg.n_eval))
    return fmt.enc, fmt, load_jsonl(train_path), load_jsonl(test_path)[:cfg.n_eval]


def setup(cfg, device):
    """Checks that need the world size, the files the flags name and the model's context, then the data:
    (precision, sft, enc, fmt, train, test), sft telling whether the base model is trained first."""
    precision = prec.resolve_precision(cfg.precision, device)
    # SFT first when asked to, or when the toy's base is missing (a real model is its own base)
    has_base = (Path(cfg.base_dir) / "config.json").exists()
    sft = cfg.stage == "sft" or (cfg.stage == "all" and not cfg.init_from and not has_base)
    W = dist.world()  # known only now (torchrun): still before any data or model
    # the inputs that do not depend on each other, all checked before any work, each problem named (a
    # broken data file and a missing base in one go): the model to start from, the data, the world size
    _, data, _ = check_each(lambda: check_start(cfg), lambda: read_data(cfg),
                            lambda: check_world(cfg, sft, W))
    enc, fmt, train, test = load_task(cfg, data)
    if len(test) < W:
        raise UsageError(f"--n_eval={cfg.n_eval}: {len(test)} eval problems cannot be split over {W} ranks")
    log(f"device {device} x {W} ({precision}); data {len(train)} train / {len(test)} eval problems; "
        f"out {cfg.out_dir}")
    # the longest prompt and the budget must fit the model's context, or generation fails mid-run
    src = cfg.init_from or (None if sft else cfg.base_dir)
    mcfg = (config_from_hf(json.loads((Path(src) / "config.json").read_text())) if src
            else toy_model_config(cfg, enc))
    longest = max(len(fmt.encode(p["question"])) for p in train + test)
    if longest + cfg.max_new_tokens > mcfg.max_seq_len:
        raise UsageError(f"--max_new_tokens={cfg.max_new_tokens}: the longest prompt ({longest} tokens) and "
                         f"the budget exceed the model's context of {mcfg.max_seq_len}: "
                         f"at most {mcfg.max_seq_len - longest}")
    if cfg.init_from or device.startswith("cuda"):  # what the GPU must hold, before it fails to
        rows = cfg.prompts_per_step * cfg.group_size // W
        eval_rows = min(len(test) * max(1, cfg.eval_k) // W, cfg.gen_batch or 1024)
        mem = prec.memory_estimate(mcfg, gen_rows=max(min(rows, cfg.gen_batch or rows), eval_rows),
                                   update_rows=cfg.micro_batch or math.ceil(rows / cfg.n_minibatches),
                                   prompt_len=longest, new_tokens=cfg.max_new_tokens, precision=precision,
                                   grad_ckpt=cfg.grad_ckpt, kl=cfg.kl_coef > 0, lora_rank=cfg.lora_rank,
                                   lora_targets=cfg.lora_targets.split(","))
        log(prec.memory_line(mem))
    return precision, sft, enc, fmt, train, test


def static_decode(cfg, model):
    """engine.generate(static=True): on CUDA, one CUDA graph per decoded token (--cuda_graph)."""
    return cfg.cuda_graph and next(model.parameters()).is_cuda


def run_eval(cfg, model, fmt, test, k=None):
    """evaluate() on this rank's share of the held-out problems, combined over ranks (k samples per problem,
    default --eval_k). The completion budget is the rollouts' (--max_new_tokens): a completion the rollouts
    would truncate is not scored here either. Its sampling has its own seeded generator (evaluate's seed): it
    draws nothing from the global RNG the training reads, so evaluating more often changes no weight."""
    k = cfg.eval_k if k is None else k
    r = evaluate(model, fmt, test[dist.rank()::dist.world()], k=k, temperature=cfg.eval_temperature,
                 max_new_tokens=cfg.max_new_tokens, batch_size=cfg.gen_batch or 1024,
                 static=static_decode(cfg, model))
    return dist.combine_evals(r)


def eval_settings(cfg, test):
    """What an evaluation's figures depend on: a stored evaluation is reused only if these match."""
    questions = hashlib.md5("\n".join(p["question"] for p in test).encode()).hexdigest()
    return {"questions_md5": questions, "k": cfg.eval_k, "temperature": cfg.eval_temperature,
            "max_new_tokens": cfg.max_new_tokens}


def summary_path(cfg):
    """out_dir/summary.json for the default run (bench/ reads it there), out_dir/summary_<run>.json for any
    other --run, so that two runs of one out_dir never write the same summary."""
    name = "summary.json" if cfg.run == "grpo" else f"summary_{cfg.run.replace('/', '_')}.json"
    return Path(cfg.out_dir) / name


def refuse_to_overwrite(cfg):
    """A GRPO run never overwrites another: a run folder that already holds one (or its summary) is refused
    before any work, unless --resume=true continues it."""
    run_dir = Path(cfg.out_dir) / cfg.run
    held = [p.name for p in (run_dir / "metrics.jsonl", run_dir / "trainer_state.pt", summary_path(cfg))
            if p.exists()] + [p.name for p in sorted(run_dir.glob("step_*"))[:1]]
    if cfg.stage != "sft" and not cfg.resume and held:
        raise UsageError(f"--run={cfg.run}: {run_dir} already holds a run ({', '.join(held)}): name a new one "
                         "with --run=NAME (or another --out_dir), or continue it with --resume=true")


def read_json(path):
    return json.loads(Path(path).read_text()) if Path(path).exists() else None


def run_info(cfg, fmt):
    """nanorlvr.json of every checkpoint this run writes: its prompt format, task and budget (prompts.py), so
    that sample.py and analyze.py prompt and evaluate it as this run did."""
    if cfg.data:
        task = {"data": str(Path(cfg.data).resolve()), "n_eval": cfg.n_eval,
                "test_data": str(Path(cfg.test_data).resolve()) if cfg.test_data else ""}
    else:
        task = {"toy": asdict(toy_task(cfg)), "n_train": cfg.n_train, "n_test": max(cfg.n_test, cfg.n_eval)}
    return checkpoint_info(fmt, task, cfg.max_new_tokens)


# -----------------------------------------------------------------------------
# SFT: the base model RL starts from


def train_sft(cfg, device, enc, train, test, fmt, precision):
    """Next-token loss on the solutions only (not the prompt), from scratch (or from --init_from)."""
    seed_everything(cfg.seed)
    if cfg.init_from:
        model = ckpt.load_model(cfg.init_from, device=device, dtype=prec.weight_dtype(precision))
        if cfg.sft_lr > 1e-4:
            log(f"warning: --sft_lr={cfg.sft_lr:g} is the toy's from-scratch rate; fine-tuning wants ~1e-5")
    else:
        model = GPT(toy_model_config(cfg, enc)).to(device)
    sampler = prec.SamplingCopy(model, precision)  # the weights evaluations sample from (infra/precision.py)
    model.grad_ckpt, ctx = cfg.grad_ckpt, prec.autocast(precision, device)
    log(f"SFT: {model.num_params() / 1e6:.2f}M parameters, {cfg.sft_steps} steps of {cfg.sft_batch} "
        f"on {device}")
    optimizer = make_optimizer(model, cfg.sft_lr, cfg.sft_weight_decay)
    # the data once as token ids: the prompts, and the targets the loss is on (solution and end token)
    prompts = [fmt.encode(p["question"]) for p in train]
    answers = [fmt.target(p["solution"]) for p in train]
    # one seeded shuffle, walked batch after batch (wrapping around): the seed alone fixes the order
    order, prog = torch.randperm(len(train)), Progress(cfg.sft_steps)
    for step in range(cfg.sft_steps):
        lr = cfg.sft_lr * lr_factor(step, cfg.sft_warmup, cfg.sft_steps, "cosine")
        set_lr(optimizer, lr)
        rows = order[(step * cfg.sft_batch + torch.arange(cfg.sft_batch)) % len(train)].tolist()
        idx, plen, clen = pack([prompts[i] for i in rows], [answers[i] for i in rows])
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        # rows grouped by length, each micro-batch trimmed to its own longest row
        for c in micro_batches(torch.arange(len(rows)), cfg.micro_batch, plen + clen):
            with ctx:  # the token-mean loss on the solutions (not the prompts) of the whole batch
                logp, _ = completion_logprobs(model, *packed_rows(idx, plen, clen, c))
                loss = -logp.sum() / int(clen.sum())
            loss.backward()
            total += loss.item()
        # the usual guards of training from scratch: a clipped gradient, a warmed-up then decaying lr (above)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == cfg.sft_steps - 1:
            log(f"sft {step:5d}/{cfg.sft_steps} loss {total:.4f} lr {lr:.2e} "
                f"elapsed {secs_str(prog.elapsed())} eta {prog.eta(step)}")
    # the base's held-out accuracy, stored beside it: GRPO's step 0 reuses it when its settings match
    r = run_eval(cfg, sampler.get(), fmt, test)
    log(eval_line("SFT base", r, cfg.eval_k))
    ckpt.save_model(model, cfg.base_dir, tokenizer_dir=cfg.init_from or None, info=run_info(cfg, fmt))
    write_json(Path(cfg.base_dir) / "eval.json",
               {**r, "sft_seconds": prog.elapsed(), "settings": eval_settings(cfg, test)})
    return model, r


# -----------------------------------------------------------------------------
# GRPO: batch -> rollout -> update -> log -> (RL-Extra jump) -> eval -> save, step after step


def train_grpo(cfg, device, train, test, fmt, precision, sft_logged=False):
    """GRPO from the SFT base (or --init_from) into out_dir/run. Returns (the base model's evaluation, the
    final one, the number of real steps). sft_logged: the base's evaluation line was just printed by
    train_sft (it is not repeated)."""
    run_dir, main_rank, W = Path(cfg.out_dir) / cfg.run, dist.is_main(), dist.world()
    run_dir.mkdir(parents=True, exist_ok=True)
    src, wdtype, tok_dir = cfg.init_from or cfg.base_dir, prec.weight_dtype(precision), cfg.init_from or None
    model = ckpt.load_model(src, device=device, dtype=wdtype)
    if cfg.lora_rank:  # LoRA: the base frozen, adapters (B = 0: still the base) on the --lora_targets linears
        lora.add_adapters(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets.split(","), seed=cfg.seed)
        log(f"LoRA rank {cfg.lora_rank}, alpha {cfg.lora_alpha:g}: {sum(p.numel() for p in lora.trainable(model)):,} "
            f"trainable parameters of {model.num_params():,}")
    # the KL term's reference: the starting weights, frozen (loaded only if --kl_coef uses it; with LoRA the
    # model itself with its adapters off)
    ref_dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    ref_model = (None if cfg.kl_coef == 0 else lora.BaseView(model) if cfg.lora_rank
                 else ckpt.load_model(src, device=device, dtype=ref_dtype).eval())
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)  # its lr: set from the step count, each step

    def evaluate_base(model):  # the SFT stage's evaluation if it has these settings (and a truncated share)
        r = read_json(Path(src) / "eval.json")
        if not r or r.get("settings") != eval_settings(cfg, test) or "greedy_truncated" not in r:
            r = run_eval(cfg, prec.SamplingCopy(model, precision).get(), fmt, test)
            log(eval_line("step 0 (base)", r, cfg.eval_k))
        elif sft_logged:  # this process printed that evaluation a moment ago: one line per evaluation
            log(f"step 0 (base): the SFT base's evaluation above (stored in {Path(src) / 'eval.json'})")
        else:
            log(eval_line(f"step 0 (base, stored in {Path(src) / 'eval.json'})", r, cfg.eval_k))
        return r

    # resume a killed run exactly where its last checkpoint left it (weights and optimizer state loaded into
    # these), or start: step 0 saved, then evaluated (the first row of metrics.jsonl)
    start = ckpt.resume_or_start(run_dir, cfg.resume, model, optimizer, seed=cfg.seed, tokenizer_dir=tok_dir,
                                 info=run_info(cfg, fmt))
    if start is None:
        start = {"step": 0, "real_steps": 0, "base_eval": evaluate_base(model), "segment_start": None}
        if main_rank:
            append_jsonl(run_dir / "metrics.jsonl", {"step": 0, "eval": start["base_eval"]})
    step, real_steps, base_eval = start["step"], start["real_steps"], start["base_eval"]
    # paper 2's RL-Extra (m real steps, then a jump of n virtual ones)
    m, n = (int(x) for x in cfg.rl_extra.split(",")) if cfg.rl_extra else (0, 0)  # validated as "m,n"
    extra = RLExtra(m, n)
    extra.load(start["segment_start"], device)
    sampler = prec.SamplingCopy(model, precision)  # the weights rollouts and evaluations sample from
    model.grad_ckpt, ctx = cfg.grad_ckpt, prec.autocast(precision, device)
    if m and extra.segment_start is None:
        extra.start(step, model)
    P, G = cfg.prompts_per_step, cfg.group_size

    def rollout_round(step, r):
        """This rank's whole groups of the step's P prompts x G samples, each scored by the verifier. Prompts
        and seed depend on the step, round and rank alone, so a resumed run samples the same completions;
        round r > 0 is DAPO's refill, a fresh draw of prompts (another data order)."""
        rank = dist.rank()
        batch = step_batch(train, step, P, cfg.seed + 7919 * r)[rank * P // W:(rank + 1) * P // W]
        return rollout(sampler.get(), fmt, batch, G, cfg.max_new_tokens, cfg.temperature,
                       seed=(cfg.seed * 1000003 + step + 104729 * r) * W + rank, top_p=cfg.top_p,
                       workers=cfg.verify_workers, batch_size=cfg.gen_batch or None,
                       static=static_decode(cfg, model))

    prog = Progress(cfg.steps, start=step)
    while step < cfg.steps:
        # batch + rollout: G samples per prompt scored 0/1; only groups whose rewards differ carry a gradient,
        # so dynamic sampling refills the batch with them
        roll, sampling = (informative_rollout(lambda r: rollout_round(step, r), P // W, G, cfg.sample_rounds)
                          if cfg.dynamic_sampling else (rollout_round(step, 0), {}))
        # update: group advantages -> clipped loss -> optimizer step(s), at the schedule's lr of this step
        # (virtual steps count: the schedule follows the step count, whatever was skipped or jumped)
        t_update = time.time()
        set_lr(optimizer, cfg.lr * lr_factor(step, cfg.warmup, cfg.steps, cfg.schedule))
        stats = grpo_update(model, optimizer, roll, cfg, ref_model, autocast=ctx)
        step, real_steps = step + 1, real_steps + 1
        row = step_row(step, real_steps, roll, {**stats, **sampling}, G, time.time() - t_update)
        # paper 2, Eq. 3 (RL-Extra): after m real steps, jump along the segment just trained; the last jump
        # stops at --steps, so the checkpoint's step is its true one
        jump = extra.jump(model, real_steps, step, cfg.steps)
        if jump:
            if cfg.rl_extra_optimizer == "reset":  # Adam's moments belong to the weights before the jump
                optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
            step += jump
            row["rl_extra_jump_to"] = step
        log_step(row, cfg.steps, prog.eta(step - 1))
        if jump:  # the jumped-over steps have no line of their own: this one says where the weights went
            log(f"RL-Extra: jump from step {row['step']} to {step} (alpha = {jump}/{m} = {jump / m:.3g}: "
                f"W + alpha (W - W_{row['step'] - m}); optimizer {cfg.rl_extra_optimizer})")
        # evaluation on the held-out problems every --eval_every steps (the final one follows the loop); an
        # RL-Extra jump over a multiple of eval_every evaluates where it lands
        crossed = cfg.eval_every and (row["step"] - 1) // cfg.eval_every < step // cfg.eval_every
        if crossed and step < cfg.steps:
            row["eval"] = run_eval(cfg, sampler.get(), fmt, test, k=cfg.eval_every_k)
            log(eval_line(f"step {step}", row["eval"], cfg.eval_every_k))
        if main_rank:
            append_jsonl(run_dir / "metrics.jsonl", row)
        # checkpoint: the weights (a Hugging Face directory) and all --resume needs to continue exactly
        if main_rank and (step % cfg.save_every == 0 or step >= cfg.steps or jump):
            # (the data needs no position: a step's batch is a function of the step, tasks.step_batch)
            state = {"step": step, "real_steps": real_steps, "optimizer": optimizer.state_dict(),
                     "rng": rng_state(), "segment_start": extra.segment_start, "base_eval": base_eval,
                     "config": vars(cfg), "lora": lora.adapter_state(model) if cfg.lora_rank else None}
            ckpt.save_checkpoint(run_dir, step, model, state, tokenizer_dir=tok_dir, info=run_info(cfg, fmt))
    final_eval = run_eval(cfg, sampler.get(), fmt, test)
    log(eval_line(f"step {step} (final)", final_eval, cfg.eval_k))
    if main_rank:
        append_jsonl(run_dir / "metrics.jsonl", {"step": step, "eval": final_eval})
        from nanorlvr.infra.curves import plot_curves  # matplotlib: imported only where a plot is drawn
        log(f"training curves in {plot_curves(run_dir)}")
    return base_eval, final_eval, real_steps


# -----------------------------------------------------------------------------
# summary: the held-out accuracies before and after RL


def write_summary(cfg, base, final, real_steps, n_eval, seconds):
    """summary_path(cfg) (bench/ reads its keys) and the before/after table on the console."""
    k = cfg.eval_k
    names = ["greedy_acc", "greedy_truncated"] + ([f"avg{k}", f"pass{k}", "truncated"] if k else [])
    # base_* and final_* of every accuracy, and the shares of their samples truncated
    summary = {f"{when}_{name}": r[name] for name in names for when, r in (("base", base), ("final", final))}
    summary.update({"n_eval": n_eval, "steps": cfg.steps, "real_steps": real_steps,
                    "wall_seconds": seconds, "config": vars(cfg)})
    write_json(summary_path(cfg), summary)
    log(f"\n{'':16s}{'base':>8s}{'after RL':>10s}")
    for name in names:
        log(f"{name:16s}{base[name]:8.3f}{final[name]:10.3f}")
    log(f"wall time {secs_str(seconds)}; summary in {summary_path(cfg)}")


def where_stopped(cfg):
    """The one line of an interrupted run (common.run_main prints it): its last checkpoint and how to go on."""
    run_dir = Path(cfg.out_dir) / cfg.run
    saved = ckpt.list_checkpoints(run_dir) if (run_dir / "trainer_state.pt").exists() else []
    if cfg.stage != "sft" and saved:
        return (f"stopped; the last checkpoint is step {saved[-1][0]} ({saved[-1][1]}): continue from it with "
                "the same command and --resume=true")
    if cfg.stage != "sft" and run_dir.exists() and any(run_dir.iterdir()):
        return ("stopped before GRPO's first checkpoint after step 0: start it over with the same command and "
                "--resume=true")
    return "stopped before GRPO began (the SFT base is saved only once trained): rerun the same command"


def main(argv=None):
    cfg = parse_config(TrainConfig, argv, description=__doc__.split("\n\n")[0])
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    refuse_to_overwrite(cfg)  # before any work: nothing of an earlier run is touched
    device = dist.init(pick_device(cfg.device))
    try:
        t_start = time.time()
        precision, sft, enc, fmt, train, test = setup(cfg, device)
        if sft:
            train_sft(cfg, device, enc, train, test, fmt, precision)
        if cfg.stage in ("grpo", "all"):
            if cfg.init_from and cfg.stage == "all":
                log(f"--init_from: GRPO starts from {cfg.init_from} itself (for SFT first: --stage=sft, then "
                    f"--stage=grpo --init_from={cfg.base_dir})")
            base, final, real_steps = train_grpo(cfg, device, train, test, fmt, precision, sft_logged=sft)
            if dist.is_main():
                write_summary(cfg, base, final, real_steps, len(test), time.time() - t_start)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (common.run_main): checkpoints are atomic, nothing half-written
        raise KeyboardInterrupt(where_stopped(cfg)) from None
    finally:
        dist.shutdown()


if __name__ == "__main__":
    run_main(main)
