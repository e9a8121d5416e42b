"""bench/step_size_map.py: its axis and jobs (the paper point is the README's paper-regime command, the points
equal to paper_results' regimes share its jobs), its records follow from their seeds and findings.json's
rules, read from hand-made reports, and its figure is rendered from the json alone."""
import json
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import paper_results as P, step_size_map as M, step_size_map_render as R  # noqa: E402

POINT = {p[0]: p for p in M.POINTS}


def test_the_paper_point_is_the_readme_paper_regime_command():
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.rstrip().endswith("# the paper regime"))
    argv = shlex.split(line[:line.rindex("#")])
    assert M.flags(*POINT["paper"][1:]) == P.PAPER and M.flags(*POINT["fast"][1:]) == P.FAST
    flags = {a for a in argv[3:] if not a.startswith("--run=")}  # (its own run folder beside the quickstart's)
    assert set(M.flags(*POINT["paper"][1:])) | (set(P.RUN) - {"--threads=1"}) == flags


def test_the_axis_spans_slow_to_fast_and_reaches_one_product_two_ways():
    sizes = {M.update_size(lr, spr) for _, lr, spr, ds in M.POINTS if not ds}
    assert len(sizes) >= 5 and min(sizes) <= 3e-6 and max(sizes) >= 1e-4
    assert M.update_size(*POINT["lr2.5e-6x4"][1:3]) == pytest.approx(M.update_size(*POINT["lr1e-5"][1:3]))
    # dynamic sampling on one point only, a point that otherwise exists without it
    (ds,) = [p for p in M.POINTS if p[3]]
    assert (ds[1], ds[2], False) in {(lr, spr, d) for _, lr, spr, d in M.POINTS}


def test_points_equal_to_paper_results_regimes_share_its_job_names_and_commands():
    ours = dict(M.train_jobs("o", "o/base", [1, 2]) + M.analysis_jobs("o", [1, 2]))
    theirs = dict(P.train_jobs("o", "o/base", [1, 2]) + P.analysis_jobs("o", [1, 2], 1))
    shared = set(ours) & set(theirs)
    assert {"fast/s1", "paper/s2", "rlextra_keep_paper/s1", "reweight_lowprob_fast/s2", "paper/s1/rank1"} <= shared
    assert all(ours[n] == theirs[n] for n in shared)


def test_every_point_and_seed_gets_its_runs_and_every_analysis_once():
    jobs = M.train_jobs("o", "o/base", [1, 2, 3]) + M.analysis_jobs("o", [1, 2, 3])
    names = [n for n, _ in jobs]
    assert len(names) == len(set(names)) == len(M.POINTS) * 3 * (4 + 6)
    runs = {n for n, argv in jobs if argv[1] == "train.py"}
    assert names[:len(runs)] == [n for n in names if n in runs]  # training first: the analyses read its runs
    for argv in (a for _, a in jobs if a[1] == "train.py"):
        assert "--threads=1" in argv and "--steps=150" in argv  # reweighting overrides it later on the line


def test_a_rank1_report_without_alpharls_norm_ratio_is_run_again(tmp_path):
    argv = ["python", "analyze.py", "rank1", f"--out={tmp_path}"]
    assert not M.done(argv)
    (tmp_path / "report.json").write_text(json.dumps({"recovery": 0.8}))
    assert not M.done(argv)
    (tmp_path / "report.json").write_text(json.dumps({"recovery": 0.8, "top1_norm_ratio": 0.4}))
    assert M.done(argv)


