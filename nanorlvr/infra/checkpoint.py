"""
A run's checkpoints on disk, written so that a crash never leaves a half-written one behind.

    out/<run>/step_000100/{model.safetensors, config.json}   weights in HF layout (infra/hf.py), one folder per step
                          nanorlvr.json                       how to prompt it and what it was trained on
                          tokenizer.json, ...                 (a real model) the source's tokenizer files
                          adapter/                            (LoRA) the adapter in PEFT's layout; then
                                                              model.safetensors holds the merged weights
    out/<run>/trainer_state.pt                               optimizer, RNG, RL-Extra's segment (latest)
    out/<run>/metrics.jsonl, summary.json

Every write goes to a temporary name first and is renamed into place. A resumed run first cuts metrics.jsonl
back to the checkpoint it resumes from (`rewind_metrics`), so a run killed any number of times ends with the
files of an uninterrupted one; `resume_or_start` is where train.py begins (or resumes) a GRPO run, and
`save_checkpoint` what it writes every --save_every steps. `stream_tensors` reads one tensor at a time from
many checkpoints, so analyses over dozens of checkpoints hold only what they need.
"""
import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import safe_open

from nanorlvr.infra import dist
from nanorlvr import lora
from nanorlvr.infra.common import UsageError, log, seed_everything, set_rng_state
from nanorlvr.infra.hf import load_pretrained, save_pretrained, save_safetensors


def step_dir(run_dir, step) -> Path:
    return Path(run_dir) / f"step_{step:06d}"


INFO_FILE = "nanorlvr.json"  # {"prompt": ..., "task": ..., "max_new_tokens": ...}: see prompts.checkpoint_info


def save_model(model, path, tokenizer_dir=None, info=None):
    """Write weights + config.json (+ the tokenizer files of `tokenizer_dir`, + `info` as nanorlvr.json) into
    `path` atomically (temp folder, then rename): a checkpoint is complete or absent, never half-described."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model = model.module if hasattr(model, "module") else model
    # LoRA: the merged weights W + (alpha / r) B A (what every reader loads), and the adapter in PEFT's layout
    if lora.has_adapters(model):
        save_pretrained(model, tmp, tokenizer_dir=tokenizer_dir, state_dict=lora.merged_state_dict(model))
        lora.save_adapter(model, tmp, save_safetensors)
    else:
        save_pretrained(model, tmp, tokenizer_dir=tokenizer_dir)
    if info is not None:
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    if path.exists():  # replacing: move the old one aside first, so one complete copy always exists
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(path.with_name(path.name + ".old"), ignore_errors=True)  # also one left by a crash in between


def load_model(path, device="cpu", dtype=None):
    path = Path(path)
    if not (path / "config.json").exists() and (path.with_name(path.name + ".old") / "config.json").exists():
        path = path.with_name(path.name + ".old")  # a crash between the two renames of save_model
    return load_pretrained(path, dtype=dtype, device=device)


def save_trainer_state(state: dict, run_dir):
    path = Path(run_dir) / "trainer_state.pt"
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_info(path) -> dict | None:
    """The nanorlvr.json of a checkpoint folder (None for a plain HF dir or an older toy checkpoint)."""
    f = Path(path) / INFO_FILE
    return json.loads(f.read_text()) if f.is_file() else None


def load_trainer_state(run_dir):
    path = Path(run_dir) / "trainer_state.pt"
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


def rewind_metrics(run_dir, step):
    """Cut out/<run>/metrics.jsonl back to the rows it held when the checkpoint of `step` was written (up to
    that step's training row; the base evaluation's row for step 0), atomically. The resumed run replays the
    steps after it and logs them again: each step then has one row, as in a run never killed. A line cut
    short by the kill goes too."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if row["step"] > step:
            break
        keep.append(line + "\n")
        if row["step"] == step and ("real_steps" in row or step == 0):  # the row written just before the save
            break
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(keep))
    os.replace(tmp, path)


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint of a run, in step order."""
    out = []
    for p in Path(run_dir).glob("step_*"):
        m = re.fullmatch(r"step_(\d+)", p.name)
        if m and (p / "config.json").exists():
            out.append((int(m.group(1)), p))
    if not out:
        raise UsageError(f"no checkpoints (step_*/config.json) in run folder {run_dir}")
    return sorted(out)


def require_hf_dir(path, flag) -> Path:
    """`path` as a checkpoint folder (it holds config.json), or a UsageError naming the flag that gave it."""
    p = Path(path)
    if not (p / "config.json").is_file():
        raise UsageError(f"{flag}: no Hugging Face checkpoint at {p} (config.json missing)")
    return p


def resolve_checkpoint(path, flag) -> Path:
    """A checkpoint folder, or a run folder's latest checkpoint; a UsageError naming the flag otherwise."""
    p = Path(path)
    if (p / "config.json").is_file():
        return p
    if not p.is_dir():
        raise UsageError(f"{flag}: {p} does not exist (give a checkpoint folder or a run folder)")
    if not any(p.glob("step_*/config.json")):
        raise UsageError(f"{flag}: {p} holds neither a checkpoint (config.json) nor step_*/ checkpoints")
    return list_checkpoints(p)[-1][1]


