"""bench/lora.py on hand-made inputs: the runs it schedules (the lr rule: 3x, 10x, 30x the regime's full lr
for seed 1, the winner for seeds 2-3), the rule's choice, a table row, and the paper-3 alignment of a LoRA
update with the full update's top singular direction."""
import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import lora as L, paper_results as P  # noqa: E402


def flag(argv, name):
    return next(a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}="))


def test_quick_sweep_is_full_plus_three_lrs_around_ten_times_full_for_each_rank():
    jobs = L.sweep_jobs("o", "b", ["fast"], [1])
    names = [n for n, _ in jobs]
    assert len(names) == len(set(names)) == 1 + 3 * 3
    full = dict(jobs)["fast/s1"]
    assert float(flag(full, "lr")) == 1e-4 and not any(a.startswith("--lora_rank") for a in full)
    lrs = {(int(flag(a, "lora_rank")), float(flag(a, "lr"))) for n, a in jobs if n != "fast/s1"}
    assert lrs == {(r, lr) for r in (1, 8, 64) for lr in (3e-4, 1e-3, 3e-3)}
    assert all(flag(a, "seed") == "1" and flag(a, "out_dir") == f"o/{n}" for n, a in jobs)


def test_paper_regime_runs_keep_its_flags_and_scale_its_lr():
    argv = dict(L.seed_jobs("o", "b", ["paper"], [1, 2, 3], {("paper", r): 10 for r in L.RANKS}))["lora/paper/r8_x10/s3"]
    assert flag(argv, "lr") == "0.0001" and flag(argv, "lora_rank") == "8"
    assert "--n_minibatches=4" in argv and "--dynamic_sampling=true" in argv
    assert [a for a in argv if a.startswith("--lr=")] == ["--lr=0.0001"]  # the regime's own lr replaced


def test_seeds_after_the_first_run_at_the_chosen_lr_only():
    chosen = {("fast", 1): 30, ("fast", 8): 3, ("fast", 64): 10}
    names = [n for n, _ in L.seed_jobs("o", "b", ["fast"], [1, 2, 3], chosen)]
    assert sorted(names) == sorted(f"lora/fast/r{r}_x{f}/s{s}" for (_, r), f in chosen.items() for s in (2, 3))


def test_the_best_final_accuracy_wins_and_a_tie_goes_to_ten_times():
    assert L.choose_factor({3: 0.40, 10: 0.45, 30: 0.47}) == 30
    assert L.choose_factor({3: 0.47, 10: 0.47, 30: 0.47}) == 10
    assert L.choose_factor({3: 0.47, 10: 0.40, 30: 0.47}) in (3, 30)  # equally far from 10x in log lr


def test_a_row_is_the_mean_of_its_seeds_and_its_gain_relative_to_full():
    r = L.variant_record([0.40, 0.50, 0.60], 0.25, [0.44, 0.46, 0.48], [60.0, 70.0, 80.0], 1234)
    assert r["mean"] == pytest.approx(0.5) and r["std"] == pytest.approx(0.1) and r["seeds"] == 3
    assert r["gain"] == pytest.approx(0.25) and r["gain_vs_full"] == pytest.approx(0.25 / 0.21)
    assert r["wall_seconds"] == pytest.approx(70.0) and r["trainable"] == 1234