def write_point(out, name, s, curve, rx_reset, rx_keep, rw_final):
    """Hand-made reports of one point and seed, in the files and keys the analyses write."""
    def put(path, obj, jsonl=False):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(json.dumps(o) for o in obj) if jsonl else json.dumps(obj))
    d = out / name / f"s{s}"
    put(d / "grpo/metrics.jsonl", [{"step": st, "eval": {"greedy_acc": a}} for st, a in curve], jsonl=True)
    put(d / "summary.json", {"final_greedy_acc": curve[-1][1]})  # (a finished run has one)
    for opt, rx in (("reset", rx_reset), ("keep", rx_keep)):  # (step, real steps, accuracy)
        put(out / f"rlextra_{opt}_{name}/s{s}/grpo/metrics.jsonl",
            [{"step": st, "real_steps": r, "eval": {"greedy_acc": a}} for st, r, a in rx], jsonl=True)
        put(out / f"rlextra_{opt}_{name}/s{s}/summary.json", {"final_greedy_acc": rx[-1][2]})
    put(out / f"reweight_lowprob_{name}/s{s}/summary.json", {"final_greedy_acc": rw_final})
    a = d / "analysis"
    put(a / "linearity/report.json", {"weights": {"median": 0.8, "share_above_0.7": 0.6}, "logprobs": {"median": 0.9}})
    put(a / "eq2_inside/report.json", {"alphas": [{"alpha": 2, "acc": 0.52}], "acc_last": 0.50})
    put(a / "eq2_beyond/report.json", {"alphas": [{"alpha": 1.0, "acc": 0.5}, {"alpha": 1.5, "acc": 0.53},
                                                  {"alpha": 2.0, "acc": 0.49}]})
    put(a / "eq1.json", {"results": [{"setting": "plain b", "greedy_acc": 0.5}, {"setting": "alpha=1.5", "greedy_acc": 0.51}]})
    put(a / "rank1/report.json", {"recovery": 0.7, "top1_share": {"median": 0.3}, "top1_norm_ratio": 0.45})
    put(a / "alpharl/report.json", {"windows": [{"window": 5, "retained": 0.9}, {"window": 8, "retained": 0.97}]})


def test_one_seeds_findings_are_read_from_its_reports(tmp_path):
    curve = [(s, 0.3 + 0.02 * min(s, 100) / 10) for s in range(0, 151, 10)]  # 0.3 -> 0.5, flat after step 100
    write_point(tmp_path, "lr1e-5", 1, curve, rx_reset=[(0, 0, 0.3), (20, 10, 0.45), (40, 20, 0.49), (150, 75, 0.52)],
                rx_keep=[(0, 0, 0.3), (20, 10, 0.4), (150, 75, 0.47)], rw_final=0.55)
    x = M.point_seed(tmp_path, M.POINTS[1], 1)
    # hand-computed: 90% of the gain is 0.48, reached by the plain run at step 90 and by RL-Extra reset at 20 real steps
    assert x["accuracy_gain"] == pytest.approx(0.2) and x["grpo_steps90"] == 90
    assert x["rl_extra_reset_steps90"] == 20 and x["rl_extra_reset_speedup"] == pytest.approx(4.5)
    assert x["rl_extra_keep_steps90"] is None and x["rl_extra_keep_speedup"] is None
    assert x["rl_extra_reset_gain"] == pytest.approx(0.02) and x["rl_extra_keep_gain"] == pytest.approx(-0.03)
    assert x["reweight_lowprob_gain"] == pytest.approx(0.05)  # against the plain run at step 100
    assert (x["eq2_inside_gain"], x["eq2_beyond_gain_1.5"], x["eq2_beyond_gain_2"], x["eq1_logits_gain"]) == \
        pytest.approx((0.02, 0.03, -0.01, 0.01))
    assert (x["weight_r2_share07"], x["top1_energy_share"], x["top1_norm_ratio"], x["alpharl_ratio"]) == (0.6, 0.3, 0.45, 0.97)


