"""train.py end to end on a tiny model and an easy task: the pipeline runs, SFT micro-batches lose no
target, resume is exact, checkpoints are atomic, and RL-Extra jumps by the formula of paper 2, Eq. 3."""
import json

import pytest
import torch

import train
from killed import main_killed_after
from nanorlvr.infra import checkpoint as ckpt
from nanorlvr.papers.extrapolate import is_norm
from nanorlvr.model import GPT, GPTConfig

TINY = ["--n_layer=2", "--n_embd=64", "--n_head=2", "--n_ops=1", "--max_num=9", "--p_direct=0", "--n_train=200", "--n_test=16", "--n_eval=16",
        "--eval_k=2", "--prompts_per_step=4", "--group_size=8", "--max_new_tokens=16", "--lr=3e-3", "--warmup=1",
        "--threads=1", "--verify_workers=1"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    # a base that solves some problems (a few %), so that GRPO steps have rewards to learn from
    train.main(TINY + ["--stage=sft", "--sft_steps=200", "--sft_batch=32", f"--data_dir={d}/data", f"--base_dir={d}/base"])
    return d


def grpo(base, out, *extra, halt_after=0):
    """train.py's GRPO stage; halt_after > 0 stops it after that many real steps, as if it were killed then
    (tests/killed.py)."""
    argv = TINY + ["--stage=grpo", f"--data_dir={base}/data", f"--base_dir={base}/base", f"--out_dir={out}", *extra]
    return main_killed_after(train, argv, halt_after) if halt_after else train.main(argv)


def weights(path):
    return ckpt.load_model(path).state_dict()


def test_pipeline_writes_checkpoints_metrics_and_summary(base, tmp_path):
    grpo(base, tmp_path, "--steps=3", "--save_every=2")
    steps = [s for s, _ in ckpt.list_checkpoints(tmp_path / "grpo")]
    assert steps == [0, 2, 3]
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("base_greedy_acc", "final_greedy_acc", "base_avg2", "final_avg2"):
        assert 0.0 <= summary[key] <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1, 2, 3]
    assert any(r.get("rows_used", 0) > 0 and "loss" in r for r in rows), "no step had a learning signal"
    assert (tmp_path / "grpo" / "curves.png").read_bytes().startswith(b"\x89PNG")  # the training curves