def tensor_names(path) -> list[str]:
    with safe_open(str(Path(path) / "model.safetensors"), framework="pt") as f:
        return list(f.keys())


def stream_tensors(paths, name):
    """The tensor `name` from each checkpoint folder in `paths`, one file open at a time."""
    for p in paths:
        with safe_open(str(Path(p) / "model.safetensors"), framework="pt") as f:
            yield f.get_tensor(name)


# -----------------------------------------------------------------------------
# where a GRPO run begins and what each of its checkpoints holds


def resume_or_start(run_dir, resume, model, optimizer, *, seed, tokenizer_dir, info):
    """Where a GRPO run begins: at its last checkpoint (resume and a trainer_state.pt there), else at step 0.

    Resuming loads that checkpoint's weights into `model` (with LoRA: the adapters saved in the trainer
    state, onto the frozen base `model` as given, since the checkpoint's merged weights are rounded) and its
    optimizer state into `optimizer` (made for `model`), sets the RNG state and cuts metrics.jsonl back to
    the checkpoint: the run then continues exactly as if it had never stopped. Returns the trainer state
    saved there (step, real_steps, base_eval, segment_start: RL-Extra's, extrapolate.RLExtra). The learning
    rate needs no state: train.py sets it from the step count.
    Starting seeds the global RNGs (seed_everything(seed): a fresh run draws its minibatch orders from
    them), empties metrics.jsonl and writes step_000000 (the weights RL starts from, so that analyses have
    the base beside the steps). Returns None: the caller evaluates step 0 (the first row of metrics.jsonl)."""
    state = load_trainer_state(run_dir) if resume else None
    if state is not None:
        step = state["step"]
        if bool(state.get("lora")) != lora.has_adapters(model):
            raise UsageError(f"--resume: {run_dir} was trained {'with' if state.get('lora') else 'without'} "
                             "LoRA adapters: resume with the flags it was started with (--lora_rank)")
        if state.get("lora"):  # LoRA: the frozen base as given (the run's source) + the saved adapters
            lora.load_adapter_state(model, state["lora"])
        else:
            p = next(model.parameters())
            model.load_state_dict(load_model(step_dir(run_dir, step), device=p.device, dtype=p.dtype).state_dict())
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        if dist.is_main():  # the steps after the checkpoint are replayed: drop their rows (each logged once)
            rewind_metrics(run_dir, step)
        log(f"resumed {run_dir} at step {step}")
        return state
    if resume:
        log(f"warning: --resume but no trainer_state.pt in {run_dir}: starting fresh")
    # a fresh run draws its minibatch orders from the global RNG: seeded here, not only by the SFT stage
    seed_everything(seed)
    if dist.is_main():
        (Path(run_dir) / "metrics.jsonl").unlink(missing_ok=True)
        save_model(model, step_dir(run_dir, 0), tokenizer_dir=tokenizer_dir, info=info)
    return None


def save_checkpoint(run_dir, step, model, trainer_state, tokenizer_dir=None, info=None):
    """One checkpoint of a run: the weights as step_XXXXXX/ (save_model), then the trainer state --resume
    continues from (it names that step; each write is atomic, so a crash leaves the previous pair usable)."""
    save_model(model, step_dir(run_dir, step), tokenizer_dir=tokenizer_dir, info=info)
    save_trainer_state(trainer_state, run_dir)