@pytest.mark.parametrize("xs, verdict", [([0.05, 0.06, 0.04], "yes"), ([0.05, -0.04, 0.01], "inside the noise")])
def test_a_points_record_is_the_mean_of_its_seeds_with_findings_json_verdicts(xs, verdict):
    seeds = [{"eq2_beyond_gain_2": v, "rank1_recovery": 0.95, "final_acc": 0.5, "rise_100_150": 0.0} for v in xs]
    rec = M.point_record(POINT["lr3e-5"], [1, 2, 3], seeds, [])
    f = rec["findings"]["eq2_beyond_gain_2"]
    assert (f["mean"], f["std"]) == P.mean_sd(xs)[:2] and f["per_seed"] == xs and f["verdict"] == verdict
    assert rec["findings"]["rank1_recovery"]["verdict"] == "yes"  # level 0.9 in findings.json
    assert rec["findings"]["alpharl_ratio"]["verdict"] == "not reached"  # not measured
    assert rec["update_size"] == pytest.approx(3e-5) and rec["still_rising"] is False


def test_a_point_is_still_rising_only_beyond_two_standard_errors_over_steps_100_to_150():
    def rec(r):
        return M.point_record(POINT["lr3e-6"], [1], [{"final_acc": 0.5, "rise_100_150": r}], [])["still_rising"]
    assert rec(0.04) and not rec(0.02)  # 2 SE of one evaluation on 1,000 problems at 0.5: 0.032


def test_the_figure_is_rendered_from_the_json_alone(tmp_path):
    rng = iter(range(1000))
    points = [{"update_size": M.update_size(lr, spr), "steps_per_rollout": spr, "dynamic_sampling": ds,
               "findings": {f[0]: {"mean": next(rng) / 1000, "std": 0.01} for f in M.FINDINGS}}
              for _, lr, spr, ds in M.POINTS]
    meta = {f: {"paper": paper, "paper_figure": fig, "paper_line": line} for f, _, paper, _, fig, line in M.FINDINGS}
    R.plot({"points": points, "findings": meta}, tmp_path / "map.png")
    assert (tmp_path / "map.png").stat().st_size > 10_000


def test_the_committed_map_follows_from_its_seeds_and_rules():
    path = ROOT / "bench" / "results" / "step_size_map.json"
    if not path.exists():
        pytest.skip("bench/results/step_size_map.json is written by a full run of bench/step_size_map.py")
    for point in json.loads(path.read_text())["points"]:
        for name, f in point["findings"].items():
            if "verdict" in f:
                m, sd, n = P.mean_sd(f["per_seed"])
                assert (f["mean"], f["std"]) == (m, sd) and f["verdict"] == P.verdict(M.rule(name), m, sd, n)


def test_a_point_still_rising_runs_on_once_to_the_long_step_count():
    ((name, argv),) = M.long_jobs("o", "o/base", [POINT["lr3e-6"]])
    steps = [a for a in argv if a.startswith("--steps=")]
    assert name == "lr3e-6_long/s1" and steps[-1] == f"--steps={M.LONG_STEPS}" and M.LONG_STEPS > 150
    assert "--lr=3e-6" in argv and "--seed=1" in argv and M.done(argv) is False