def test_sft_micro_batches_compute_the_whole_batch_loss(base, tmp_path, capsys):
    # micro-batches hold rows grouped by length, each trimmed to its own longest row: not one target lost
    def sft_losses(out, *extra):
        train.main(TINY + ["--stage=sft", "--sft_steps=2", "--sft_batch=32", f"--data_dir={base}/data", "--n_eval=4",
                           f"--base_dir={out}", *extra])
        return [float(line.split(" loss ")[1].split()[0]) for line in capsys.readouterr().out.splitlines()
                if line.startswith("sft ")]
    whole, micro = sft_losses(tmp_path / "whole"), sft_losses(tmp_path / "micro", "--micro_batch=5")
    assert len(whole) == 2 and whole[0] == pytest.approx(micro[0], rel=1e-6)  # same weights: the same loss
    assert whole[1] == pytest.approx(micro[1], rel=1e-4)  # after one step taken each way


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(base, tmp_path):
    grpo(base, tmp_path / "a", "--steps=4", "--save_every=2")
    grpo(base, tmp_path / "b", "--steps=4", "--save_every=2", halt_after=3)  # "killed" after step 3, saved at 2
    grpo(base, tmp_path / "b", "--steps=4", "--save_every=2", "--resume=true")
    steps = [json.loads(line)["step"] for line in (tmp_path / "b/grpo/metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3, 4, 4]  # base eval, one row per step (the replayed step 3 once), final eval
    a, b = weights(tmp_path / "a/grpo/step_000004"), weights(tmp_path / "b/grpo/step_000004")
    assert not all(torch.equal(a[k], weights(tmp_path / "a/grpo/step_000000")[k]) for k in a), "training changed nothing"
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("rl_extra", ["1,2", "1,5"])
def test_rl_extra_jump_follows_eq3_and_stops_at_steps(base, tmp_path, rl_extra):
    # one real step (m = 1), then a jump of n = 2: W_3 = W_0 + 3 (W_1 - W_0), norms from W_1. With n = 5 the
    # jump is cut to the 2 steps left, so the checkpoint named step 3 holds step 3's weights, not step 6's.
    grpo(base, tmp_path / "plain", "--steps=1")
    grpo(base, tmp_path / "extra", "--steps=3", f"--rl_extra={rl_extra}")
    w0, w1 = weights(tmp_path / "plain/grpo/step_000000"), weights(tmp_path / "plain/grpo/step_000001")
    w3 = weights(tmp_path / "extra/grpo/step_000003")
    assert any(not torch.equal(w0[k], w1[k]) for k in w0), "the real step changed nothing"
    for k in w0:
        expected = w1[k] if is_norm(k) else w0[k] + 3 * (w1[k] - w0[k])
        torch.testing.assert_close(w3[k], expected, rtol=1e-5, atol=1e-6)
    rows = [json.loads(line) for line in (tmp_path / "extra/grpo/metrics.jsonl").read_text().splitlines()]
    assert [r["rl_extra_jump_to"] for r in rows if "rl_extra_jump_to" in r] == [3]


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_rl_extra_resume_ends_with_the_same_weights(base, tmp_path, device):
    # the segment start is saved in trainer_state.pt and loaded to the CPU: the jump after a resume must
    # still find it next to the model's weights (on CUDA it was not), and follow the same line
    extra = ("--steps=4", "--rl_extra=1,1", "--save_every=1", f"--device={device}")
    grpo(base, tmp_path / "a", *extra)
    grpo(base, tmp_path / "b", *extra, halt_after=1)  # killed at step 2: one real step and its jump
    grpo(base, tmp_path / "b", *extra, "--resume=true")
    a, b = weights(tmp_path / "a/grpo/step_000004"), weights(tmp_path / "b/grpo/step_000004")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_a_crash_mid_write_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    torch.manual_seed(0)
    old = GPT(GPTConfig(n_layer=1, n_embd=32, n_head=2))
    ckpt.save_model(old, tmp_path / "step")

    def crash(model, path, tokenizer_dir=None):
        (path / "model.safetensors").write_bytes(b"half a file")
        raise KeyboardInterrupt("killed mid-write")
    monkeypatch.setattr(ckpt, "save_pretrained", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_model(GPT(GPTConfig(n_layer=1, n_embd=32, n_head=2)), tmp_path / "step")
    loaded = ckpt.load_model(tmp_path / "step").state_dict()
    for k, v in old.state_dict().items():
        assert torch.equal(loaded[k], v), k


@pytest.mark.slow
def test_default_quickstart_gives_a_base_in_band_and_rl_improves_it(tmp_path):
    # the real thing (python train.py): ~9 min on 2 idle cores, ~15 min on the one thread tests use;
    # measured: greedy 0.306 -> 0.458, avg@8 0.191 -> 0.388 (this test's bar: +0.10 on both)
    train.main([f"--out_dir={tmp_path}", f"--base_dir={tmp_path}/base", f"--data_dir={tmp_path}/data"])
    s = json.loads((tmp_path / "summary.json").read_text())
    assert 0.15 <= s["base_greedy_acc"] <= 0.6 and s["base_pass8"] > s["base_greedy_acc"]
    assert s["final_greedy_acc"] - s["base_greedy_acc"] >= 0.10
    assert s["final_avg8"] - s["base_avg8"] >= 0.10


def test_dynamic_sampling_trains_only_on_groups_with_unequal_rewards(base, tmp_path):
    grpo(base, tmp_path, "--steps=2", "--save_every=2", "--dynamic_sampling=true", "--sample_rounds=3",
         "--overlong_buffer=4")
    rows = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward" in r]
    for r in steps:
        assert 1 <= r["sample_rounds"] <= 3 and 0 <= r["zero_var_frac"] <= 1
        assert r["rows_used"] <= 4 * 8  # at most P groups of G kept
        if r["sample_rounds"] < 3:  # stopped early: the batch is full of groups with unequal rewards
            assert 0 < r["reward"] < 1 and r["pass_rate"] == 1.0


def test_eval_k_zero_evaluates_greedy_only(base, tmp_path):
    grpo(base, tmp_path, "--steps=1", "--save_every=1", "--eval_k=0")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0 <= summary["final_greedy_acc"] <= 1 and not any(k.startswith(("base_avg", "final_avg")) for k in summary)


def test_sft_then_grpo_prints_one_line_per_evaluation(tmp_path, capsys):
    # --stage=all: the SFT base's evaluation is GRPO's step 0 (reused): its figures are printed once
    train.main(TINY + ["--stage=all", "--sft_steps=5", f"--data_dir={tmp_path}/data", f"--base_dir={tmp_path}/base",
                       f"--out_dir={tmp_path}", "--steps=4", "--eval_every=2", "--save_every=4"])
    lines = [line for line in capsys.readouterr().out.splitlines() if "greedy " in line]
    assert [line.split(":")[0] for line in lines] == ["SFT base", "step 2", "step 4 (final)"], lines
    assert "avg@2" not in lines[1] and "avg@2" in lines[2]  # along the run greedy only (--eval_every_k=0)


def test_evaluation_draws_nothing_from_the_global_rngs():
    # evaluations along the run must not move the training's random streams (the weights stay bit-identical)
    import random
    import numpy as np
    from nanorlvr.evaluate import evaluate
    from nanorlvr.prompts import ToyFormat
    from nanorlvr.tokenizer import toy_tokenizer
    fmt = ToyFormat(toy_tokenizer())
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=fmt.enc.n_vocab, n_layer=1, n_embd=32, n_head=2, n_kv_head=2, max_seq_len=64))
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    evaluate(model, fmt, [{"question": "1+2", "answer": "3"}, {"question": "4*2", "answer": "8"}], k=2,
             max_new_tokens=8)
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert (np.random.get_state()[1] == before[2]).all()


def test_a_second_run_into_the_same_run_folder_is_refused_and_touches_nothing(base, tmp_path):
    grpo(base, tmp_path, "--steps=2", "--save_every=2")
    files = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    with pytest.raises(train.UsageError, match=r"--run=grpo: .* already holds a run .*--run=NAME.*--resume=true"):
        grpo(base, tmp_path, "--steps=3", "--save_every=2")
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == files
    grpo(base, tmp_path, "--steps=2", "--save_every=2", "--run=second")  # another name: its own folder, summary
    assert (tmp_path / "second" / "step_000002").is_dir() and (tmp_path / "summary_second.json").is_file()
    assert all(p.read_bytes() == b for p, b in files.items())


def test_curves_draw_greedy_only_evaluations_and_break_at_jumps(tmp_path):
    from nanorlvr.infra.curves import plot_curves, segments
    rows = [{"step": 0, "eval": {"greedy_acc": 0.2, "avg8": 0.1}}]
    rows += [{"step": s, "reward": 0.1 * s, "len": 10, "entropy": 0.2, "zero_var_frac": 0.3} for s in (1, 2)]
    rows[-1].update(rl_extra_jump_to=4, eval={"greedy_acc": 0.3})  # a greedy-only evaluation where it landed
    rows += [{"step": 5, "reward": 0.5, "len": 10}, {"step": 5, "eval": {"greedy_acc": 0.4, "avg8": 0.3}}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert plot_curves(tmp_path).read_bytes().startswith(b"\x89PNG")
    xs, ys = segments([1, 2, 5], [0.1, 0.2, 0.5], [(2, 4)])
    assert xs[:2] == [1, 2] and xs[3:] == [5] and xs[2] != xs[2]  # nan between the two sides of the jump


def lrs_and_fresh_optimizers(base, out, *extra, skip_first=False):
    """train.py's GRPO stage, recording at each update the learning rate it runs at and whether the optimizer
    is fresh (no Adam moments yet). skip_first: the first step's rewards are all 0 (a skipped step)."""
    seen, real_update, real_rollout = [], train.grpo_update, train.rollout

    def update(model, optimizer, roll, *a, **k):
        seen.append((optimizer.param_groups[0]["lr"], not optimizer.state))
        return real_update(model, optimizer, roll, *a, **k)

    def rollout(*a, **k):
        roll = real_rollout(*a, **k)
        if skip_first and not seen:
            roll.rewards.zero_()  # every advantage 0: grpo_update skips the step
        return roll
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "grpo_update", update)
        mp.setattr(train, "rollout", rollout)
        grpo(base, out, *extra)
    return seen


def test_a_skipped_step_keeps_the_schedule_on_the_step_count(base, tmp_path):
    seen = lrs_and_fresh_optimizers(base, tmp_path, "--steps=3", "--warmup=3", "--lr=3e-3", skip_first=True)
    assert [lr for lr, _ in seen] == pytest.approx([1e-3, 2e-3, 3e-3])  # warmup (s + 1) / 3, s = 0, 1, 2
    rows = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["skipped"] == "no row has a non-zero advantage"


@pytest.mark.parametrize("keep", ["reset", "keep"])
def test_rl_extra_jumps_keep_the_cosine_schedule_on_the_step_count(base, tmp_path, keep):
    # m = 1, n = 2: real steps at 0, 3, 6, 9; the cosine lr of those steps (virtual ones count), with a fresh
    # optimizer after each jump with reset, the same one with keep
    seen = lrs_and_fresh_optimizers(base, tmp_path, "--steps=10", "--rl_extra=1,2", "--schedule=cosine",
                                    "--warmup=1", "--lr=1e-3", f"--rl_extra_optimizer={keep}", "--save_every=10")
    steps = [0, 3, 6, 9]
    assert [lr for lr, _ in seen] == pytest.approx([1e-3 * train.lr_factor(s, 1, 10, "cosine") for s in steps])
    assert seen[2][0] < seen[1][0] < seen[0][0]  # a cosine falling, not restarting at its peak
    assert [fresh for _, fresh in seen] == [True] + [keep == "reset"] * 3
