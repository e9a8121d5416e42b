"""analyze.py and the analyses behind it (paper1_direction, paper2_linearity, paper3_alpharl), on tiny random
checkpoints: linearity of exactly linear vs random runs,
the rank-1 model of a rank-1 update, alpha = 1 extrapolation, AlphaRL on a rank-1 linear run, smoke runs."""
import json
from pathlib import Path

import pytest
import torch

import analyze
from nanorlvr.infra import checkpoint as ckpt
from nanorlvr.papers.report import load_sd
from nanorlvr.papers.paper1_direction import (compare_populations, ratio_to_reach, replacement_verdict,
                                            separation_verdict, thresholds_for_ratios)
from nanorlvr.papers.paper2_linearity import run_extrapolate, weight_linearity
from nanorlvr.papers.paper3_alpharl import alpharl_model, rank_k_model
from nanorlvr.papers.extrapolate import is_update_matrix
from nanorlvr.model import GPT, GPTConfig

DATA = str(Path(__file__).resolve().parents[1] / "data")
FAST = ["--device=cpu", f"--data_dir={DATA}", "--n_eval=3", "--k=2", "--max_new_tokens=8", "--batch_size=4"]


def tiny(seed):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=260, n_layer=2, n_embd=32, n_head=2)).eval()


def save_sd(model, sd, path):
    model.load_state_dict(sd)
    ckpt.save_model(model, path)


def linear_run(run, steps, rank1=False):
    """Checkpoints W_k = W_0 + k D (every tensor); with rank1, D of each update matrix is rank 1 and the other
    tensors do not move. Returns {step: state dict}."""
    model = tiny(0)
    sd0 = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    D = {}
    for name, w in sd0.items():
        if name == "lm_head.weight":
            continue  # tied to the embedding
        if rank1:
            D[name] = (torch.outer(torch.randn(w.shape[0], generator=g), torch.randn(w.shape[1], generator=g)) * 1e-3
                       if is_update_matrix(name, w) else torch.zeros_like(w))
        else:
            D[name] = torch.randn(w.shape, generator=g) * 1e-3
    D["lm_head.weight"] = D["model.embed_tokens.weight"]
    sds = {}
    for k in steps:
        sds[k] = {name: w + k * D[name] for name, w in sd0.items()}
        save_sd(model, sds[k], ckpt.step_dir(run, k))
    return sds


def random_run(run, steps):
    for i, k in enumerate(steps):
        ckpt.save_model(tiny(100 + i), ckpt.step_dir(run, k))


def read_report(out):
    assert list(Path(out).glob("*.png")), "no plot written"
    assert (Path(out) / "summary.md").read_text().startswith("# analyze.py")
    return json.loads((Path(out) / "report.json").read_text())

# ----------------------------------------------------------------------------- linearity (Paper 2)


def test_weight_r2_is_one_on_an_exactly_linear_run_and_low_on_random_checkpoints(tmp_path):
    steps = [0, 1, 2, 3, 4]
    linear_run(tmp_path / "lin", steps)
    random_run(tmp_path / "rand", steps)
    paths = [p for _, p in ckpt.list_checkpoints(tmp_path / "lin")]
    r2, counts = weight_linearity(paths, steps)
    assert all(kept > 0 for kept, _ in counts.values())
    assert torch.cat(list(r2.values())).min() > 0.999
    paths = [p for _, p in ckpt.list_checkpoints(tmp_path / "rand")]
    r2, _ = weight_linearity(paths, steps)
    assert torch.cat(list(r2.values())).median() < 0.6  # iid: E[R^2] = 1 / (K - 1) = 0.25


def test_linearity_subcommand_writes_report(tmp_path):
    random_run(tmp_path / "run", [0, 10, 20, 30])
    report = analyze.main(["linearity", f"--run={tmp_path / 'run'}", f"--out={tmp_path / 'out'}", "--n_probe=4",
                           "--max_new_tokens=12", f"--control={tmp_path / 'run'}", *FAST[:2]])
    saved = read_report(tmp_path / "out")
    assert saved["steps"] == [0, 10, 20, 30] and report["weights"]["entries_kept"] > 0
    assert 4 <= saved["logprobs"]["tokens"] <= 4 * 12 and saved["memory"]["peak_rss_mb"] > 0
    assert saved["control_weights"]["median"] == pytest.approx(saved["weights"]["median"])

# ----------------------------------------------------------------------------- rank-1 and AlphaRL (Paper 3)


def test_rank1_model_of_a_rank1_update_is_the_rl_model(tmp_path):
    sds = linear_run(tmp_path / "run", [0, 3], rank1=True)
    model, shares = rank_k_model(ckpt.step_dir(tmp_path / "run", 0), ckpt.step_dir(tmp_path / "run", 3), 1)
    for name, w in model.state_dict().items():
        torch.testing.assert_close(w, sds[3][name], atol=1e-6, rtol=0)
    assert min(shares.values()) > 0.999