def test_the_report_is_written_from_finished_runs_alone(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(M, "plot", lambda data, path: drawn.append((data, path)))  # the figure: tested above
    curve = [(s, 0.3 + 0.001 * s) for s in range(0, 151, 10)]  # still rising at step 150
    for name, *_ in M.POINTS:
        write_point(tmp_path, name, 1, curve, rx_reset=[(0, 0, 0.3), (150, 75, 0.46)],
                    rx_keep=[(0, 0, 0.3), (150, 75, 0.44)], rw_final=0.42)
    M.main(["--quick", f"--out={tmp_path}", f"--results={tmp_path / 'r'}", "--report_only"])
    data = json.loads((tmp_path / "r" / "step_size_map_quick.json").read_text())
    assert [p["name"] for p in data["points"]] == [p[0] for p in M.POINTS]
    assert drawn[0][0] == data and drawn[0][1] == tmp_path / "r" / "step_size_map_quick.png"
    paper = data["points"][-1]
    assert paper["dynamic_sampling"] and paper["seeds"] == [1] and paper["still_rising"]  # 0.05 over 50 steps > 2 SE
    assert paper["findings"]["accuracy_gain"]["per_seed"] == [pytest.approx(0.15)]
    assert any(c.startswith("python train.py") and "--dynamic_sampling=true" in c for c in paper["commands"])
    # each (point, seed) left a part, and the map is rebuilt from the parts alone (no runs needed)
    assert (tmp_path / "r" / "step_size_map_parts" / "paper_s1.json").exists()
    M.main(["--quick", f"--out={tmp_path / 'none'}", f"--results={tmp_path / 'r'}", "--report_only"])
    again = json.loads((tmp_path / "r" / "step_size_map_quick.json").read_text())
    assert [p["findings"] for p in again["points"]] == [p["findings"] for p in data["points"]]


def test_the_map_asks_for_the_parts_still_to_run(tmp_path):
    with pytest.raises(SystemExit, match="7 part"):
        M.main(["--quick", f"--out={tmp_path}", f"--results={tmp_path / 'r'}", "--report_only"])


def test_a_units_analyses_wait_for_its_run_and_nothing_else():
    jobs, needs = M.unit_jobs("o", "o/base", POINT["lr1e-5"], 2)
    assert [n for n, _ in jobs][:4] == ["lr1e-5/s2", "reweight_lowprob_lr1e-5/s2", "rlextra_reset_lr1e-5/s2",
                                        "rlextra_keep_lr1e-5/s2"]
    assert len(needs) == 6 and all(v == {"lr1e-5/s2"} for v in needs.values())


def test_the_job_pool_starts_a_job_only_after_what_it_needs(tmp_path):
    from bench.jobs import run_all
    flag, py = tmp_path / "trained", sys.executable
    jobs = [("analysis", [py, "-c", f"import pathlib,sys; sys.exit(0 if pathlib.Path({str(flag)!r}).exists() else 3)"]),
            ("train", [py, "-c", f"import time,pathlib; time.sleep(0.5); pathlib.Path({str(flag)!r}).touch()"])]
    ended = []
    seconds = run_all(jobs, 2, tmp_path / "logs", needs={"analysis": {"train", "earlier_job"}},
                      on_done=lambda name, s: ended.append(name))
    assert ended == ["train", "analysis"] and set(seconds) == {"train", "analysis"}


def test_every_part_starts_from_the_one_committed_base(tmp_path, monkeypatch):
    def make_base(d, content):
        d.mkdir(parents=True, exist_ok=True)
        (d / "model.safetensors").write_bytes(content)
        (d / "config.json").write_text("{}")
        return d
    monkeypatch.setattr(P, "ensure_base", lambda out: make_base(Path(out) / "base", b"trained here"))
    results = tmp_path / "r"
    M.ensure_map_base(tmp_path / "a", results)  # the first run trains it and keeps a copy
    assert (results / "step_size_map_base" / "model.safetensors").read_bytes() == b"trained here"
    base = M.ensure_map_base(tmp_path / "b", results)  # another machine: the kept base, not a new one
    assert (base / "model.safetensors").read_bytes() == b"trained here"
    make_base(tmp_path / "c" / "base", b"other bits")
    with pytest.raises(SystemExit, match="not the map's base"):
        M.ensure_map_base(tmp_path / "c", results)


def test_parts_from_two_bases_do_not_make_one_map(tmp_path, monkeypatch):
    monkeypatch.setattr(M, "plot", lambda data, path: None)
    curve = [(s, 0.3 + 0.001 * s) for s in range(0, 151, 10)]
    for name, *_ in M.POINTS:
        write_point(tmp_path, name, 1, curve, rx_reset=[(0, 0, 0.3), (150, 75, 0.46)],
                    rx_keep=[(0, 0, 0.3), (150, 75, 0.44)], rw_final=0.42)
    M.main(["--quick", f"--out={tmp_path}", f"--results={tmp_path / 'r'}", "--report_only"])
    part = M.part_path(tmp_path / "r", "fast", 1)
    part.write_text(json.dumps({**json.loads(part.read_text()), "base_sha256": "0" * 64}))
    with pytest.raises(SystemExit, match="2 different bases"):
        M.main(["--quick", f"--out={tmp_path}", f"--results={tmp_path / 'r'}", "--report_only"])


def test_the_table_is_rendered_from_the_json_alone_sorted_by_update_size():
    def point(lr, spr, ds, mean):
        f = {"mean": mean, "std": 0.01, "verdict": "yes"}
        return {"lr": float(lr), "steps_per_rollout": spr, "dynamic_sampling": ds, "update_size": float(lr) * spr,
                "seeds": [1, 2, 3], "still_rising": False, "findings": {"weight_r2_median": f}}
    data = {"points": [point("1e-4", 1, False, 0.5), point("3e-6", 1, False, 0.98), point("1e-5", 4, True, 0.8)],
            "findings": {"weight_r2_median": {"paper": 2}}}
    lines = R.table_md(data).splitlines()
    assert lines[0] == "| finding (paper) | 3e-06 x 1 | 1e-05 x 4 + DS | 0.0001 x 1 |"
    assert lines[4] == "| weight_r2_median (2) | 0.980 ± 0.010 (yes) | 0.800 ± 0.010 (yes) | 0.500 ± 0.010 (yes) |"


def test_where_each_finding_holds_lists_the_points_by_their_verdicts():
    def point(lr, spr, ds, verdict):
        return {"lr": float(lr), "steps_per_rollout": spr, "dynamic_sampling": ds, "update_size": float(lr) * spr,
                "findings": {"weight_r2_median": {"verdict": verdict}, "top1_energy_share": {"verdict": "-"}}}
    data = {"points": [point("1e-4", 1, False, "no"), point("2.5e-6", 4, False, "yes"), point("3e-6", 1, False, "yes"),
                       point("1e-5", 4, True, "inside the noise")],
            "findings": {"weight_r2_median": {"paper": 2, "paper_figure": "~0.9"},
                         "top1_energy_share": {"paper": 3, "paper_figure": "(dominant)"}}}
    lines = R.holds_md(data).splitlines()
    assert lines[2:] == ["| weight_r2_median (2) | ~0.9 | 3e-6, 2.5e-6×4 | none | 1e-5×4+DS, 1e-4 |"]  # no rule: no row


def test_the_readme_column_names_the_points_where_a_finding_holds_then_where_partly():
    def point(lr, spr, w, r):
        return {"lr": lr, "steps_per_rollout": spr, "dynamic_sampling": False, "update_size": lr * spr,
                "findings": {"weight_r2_median": {"verdict": w}, "rank1_recovery": {"verdict": r}}}
    data = {"points": [point(1e-4, 1, "no", "partly"), point(3e-6, 1, "yes", "partly"), point(1e-5, 4, "partly", "partly")]}
    found = M.where_it_holds(data)  # keyed by findings.json's names, as P.short_table reads them
    assert found == {"weight_r2_median": "3e-6; partly 1e-5×4", "rank1_recovery": "nowhere; partly every point"}


def test_a_map_of_fewer_seeds_is_written_under_a_name_that_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(M, "plot", lambda data, path: None)
    curve = [(s, 0.3 + 0.001 * s) for s in range(0, 151, 10)]
    for name, *_ in M.POINTS:
        for s in (1, 2):
            write_point(tmp_path, name, s, curve, rx_reset=[(0, 0, 0.3), (150, 75, 0.46)],
                        rx_keep=[(0, 0, 0.3), (150, 75, 0.44)], rw_final=0.42)
    M.main(["--seeds=1,2", f"--out={tmp_path}", f"--results={tmp_path / 'r'}", "--report_only"])
    assert (tmp_path / "r" / "step_size_map_seeds12.json").exists()
    assert not (tmp_path / "r" / "step_size_map.json").exists()
