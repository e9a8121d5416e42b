"""bench/real_model.py without the model: its job list (the chosen task on every run, every analysis the toy
gets on the run's checkpoints, explicit sizes), its lr rule, its learning test and its "SmolLM2-135M" column
computed by findings.json's verdict rules, on hand-made records."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import paper_results as P, real_model as R  # noqa: E402

CHOICE = ROOT / "bench" / "results" / "smollm2" / "task_choice.json"


def test_every_run_starts_from_the_pretrained_model_on_the_chosen_task():
    jobs = R.sweep_jobs("o") + R.run_jobs("o", [2], ["3e-6"])
    assert [n for n, _ in jobs] == [f"run/lr{lr}/s1" for lr in R.SWEEP_LRS] + ["run/lr3e-6/s2"]
    for _, argv in jobs:
        assert argv[1:4] == ["train.py", "--stage=grpo", "--init_from=data/smollm2/hf"]
        assert set(R.TASK + R.ROLLOUT) <= set(argv) and f"--n_eval={R.N_EVAL}" in argv and R.N_EVAL >= 200
    # the sweep at full length: every lr runs all the steps, with its checkpoints and evaluations
    for lr in R.SWEEP_LRS:
        run = dict(jobs)[f"run/lr{lr}/s1"]
        assert {f"--lr={lr}", "--steps=100", "--save_every=10", "--eval_every=10", "--seed=1"} <= set(run)
    assert 2 <= len(R.SWEEP_LRS) <= 3 and R.STEPS >= 100


def test_the_defaults_are_the_task_that_task_choice_json_chose():
    choice = json.loads(CHOICE.read_text())
    assert choice["chosen"]["train_flags"] == R.TASK
    assert f"--temperature={choice['chosen']['rollout_temperature']:g}" in R.ROLLOUT
    measured = choice.get("remeasured", {}).get("candidates", []) + choice["candidates"]  # the latest first
    chosen = next(c for c in measured if c["name"] == choice["chosen"]["name"])
    assert 0.2 <= chosen["greedy_acc"] <= 0.6 and f"--max_new_tokens={chosen['max_new_tokens']}" in R.TASK


def test_every_analysis_reads_the_runs_checkpoints_with_explicit_sizes():
    jobs = dict(R.analysis_jobs("o", 1, "3e-6"))
    assert set(jobs) == {f"s1/{n}" for n in ("linearity", "rank1", "eq2_inside", "eq2_beyond", "alpharl", "eq1",
                                             "dlogp", "dlogp_extrapolation")}
    run = "o/run/lr3e-6/s1/grpo"
    assert f"--run={run}" in jobs["s1/linearity"] and "--n_probe=32" in jobs["s1/linearity"]
    assert {f"--base={run}/step_000000", f"--rl={run}/step_000100"} <= set(jobs["s1/rank1"]) & set(jobs["s1/dlogp"])
    assert {"--extrapolate=logits", f"--ckpt0={run}/step_000050", f"--ckpt1={run}/step_000100"} <= set(jobs["s1/eq1"])
    assert "--extrapolate=dlogp" in jobs["s1/dlogp_extrapolation"]
    # Eq. 2 inside lands on the last real step: 40 + 2 (70 - 40) = 100
    inside = jobs["s1/eq2_inside"]
    assert {"--t0=40", "--t1=70", "--alpha=2"} <= set(inside)
    for name, argv in jobs.items():  # every evaluation sized here, one thread, an output that P.done can see
        assert "--threads=1" in argv and any(a.startswith("--out=o/run/lr3e-6/s1/analysis/") for a in argv)
        if name != "s1/linearity":
            assert any(a in argv for a in (f"--n_eval={R.N_EVAL}", f"--eval={R.N_EVAL}"))


@pytest.mark.parametrize("rows, lr", [
    ([("1e-6", 0.30, 0.31), ("3e-6", 0.30, 0.36), ("1e-5", 0.30, 0.20)], "3e-6"),   # 1e-5 broke the model
    ([("1e-6", 0.30, 0.33), ("3e-6", 0.30, 0.33), ("1e-5", 0.30, 0.29)], "3e-6"),   # a tie: the larger lr
    ([("1e-6", 0.30, 0.10), ("3e-6", 0.30, 0.05), ("1e-5", 0.30, 0.0)], "1e-6"),    # all broke: the smallest
])
def test_the_lr_rule_drops_broken_lrs_then_takes_the_best_accuracy(rows, lr):
    assert R.choose_lr(rows) == lr


def test_learning_means_a_rise_beyond_two_standard_errors_of_the_difference():
    # at 0.3 -> 0.4 on 200 problems: SE of the difference sqrt((0.21 + 0.24) / 200) = 0.047, 2 SE 0.095
    assert R.learning_ok([(0, 0.3), (100, 0.4)]) and not R.learning_ok([(0, 0.3), (100, 0.39)])


def reports(weights_median=0.8, recovery=0.95, eq2_beyond_15=0.53):
    return {"linearity": {"weights": {"median": weights_median, "share_above_0.7": 0.6}, "logprobs": {"median": 0.9}},
            "rank1": {"recovery": recovery, "top1_share": {"median": 0.4}, "top1_norm_ratio": 0.5},
            "alpharl": {"acc_final": 0.5, "windows": [
                {"window": 5, "retained": 0.9, "retained_rescaled": 0.92, "acc_window": 0.45},
                {"window": 8, "retained": 0.97, "retained_rescaled": 0.98, "acc_window": 0.48}]},
            "eq2_inside": {"alphas": [{"alpha": 2, "acc": 0.51}], "acc_last": 0.50},
            "eq2_beyond": {"alphas": [{"alpha": 1.0, "acc": 0.5}, {"alpha": 1.5, "acc": eq2_beyond_15},
                                      {"alpha": 2.0, "acc": 0.48}]}}


EQ1 = {"results": [{"setting": "plain b", "greedy_acc": 0.5}, {"setting": "alpha=1.5", "greedy_acc": 0.52},
                   {"setting": "alpha=2", "greedy_acc": 0.49}]}


def test_one_runs_findings_are_read_under_findings_json_keys():
    x = R.measured([(0, 0.3), (50, 0.4), (100, 0.5)], reports(), EQ1)
    assert (x["base_acc"], x["final_acc"], x["rank1_top1_norm_ratio"]) == (0.3, 0.5, 0.5)
    assert (x["eq2_inside"], x["eq2_beyond_1.5"], x["eq2_beyond_2"], x["eq1_1.5"]) == pytest.approx((0.01, 0.03, -0.02, 0.02))
    assert (x["alpharl_w80"], x["alpharl_w50_window"]) == pytest.approx((0.97, 0.9))
    toy = json.loads((ROOT / "bench" / "results" / "findings.json").read_text())["per_seed"]["paper"][0]
    assert set(x) - {"rank1_top1_norm_ratio"} <= set(toy)  # the toy's keys: one table can hold both


def test_the_smollm2_column_follows_findings_json_rules_and_leaves_out_what_is_not_run():
    seeds = [R.measured([(0, 0.3), (100, a)], reports(w, rec, b), EQ1)
             for a, w, rec, b in ((0.45, 0.85, 0.95, 0.55), (0.47, 0.83, 0.97, 0.54))]
    rec = {r["finding"]: r for r in R.column(seeds)}
    assert {r["regime"] for r in rec.values()} == {R.COLUMN}
    assert rec["weight_r2_median"]["mean"] == pytest.approx(0.84) and rec["weight_r2_median"]["verdict"] == "yes"
    assert rec["rank1_recovery"]["verdict"] == "yes"  # level 0.9
    assert rec["eq2_beyond_1.5"]["verdict"] == "yes"  # +0.05, +0.04: beyond 2 SE of the mean
    assert rec["accuracy_gain"]["per_seed"] == pytest.approx([0.15, 0.17]) and rec["accuracy_gain"]["verdict"] == "yes"
    assert not any(k.startswith(("rlextra", "reweight")) for k in rec)  # not run on SmolLM2
    for r in rec.values():
        assert r["verdict"] == P.verdict(tuple(r["rule"]), r["mean"], r["std"], r["seeds"])


def test_a_finished_job_is_skipped_and_a_killed_run_resumes_from_its_checkpoint(tmp_path):
    done, killed, fresh = R.run_jobs(tmp_path, [1, 2, 3], ["1e-6"])
    (tmp_path / "run/lr1e-6/s1").mkdir(parents=True)
    (tmp_path / "run/lr1e-6/s1/summary.json").write_text("{}")
    (tmp_path / "run/lr1e-6/s2/grpo").mkdir(parents=True)
    (tmp_path / "run/lr1e-6/s2/grpo/trainer_state.pt").write_bytes(b"")
    todo = dict(R.pending([done, killed, fresh]))
    assert set(todo) == {"run/lr1e-6/s2", "run/lr1e-6/s3"}
    assert todo["run/lr1e-6/s2"] == killed[1] + ["--resume=true"] and todo["run/lr1e-6/s3"] == fresh[1]


def test_every_flag_of_every_job_is_one_its_script_accepts():
    # both benches: a renamed flag would otherwise surface hours into a run. argparse's errors (an unknown
    # flag, a value of the wrong type) end in "(see --help)"; a value checked by validate() (a checkpoint
    # missing here) is not this test's business.
    import analyze
    import sample
    import train
    from bench import analysis_memory as A, step_size_map as M
    from nanorlvr.infra.common import UsageError, parse_config
    configs = {"train.py": train.TrainConfig, "sample.py": sample.SampleConfig, "analyze.py": analyze.COMMANDS}
    jobs = (R.sweep_jobs("o") + R.run_jobs("o", [2], ["1e-6"]) + R.analysis_jobs("o", 1, "1e-6")
            + M.train_jobs("o", "o/base", [1]) + M.analysis_jobs("o", [1]) + M.long_jobs("o", "o/base", M.POINTS)
            + A.jobs("o/grpo", "o/mem", 50, 20, steps=[0, 1, 2, 3]))
    for _, argv in jobs:
        try:
            parse_config(configs[argv[1]], argv[2:])
        except UsageError as e:
            assert "(see --help)" not in str(e), (argv, e)


def test_the_results_folder_is_written_from_finished_runs_without_checkpoints(tmp_path):
    def put(path, obj, jsonl=False):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(json.dumps(o) for o in obj) if jsonl else json.dumps(obj))
    out = tmp_path / "out"
    lr_run, lr_other = R.SWEEP_LRS[0], R.SWEEP_LRS[1]  # the other lr broke the model: the rule picks the first
    put(out / f"run/lr{lr_other}/s1/grpo/metrics.jsonl", [{"step": s, "eval": {"greedy_acc": 0.3 - s / 1000, "greedy_exact_match": 0.2}}
                                                          for s in range(0, 101, 10)], jsonl=True)
    put(out / f"run/lr{lr_other}/s1/summary.json", {"base_greedy_acc": 0.3, "final_greedy_acc": 0.2, "n_eval": R.N_EVAL})
    run = out / f"run/lr{lr_run}/s1"
    put(run / "grpo/metrics.jsonl", [{"step": s, "eval": {"greedy_acc": 0.3 + s / 500, "greedy_exact_match": 0.2}}
                                     for s in range(0, 101, 10)], jsonl=True)
    put(run / "summary.json", {"base_greedy_acc": 0.3, "final_greedy_acc": 0.4, "n_eval": R.N_EVAL})
    (run / "analysis/rank1").mkdir(parents=True)
    (run / "analysis/rank1/model.safetensors").write_bytes(b"weights")  # never copied into the results
    for name, rep in reports().items():
        put(run / "analysis" / name / "report.json", rep)
    put(run / "analysis/eq1.json", EQ1)
    put(run / "analysis/dlogp/report.json", {
        "separability": {m: {"separation": v} for m, v in (("dlogp", 0.6), ("kl", 0.2), ("entropy", 0.1))},
        "replacement": {"ratio_to_90pct_gap": {"dlogp": 0.05, "kl": 0.1, "entropy": None, "random": None}}})
    put(run / "analysis/dlogp_extrapolation.json", {"results": [
        {"setting": "plain b", "greedy_acc": 0.4}, {"setting": "gate dlogp tau=-0.3 gamma=0", "greedy_acc": 0.38},
        {"setting": "gate dlogp tau=-0.3 gamma=0.1", "greedy_acc": 0.41}]})
    res = tmp_path / "results"
    # the runs' half is written before the analyses are read: without them it is there all the same
    (run / "analysis").rename(tmp_path / "analysis")
    with pytest.raises(FileNotFoundError):
        R.main([f"--out={out}", f"--results={res}", "--report_only"])
    runs = json.loads((res / "runs.json").read_text())
    assert runs["lr_sweep"]["chosen"] == lr_run and runs["learned"] == {"1": True} and runs["machine"]
    assert runs["learned_exact_match"] == {"1": False}  # the verifier's accuracy rose, exact match did not
    assert sorted(d.name for d in (res / "runs").iterdir()) == sorted(f"lr{x}_s1" for x in R.SWEEP_LRS)
    assert (res / "learning_curve.png").exists() and (res / "runs" / f"lr{lr_other}_s1" / "metrics.jsonl").exists()
    (tmp_path / "analysis").rename(run / "analysis")
    (res / "runs.json").write_text(json.dumps({**runs, "job_seconds": {"run/lr1e-5/s1": 623.0}}))  # the runs' own
    R.main([f"--out={out}", f"--results={res}", "--report_only"])
    assert json.loads((res / "runs.json").read_text())["job_seconds"] == {"run/lr1e-5/s1": 623.0}  # kept by a rewrite
    found = json.loads((res / "findings.json").read_text())
    assert found["lr_sweep"]["chosen"] == lr_run and found["learned"] == {"1": True}  # +0.2 on 200: 2 SE is 0.097
    assert found["learned_exact_match"] == {"1": False}  # and findings.json says so beside it
    assert {r["finding"] for r in found["findings"]} >= {"weight_r2_median", "rank1_recovery", "dlogp_separation"}
    assert json.loads((res / "summary.json").read_text())["n_eval"] == R.N_EVAL
    assert (res / "metrics.jsonl").exists() and (res / "learning_curve.png").exists()
    assert (res / "reports/rank1/report.json").exists() and not list(res.rglob("*.safetensors"))


def test_an_analysis_run_under_the_wrapper_logs_its_peak_rss(tmp_path):
    import subprocess
    ((name, argv),) = R.with_rss([("s1/probe", [sys.executable, "-c", "x = bytearray(200 * 2**20); print('ok')"])])
    log = tmp_path / "s1_probe.log"
    with open(log, "w") as f:
        assert subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT).returncode == 0
    assert 200 < R.peak_rss_mb(tmp_path, [name])[name] < 2000  # the child's 200 MB, not the wrapper's
