"""
train.py's flags: every one with a laptop-safe default and the values it allows (opt(...)), and the checks
that involve several flags, run before any data is generated or a model loaded. The GRPO step's own
settings (group size, clipping, loss aggregation, ...) are grpo.GRPOConfig's fields, declared there once:
TrainConfig extends it. train.py reads this file's fields; `python train.py --help` lists them.
"""
from dataclasses import dataclass

import torch

from nanorlvr import lora
from nanorlvr.grpo import GRPOConfig
from nanorlvr.infra.common import UsageError, opt
from nanorlvr.prompts import SYSTEM_PROMPT

NON_EMPTY = (r"(?s).*\S.*", "non-empty")


@dataclass
class TrainConfig(GRPOConfig):
    stage: str = opt("all", "sft, grpo, or all (SFT the base if it is missing, then GRPO)",
                     choices=("sft", "grpo", "all"))
    out_dir: str = opt("out", "where runs are written", pattern=NON_EMPTY)
    base_dir: str = opt("out/base", "the SFT base model (written by --stage=sft, read by grpo)",
                        pattern=NON_EMPTY)
    run: str = opt("grpo", "name of the GRPO run folder under out_dir", pattern=NON_EMPTY)
    device: str = opt("auto", "auto | cpu | cuda | cuda:N | mps",
                      pattern=(r"auto|cpu|mps|cuda(:\d+)?", "auto, cpu, cuda, cuda:N or mps"))
    seed: int = opt(1337, "seed of everything", ge=0, lt=2 ** 32)
    threads: int = opt(0, "torch CPU threads (0: torch's default)", ge=0)
    # a real model and data set, and what it takes to train one (docs/scaling.md)
    init_from: str = opt("", "local HF checkpoint dir (Qwen2/3, Llama, GPT-2) to start from instead of "
                             "the toy model")
    data: str = opt("", "training jsonl (GSM8K '#### x', MATH '\\boxed{}', or ours); empty: the generated "
                        "toy task")
    test_data: str = opt("", "held-out jsonl (empty with --data: the last n_eval problems of --data are "
                             "held out)")
    system_prompt: str = opt(SYSTEM_PROMPT, "system message of the chat prompt (with --init_from; "
                                            "empty: none)")
    chat_style: str = opt("auto", "chat template (auto: from the tokenizer's special tokens)",
                          choices=("auto", "qwen", "llama3"))
    precision: str = opt("auto", "auto: bf16-mixed on CUDA, else fp32 (infra/precision.py)",
                         choices=("auto", "fp32", "bf16-mixed", "bf16"))
    grad_ckpt: bool = opt(False, "gradient checkpointing: recompute each block in the backward (less memory)")
    cuda_graph: bool = opt(True, "on CUDA, rollouts and evaluation decode one CUDA graph per token (engine "
                                 "static mode)")
    gen_batch: int = opt(0, "rows per generate call in rollouts and evaluation (0: all; evaluation 1024)",
                         ge=0)
    # data and evaluation
    data_dir: str = opt("data", "where the toy task's jsonl files are generated", pattern=NON_EMPTY)
    n_ops: int = opt(2, "toy task: operations per problem", ge=1)
    max_num: int = opt(10, "toy task: operands are 1..max_num", ge=1)
    p_direct: float = opt(0.5, "toy task: share of SFT solutions that give only the answer, no working",
                          ge=0, le=1)
    n_train: int = opt(8000, "toy task: training problems", ge=1)
    n_test: int = opt(1000, "toy task: held-out problems written (evaluation uses the first n_eval)", ge=0)
    n_eval: int = opt(500, "held-out problems for evaluation (the same ones before and after)", ge=1)
    eval_k: int = opt(8, "samples per problem for avg@k / pass@k at eval_temperature (0: greedy only)", ge=0)
    eval_temperature: float = opt(1.0, "temperature of the avg@k samples", ge=0)
    eval_every: int = opt(25, "evaluate every this many GRPO steps too (0: only at the start and end)", ge=0)
    eval_every_k: int = opt(0, "samples per problem of the --eval_every evaluations (0: greedy only, which "
                               "costs little; the first and last use --eval_k)", ge=0)
    # model (toy, trained from scratch)
    n_layer: int = opt(4, "layers", ge=1)
    n_embd: int = opt(128, "width", ge=1)
    n_head: int = opt(4, "attention heads", ge=1)
    # SFT
    sft_steps: int = opt(600, "SFT optimizer steps", ge=1)
    sft_batch: int = opt(64, "SFT batch size (sequences)", ge=1)
    sft_lr: float = opt(3e-3, "SFT peak learning rate (AdamW, warmup then cosine)", gt=0)
    sft_weight_decay: float = opt(0.1, "SFT AdamW weight decay", ge=0)
    sft_warmup: int = opt(30, "SFT linear warmup steps", ge=0)
    # GRPO (the step's own settings: GRPOConfig)
    steps: int = opt(150, "GRPO steps (real + RL-Extra virtual steps)", ge=1)
    prompts_per_step: int = opt(32, "P: prompts per step", ge=1)
    lr: float = opt(1e-4, "GRPO learning rate (AdamW); 2e-4 made greedy accuracy fall on the toy", gt=0)
    weight_decay: float = opt(0.0, "AdamW weight decay", ge=0)
    warmup: int = opt(5, "linear warmup steps", ge=0)
    schedule: str = opt("constant", "after warmup: constant, or a cosine down to 0.1 of --lr at --steps",
                        choices=("constant", "cosine"))
    sample_rounds: int = opt(4, "with --dynamic_sampling: at most this many rollouts of P prompts per step",
                             ge=1)
    rl_extra: str = opt("", "m,n: paper 2's RL-Extra, m real steps then a jump of n virtual ones "
                       "(the last jump shortened to end at --steps)",
                        pattern=(r"|\s*[1-9]\d*\s*,\s*[1-9]\d*\s*", "m,n: two positive integers (m real "
                                 "steps, then a jump of n virtual ones), or empty"))
    rl_extra_optimizer: str = opt("reset", "a fresh optimizer after each RL-Extra jump (reset), or the same "
                                           "(keep); the schedule follows the step count either way",
                                  choices=("reset", "keep"))
    save_every: int = opt(10, "checkpoint every this many steps (and step 0 and the last)", ge=1)
    resume: bool = opt(False, "continue the run in out_dir/run from its trainer_state.pt")
    verify_workers: int = opt(2, "verifier processes", ge=1)
    # LoRA (nanorlvr/lora.py): GRPO trains rank-r adapters, the base frozen; checkpoints hold merged weights
    lora_rank: int = opt(0, "r > 0: GRPO trains rank-r LoRA adapters on the frozen base (0: full fine-tuning); "
                            "LoRA wants ~10x the full lr", ge=0)
    lora_alpha: float = opt(32.0, "LoRA scale alpha / r (alpha fixed across ranks: the best lr hardly depends "
                                  "on r)", gt=0)
    lora_targets: str = opt(",".join(lora.TARGETS), "comma-separated linears that get adapters (the "
                                                    "embedding, norms and head stay frozen)",
                            pattern=(r"(%s)(,(%s))*" % ("|".join(lora.TARGETS), "|".join(lora.TARGETS)),
                                     "a comma-separated subset of " + ",".join(lora.TARGETS)))

    def validate(self):
        """The checks that involve several flags (or this machine), after each flag's own (its opt(...),
        common.parse_config), before any data is generated or a model loaded: each problem named, one line
        apiece (common.UsageError). The files and folders the flags name are checked by setup."""
        problems = []

        def need(ok, name, allowed):
            if not ok:
                problems.append(f"--{name}={getattr(self, name)}: {allowed}")
        need(not self.device.startswith("cuda") or torch.cuda.is_available(), "device", "no CUDA device here")
        need(self.device != "mps" or torch.backends.mps.is_available(), "device", "no MPS device here")
        need(self.overlong_buffer <= self.max_new_tokens, "overlong_buffer",
             "must be at most --max_new_tokens")
        # the toy's head width: even, as rotary embeddings turn pairs of dimensions
        hd = self.n_embd // self.n_head
        need(hd >= 2 and hd % 2 == 0, "n_head",
             f"gives heads of width --n_embd // --n_head = {hd}: must be even, at least 2")
        need(not self.test_data or self.data, "test_data",
             "needs --data (the toy task brings its own test split)")
        need(not self.lora_rank or self.stage != "sft", "lora_rank", "applies to GRPO (--stage=grpo or all)")
        need(not self.lora_rank or not self.rl_extra, "lora_rank",
             "cannot be combined with --rl_extra (it extrapolates weights, not B A)")
        if problems:
            raise UsageError("\n".join(problems))