def test_alpharl_on_a_rank1_linear_run_predicts_the_target_exactly(tmp_path):
    steps = [0, 1, 2, 5]
    sds = linear_run(tmp_path / "run", steps, rank1=True)
    paths = [p for _, p in ckpt.list_checkpoints(tmp_path / "run")]
    pred = alpharl_model(paths, steps, window=2, target_step=5).state_dict()
    for name, w in pred.items():
        torch.testing.assert_close(w, sds[5][name], atol=1e-6, rtol=0)
    wk = alpharl_model(paths, steps, window=2, target_step=5, add_to="wk").state_dict()
    q = "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(wk[q], sds[5][q] + 2 * (sds[1][q] - sds[0][q]), atol=1e-6, rtol=0)  # W_2 + 5 D


def test_rank1_and_alpharl_subcommands(tmp_path):
    pytest.importorskip("nanorlvr.verifier")
    linear_run(tmp_path / "run", [0, 1, 2, 3], rank1=True)
    run = tmp_path / "run"
    analyze.main(["rank1", f"--base={ckpt.step_dir(run, 0)}", f"--rl={ckpt.step_dir(run, 3)}",
                  f"--out={tmp_path / 'r1'}", *FAST])
    rep = read_report(tmp_path / "r1")
    assert set(rep["acc"]) == {"base", "rl", "rank1"} and rep["top1_share"]["median"] > 0.999
    analyze.main(["alpharl", f"--run={run}", "--window=2", f"--out={tmp_path / 'a'}", *FAST])
    rep = read_report(tmp_path / "a")
    (row,) = rep["windows"]
    assert row["speedup"] == 1.5 and row["target_step"] == 3 and 0 <= row["acc_pred"] <= 1

# ----------------------------------------------------------------------------- extrapolation (Paper 2, Eq. 2)


def test_extrapolation_alpha_one_evaluates_the_t1_weights(tmp_path):
    random_run(tmp_path / "run", [0, 10, 20])
    seen = []

    def fake_eval(model, generate_fn=None):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"acc": 0.5}
    report, _ = run_extrapolate(tmp_path / "run", tmp_path, fake_eval, 0, 10, [1.0, 2.0])
    # the last checkpoint first (alone in memory), then alpha 1 = W_t1 and alpha 2 = W_0 + 2 (W_t1 - W_0),
    # written into one model
    t0, t1, last = (load_sd(ckpt.step_dir(tmp_path / "run", s)) for s in (0, 10, 20))
    for name, w in seen[0].items():
        torch.testing.assert_close(w, last[name], atol=1e-7, rtol=0)
    for name, w in seen[1].items():
        torch.testing.assert_close(w, t1[name], atol=1e-7, rtol=0)
    name = "model.layers.0.mlp.up_proj.weight"
    torch.testing.assert_close(seen[2][name], t0[name] + 2 * (t1[name] - t0[name]), atol=1e-6, rtol=0)
    assert [r["equivalent_step"] for r in report["alphas"]] == [10, 20] and report["last_step"] == 20


def test_extrapolate_subcommand(tmp_path):
    pytest.importorskip("nanorlvr.verifier")
    random_run(tmp_path / "run", [0, 10, 20])
    analyze.main(["extrapolate", f"--run={tmp_path / 'run'}", "--t0=0", "--t1=10", "--alpha=1,2",
                  f"--out={tmp_path / 'x'}", *FAST])
    rep = read_report(tmp_path / "x")
    assert [r["alpha"] for r in rep["alphas"]] == [1.0, 2.0] and rep["acc_last"] is not None

# ----------------------------------------------------------------------------- token analysis (Paper 1)


def test_ratio_to_reach_interpolates_and_says_never():
    # base 0.1, RL 0.5: 90% of the gap is 0.46, crossed halfway between (0.1, 0.42) and (0.2, 0.5)
    assert ratio_to_reach([0.2, 0.1], [0.5, 0.42], 0.1, 0.5) == pytest.approx(0.15)
    assert ratio_to_reach([0.1, 0.4], [0.2, 0.3], 0.1, 0.5) is None
    assert ratio_to_reach([0.1], [0.2], 0.5, 0.5) is None  # no gap to recover


def test_thresholds_for_ratios_fire_on_the_requested_share_of_base_tokens():
    x = torch.linspace(-1, 1, 1001)
    m = {"dlogp": x, "kl": x + 1, "entropy_base": x + 2}
    for crit, stat, fires in (("dlogp", x, lambda s, t: s <= t), ("kl", x + 1, lambda s, t: s >= t),
                              ("entropy", x + 2, lambda s, t: s >= t)):
        for r, tau in zip([0.05, 0.3], thresholds_for_ratios(crit, [0.05, 0.3], m)):
            assert fires(stat, tau).double().mean().item() == pytest.approx(r, abs=0.002)
    assert thresholds_for_ratios("random", [0.1], m) == [0.1]


