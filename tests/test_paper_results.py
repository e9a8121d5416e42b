"""bench/paper_results.py, the README and docs/results.md agree: the README's paper-regime command uses the
script's settings, docs/results.md's table is the one the script rendered from bench/results/findings.json and
the README's short table is rendered from the same records; the verdict rules and the lr rule of
bench/lr_sweep.py on hand-made examples."""
import json
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import lr_sweep, paper_results as P, step_size_map as M  # noqa: E402

README = (ROOT / "README.md").read_text()
RESULTS_MD = (ROOT / "docs" / "results.md").read_text()
FINDINGS = ROOT / "bench" / "results" / "findings.json"


def readme_command(marker):
    """The README's command line ending with the comment `marker` (continuation lines joined)."""
    text = README.replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.rstrip().endswith(marker))
    return shlex.split(line[:line.rindex("#")])


def test_readme_paper_regime_command_uses_the_scripts_settings():
    argv = readme_command("# the paper regime")
    assert argv[:3] == ["python", "train.py", "--stage=grpo"]
    flags = {a for a in argv[3:] if not a.startswith("--run=")}  # (its own run folder beside the quickstart's)
    assert set(P.PAPER) | (set(P.RUN) - {"--threads=1"}) == flags


def test_results_tables_are_the_ones_rendered_from_findings_json():
    data = json.loads(FINDINGS.read_text())
    records = data["findings"]
    main = [r for r in records if not r["finding"].startswith("dlogp_")]
    md = P.table(main, data["per_seed"]) + P.dlogp_table(records)
    assert (ROOT / "bench" / "results" / "paper_results.md").read_text() == md
    assert md.strip() in RESULTS_MD
    step_size_map = ROOT / "bench" / "results" / "step_size_map.json"  # the last column: where each holds
    where = M.where_it_holds(json.loads(step_size_map.read_text())) if step_size_map.exists() else None
    smollm2 = ROOT / "bench" / "results" / "smollm2" / "findings.json"  # and the pretrained model's column
    real = json.loads(smollm2.read_text())["findings"] if smollm2.exists() else None
    assert P.short_table(records, where, real).strip() in README
    assert data["regimes"] == {r: P.RUN + f for r, f in P.REGIMES.items()}  # the settings that ran are today's


def test_each_record_is_the_mean_of_its_seeds_and_its_verdict_follows_the_rule():
    for r in json.loads(FINDINGS.read_text())["findings"]:
        if r["finding"].startswith("dlogp_"):
            continue
        m, sd, n = P.mean_sd(r["per_seed"])
        assert (r["mean"], r["std"], r["seeds"]) == (m, sd, n)
        assert r["verdict"] == P.verdict(tuple(r["rule"]), m, sd, n)


@pytest.mark.parametrize("diffs, expected", [([0.05, 0.06, 0.04], "yes"), ([-0.05, -0.06, -0.04], "no"),
                                             ([0.05, -0.04, 0.01], "inside the noise"), ([0.05], "1 seed: no verdict")])
def test_a_gain_is_real_only_beyond_two_standard_errors(diffs, expected):
    assert P.verdict(("gain",), *P.mean_sd(diffs)) == expected


def test_levels_and_matches_use_their_thresholds():
    assert [P.verdict(("level", 0.7, 0.5), m, None, 1) for m in (0.71, 0.6, 0.4)] == ["yes", "partly", "no"]
    assert [P.verdict(("match", 0.03), m, None, 1) for m in (-0.02, 0.05, 0.07)] == ["yes", "partly", "no"]


def test_lr_rule_measures_the_rise_of_a_least_squares_line_over_the_last_fifty_steps():
    curve = [(s, 0.3 + 0.001 * s + (0.01 if s == 120 else 0.0)) for s in range(0, 151, 10)]
    r, mean = lr_sweep.rise(curve)
    # hand-computed: slope 0.001 plus the bump's share ((120 - 125) * 0.01 / 1750 per step), over 50 steps
    assert r == pytest.approx(50 * (0.001 - 0.05 / 1750))
    assert mean == pytest.approx(0.3 + 0.125 + 0.01 / 6)


def test_the_short_table_gains_the_pretrained_models_column_from_its_records():
    records = json.loads(FINDINGS.read_text())["findings"]
    real = [{"finding": "weight_r2_median", "regime": "SmolLM2-135M", "mean": 0.5, "std": 0.01, "seeds": 2,
             "rule": ["level", 0.8, 0.6], "verdict": "no"},
            {"finding": "dlogp_replacement", "regime": "SmolLM2-135M", "seeds": 1, "verdict": "yes",
             "per_seed": [{"dlogp": 0.1, "kl": 0.2, "entropy": None, "random": None}]}]
    lines = P.short_table(records, real=real).splitlines()
    assert lines[0].endswith("| SmolLM2-135M (2 seeds) |") and all(ln.count("|") == 7 for ln in lines)
    row = {ln.split(" | ")[1]: ln.rsplit(" | ", 1)[1] for ln in lines[2:]}
    assert row["weights: median R² vs step"] == "0.500 ± 0.010 (no) |"
    assert row["replacement ratio reaching 90% of the base -> RL gap, by gate"] == "dlogp 0.100, kl 0.200, entropy never (yes) |"
    assert row["low-prob. reweighting (c 0.2) minus plain GRPO, same step (fast 40, paper 100)"] == "not run |"