def orthonormal(n, k, seed):
    q, _ = torch.linalg.qr(torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def test_alignment_is_one_on_the_top_direction_zero_off_it_and_the_cosine_in_between():
    u, v = orthonormal(6, 2, 0), orthonormal(5, 2, 1)
    full = 3 * torch.outer(u[:, 0], v[:, 0]) + torch.outer(u[:, 1], v[:, 1])
    on = L.update_alignment(full, -2 * torch.outer(u[:, 0], v[:, 0]))  # the sign of a direction is free
    assert on["cos"] == pytest.approx(1) and on["left"] == pytest.approx(1) and on["right"] == pytest.approx(1)
    off = L.update_alignment(full, torch.outer(u[:, 1], v[:, 1]))
    assert off["cos"] == pytest.approx(0, abs=1e-12) and off["left"] == pytest.approx(0, abs=1e-12)
    half = L.update_alignment(full, torch.outer(u[:, 0], v[:, 0]) + torch.outer(u[:, 1], v[:, 1]))
    assert half["cos"] == pytest.approx(1 / math.sqrt(2))
    assert on["chance"] == pytest.approx(math.sqrt(2 / (math.pi * 30)))


def test_alignments_cover_the_projection_matrices_only():
    w0 = {"model.layers.0.self_attn.q_proj.weight": torch.zeros(3, 3), "model.embed_tokens.weight": torch.zeros(4, 3),
          "model.norm.weight": torch.zeros(3)}
    w1 = {k: v + torch.eye(*v.shape[:2]) if v.ndim == 2 else v for k, v in w0.items()}
    assert list(L.alignments(w0, w1, w1)) == ["model.layers.0.self_attn.q_proj.weight"]


def test_the_table_shows_each_variant_with_its_lr_seeds_and_gain():
    row = L.variant_record([0.5, 0.6], 0.25, [0.45, 0.55], [90.0, 110.0], 9856) | {"lr": 1e-3}
    md = L.table_md({"table": {"fast": {"base_greedy_acc": 0.25, "rows": {"r1": row}}}, "paper3": {},
                     "sweep": {"fast/r1": {"3x": 0.4, "10x": 0.5, "30x": 0.45}}})
    # 0.55 - 0.50, 2 SE = 2 sqrt(0.0707² / 2 + 0.0707² / 2) = 0.141
    assert ("| r1 | 0.001 | 0.400 / 0.500 / 0.450 | 9,856 | 0.550 ± 0.071 (n=2) | 1.20 | +0.050 ± 0.141 "
            "(inside the noise) | 1.7 min |") in md


def test_a_variant_counts_as_below_full_fine_tuning_only_beyond_two_standard_errors():
    def vs(finals):
        return L.variant_record(finals, 0.25, [0.45, 0.46, 0.47], [1.0] * 3, 1)["vs_full"]
    assert vs([0.30, 0.31, 0.32]) == "below full" and vs([0.44, 0.46, 0.48]) == "inside the noise"
    assert vs([0.50, 0.51, 0.52]) == "above full" and vs([0.40]) == "1 seed: no verdict"


def test_full_fine_tuning_and_its_rank1_model_are_paper_results_own_jobs():
    """Shared by name and command with paper_results and the step-size map: trained once in a shared --out."""
    ours = dict(L.sweep_jobs("o", "o/base", ["fast", "paper"], [1, 2]) + L.analysis_jobs("o", ["fast", "paper"], [1, 2]))
    theirs = dict(P.train_jobs("o", "o/base", [1, 2]) + P.analysis_jobs("o", [1, 2], 1))
    shared = set(ours) & set(theirs)
    assert shared == {f"{r}/s{s}" for r in ("fast", "paper") for s in (1, 2)} | {
        f"{r}/s{s}/rank1" for r in ("fast", "paper") for s in (1, 2)}
    assert all(ours[n] == theirs[n] for n in shared)
    (short,) = [a for n, a in L.analysis_jobs("o", ["fast"], [1], steps=20)]
    assert "--rl=o/fast/s1/grpo/step_000020" in short


def test_a_finished_runs_part_keeps_its_summary_and_curve_and_answers_only_for_its_command(tmp_path):
    name, argv = L.grpo_job(tmp_path, tmp_path / "base", "fast", 1, 10, 1)
    run = tmp_path / name
    (run / "grpo").mkdir(parents=True)
    (run / "grpo" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 0, "eval": {"greedy_acc": 0.30}}, {"step": 5, "reward": 0.4}, {"step": 10, "eval": {"greedy_acc": 0.41}}]))
    (run / "summary.json").write_text(json.dumps({"base_greedy_acc": 0.30, "final_greedy_acc": 0.41,
                                                  "wall_seconds": 12.5, "n_eval": 1000, "base_avg8": 0.2}))
    part = L.save_run(tmp_path / "r", tmp_path, name, argv, seconds=13.0)
    assert part["summary"] == {"base_greedy_acc": 0.30, "final_greedy_acc": 0.41, "wall_seconds": 12.5, "n_eval": 1000}
    back = L.run_part(tmp_path / "r", name, argv)  # read back from the committed file
    assert back["curve"] == [[0, 0.30], [10, 0.41]] and back["job_seconds"] == 13.0 and back["machine"]
    assert L.run_part(tmp_path / "r", name, ["/other/python", *argv[1:]]) is not None  # the interpreter may differ
    assert L.run_part(tmp_path / "r", name, argv + ["--steps=3"]) is None  # another command: run again
    assert L.run_part(tmp_path / "r", "lora/fast/r8_x10/s1", argv) is None