def test_dlogp_subcommand(tmp_path):
    pytest.importorskip("nanorlvr.verifier")
    ckpt.save_model(tiny(0), tmp_path / "base")
    ckpt.save_model(tiny(1), tmp_path / "rl")
    analyze.main(["dlogp", f"--base={tmp_path / 'base'}", f"--rl={tmp_path / 'rl'}", "--n_prompts=3", "--samples=2",
                  "--ratios=0.1,0.4", f"--out={tmp_path / 'd'}", *FAST])
    rep = read_report(tmp_path / "d")
    assert set(rep["separability"]) == {"dlogp", "kl", "entropy_base", "entropy_rl"}
    assert 0 <= rep["separability"]["dlogp"]["auc_rl_vs_base"] <= 1
    sweep = rep["replacement"]["sweep"]
    assert set(sweep) == {"dlogp", "kl", "entropy", "random"} and all(len(v) == 2 for v in sweep.values())
    for pts in sweep.values():
        assert all(0 <= p["ratio"] <= 1 for p in pts)
    assert sweep["dlogp"][1]["ratio"] > sweep["dlogp"][0]["ratio"]  # a looser gate replaces more
    # the settings the figures depend on, in report.json and in summary.md's first line
    assert rep["settings"]["accuracy"] == "avg@2 at T = 1" and rep["settings"]["n_eval"] == 3
    assert "Settings: accuracy avg@2 at T = 1 on 3 problems" in (tmp_path / "d" / "summary.md").read_text()


def test_the_separation_verdict_follows_the_figures_when_kl_separates_better_than_dlogp():
    # hand-made token metrics: on RL text KL is shifted far up, dlogp not at all -> KL's AUC is 1, dlogp's 0.5
    torch.manual_seed(0)
    same = torch.randn(400)
    base_gen = {"dlogp": same, "kl": torch.rand(400), "entropy_base": same, "entropy_rl": same}
    rl_gen = {"dlogp": same.flip(0), "kl": torch.rand(400) + 5, "entropy_base": same.flip(0), "entropy_rl": same.flip(0)}
    sep = compare_populations(base_gen, rl_gen)
    assert sep["kl"]["separation"] == pytest.approx(1.0) and sep["dlogp"]["separation"] == pytest.approx(0.0)
    verdict = separation_verdict(sep)
    assert verdict.startswith("kl separates them better than dlogp") and "unlike Paper 1" in verdict
    rl_gen["dlogp"] = same + 10  # now dlogp separates perfectly too, and KL less
    rl_gen["kl"] = torch.rand(400) + 0.5
    assert separation_verdict(compare_populations(base_gen, rl_gen)).startswith("dlogp separates them best")


def test_the_replacement_verdict_names_the_gate_with_the_smallest_ratio():
    assert "unlike Paper 1" in replacement_verdict({"dlogp": 0.2, "kl": 0.05, "random": None})
    assert replacement_verdict({"dlogp": 0.03, "kl": 0.05}) == "dlogp needs the fewest replaced tokens, as in Paper 1."
    assert replacement_verdict({"dlogp": None, "kl": None}).startswith("No gate")


def test_alpharl_norm_ratio_pools_top_singular_values_over_frobenius_norms_unlike_the_energy_share():
    from nanorlvr.papers.paper3_alpharl import top1_norm_ratio
    from nanorlvr.papers.extrapolate import rank_k_state_dict
    q, o = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.o_proj.weight"
    base = {q: torch.zeros(2, 2), o: torch.ones(3, 2), "model.norm.weight": torch.ones(2)}
    # updates diag(3, 4) (s1 4, ||.||_F 5) and a rank-1 one of norm 1 (s1 1, ||.||_F 1); the norm moves nothing
    rl = {q: torch.diag(torch.tensor([3.0, 4.0])), o: torch.ones(3, 2) + torch.tensor([[1.0, 0], [0, 0], [0, 0]]),
          "model.norm.weight": torch.full((2,), 7.0)}
    assert top1_norm_ratio(base, rl) == pytest.approx((4 + 1) / (5 + 1))
    _, shares = rank_k_state_dict(base, rl, 1)
    assert shares[q] == pytest.approx(16 / 25) and shares[o] == pytest.approx(1.0)  # the other statistic


def test_token_metrics_scored_a_chunk_of_tokens_at_a_time_equal_the_one_tensor_path():
    """A real vocabulary takes the chunked path (bounded memory); it must give the toy's figures."""
    from nanorlvr.papers.paper1_direction import pair_token_metrics
    base, rl = tiny(0), tiny(1)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 260, (n,), generator=g).tolist() for n in (3, 5, 4, 6, 2)]
    completions = [torch.randint(0, 260, (n,), generator=g).tolist() for n in (4, 0, 7, 1, 5)]
    whole = pair_token_metrics(base, rl, prompts, completions, batch_size=4)
    chunked = pair_token_metrics(base, rl, prompts, completions, batch_size=4, chunk=3 * 260)  # 3 tokens a chunk
    assert len(whole["dlogp"]) == 4 + 7 + 1 + 5
    for name in whole:
        torch.testing.assert_close(chunked[name], whole[name], rtol=1e-5, atol=1e-5)
