"""
The parts of bench/gpu_check.py, each a function f(mode, rec): mode "full" | "quick" | "dry" (the CPU, tiny
shapes), rec a gpu_check.Record taking its figures, checks, notes or the reason it skips. Each reuses the bench
script it reports on (bench/rollout.py, bench/train_step.py, bench/kernel.py) and the package's own functions.
"""
import contextlib
import importlib.util
import io
import json
import math
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PARTS = ("engine", "cuda_tests", "kernel", "train_step", "rollout", "quickstart")
# the tests the CPU suite skips without CUDA (and the packages each needs); tests/test_gpu_check.py keeps this
# list equal to the skipif(not torch.cuda.is_available()) tests of tests/. quick: the first two only
CUDA_TESTS = [
    ("tests/test_kernels.py", ("pytest", "triton")),  # every test, on compiled kernels (the CPU: the interpreter)
    ("tests/test_hf.py::test_loads_on_cuda_in_bf16_by_default_and_matches_transformers_bf16", ("pytest", "transformers")),
    ("tests/test_scaleup.py::test_sft_then_grpo_from_a_hf_checkpoint[cuda]", ("pytest", "transformers", "tokenizers")),
    ("tests/test_train.py::test_rl_extra_resume_ends_with_the_same_weights[cuda]", ("pytest",)),
]
CPU_QUICKSTART = {"base_greedy_acc": 0.250, "final_greedy_acc": 0.462}  # README: 2-core AMD EPYC, 2026-11-29


def have(package):
    return importlib.util.find_spec(package) is not None


def device_for(mode, rec):
    """'cuda', or 'cpu' in the dry run; None (and the part skipped) without CUDA otherwise."""
    import torch
    if mode == "dry":
        return "cpu"
    if not torch.cuda.is_available():
        rec.skip("no CUDA device here")
        return None
    return "cuda"


def load_bench(name):
    """A bench/ script as a module (its main() does not run)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -----------------------------------------------------------------------------
# the parts


def part_engine(mode, rec):
    """static=True against the eager loop, as tests/test_engine.py does on the CPU: a random model with sharp
    logits (no near-ties), stop ids that end rows at different steps, greedy and seeded."""
    import torch
    from nanorlvr.engine import generate
    from nanorlvr.model import GPT, GPTConfig
    dev = device_for(mode, rec)
    if dev is None:
        return
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11], [12], [13, 14, 15, 16]]
    groups = [p for p in prompts for _ in range(3)]  # G = 3 samples per prompt: the shared prefill too
    new = 16 if mode == "dry" else 40
    variants = {"static": dict(static=True), "static, called again": dict(static=True),
                "static, batch_size=5": dict(static=True, batch_size=5), "eager, batch_size=5 (refill)": dict(batch_size=5)}
    for name in {"full": [], "quick": ["static, batch_size=5"], "dry": ["static, called again", "static, batch_size=5"]}[mode]:
        variants.pop(name)
    for arch in ("llama", "gpt2") if mode == "full" else ("llama",):
        torch.manual_seed(0)
        model = GPT(GPTConfig(arch=arch, vocab_size=50, n_layer=2, n_head=2, n_embd=32, max_seq_len=128)).to(dev).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(8)
        plain = generate(model, prompts, new, temperature=0).ids
        stops = sorted({int(plain[i, 3 + 5 * i]) for i in range(3)})
        for how, kw in (("greedy", dict(temperature=0)), ("seeded", dict(temperature=1.0, seed=5))):
            ref = generate(model, groups, new, stop_ids=stops, **kw)
            for name, extra in variants.items():
                g = generate(model, groups, new, stop_ids=stops, **kw, **extra)
                same = all(torch.equal(getattr(ref, f), getattr(g, f)) for f in ("ids", "lengths", "truncated"))
                lp = (ref.logprobs - g.logprobs).abs().max().item()
                rec.check(f"{arch} {how}: {name} gives the eager tokens", same and lp < 1e-4,
                          f"max log-prob difference {lp:.1e}; row lengths {sorted(set(ref.lengths.tolist()))}")
        if dev == "cuda":  # bf16 (the rollouts' dtype): kernels differ by shape, so agreement is a figure, not a check
            m16 = model.to(torch.bfloat16)
            a = generate(m16, groups, new, stop_ids=stops, temperature=1.0, seed=5)
            b = generate(m16, groups, new, stop_ids=stops, temperature=1.0, seed=5, static=True)
            rec.figure(f"{arch} bf16 seeded: rows identical static vs eager", f"{sum(x == y for x, y in zip(a.tokens, b.tokens))}/{len(groups)}")


def part_cuda_tests(mode, rec):
    """The CUDA-only tests through pytest, one junit report; in the dry run only that each still exists."""
    chosen = CUDA_TESTS[:2] if mode == "quick" else CUDA_TESTS
    if mode == "dry":
        for node, _ in chosen:
            rec.check(f"{node} exists", names_a_test(node))
        return rec.skip("dry run: the CUDA-only tests are only looked up")
    import torch
    if not torch.cuda.is_available():
        return rec.skip("no CUDA device here")
    run = []
    for node, needs in chosen:
        missing = [p for p in needs if not have(p)]
        if missing:
            rec.note(f"{node}: skipped, needs {', '.join(missing)}")
        else:
            run.append(node)
    if not run:
        return rec.skip("pytest (or what each test needs) is not installed")
    with tempfile.TemporaryDirectory() as d:
        xml = Path(d) / "junit.xml"
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", f"--junitxml={xml}", *run], cwd=ROOT,
                              capture_output=True, text=True)
        print(proc.stdout[-4000:], proc.stderr[-2000:])
        outcomes = junit_outcomes(xml.read_text()) if xml.exists() else {}
    if not outcomes:
        return rec.check("pytest ran", False, f"rc {proc.returncode}: {proc.stdout[-300:]}")
    for case, (outcome, msg) in outcomes.items():
        if outcome == "skipped":
            rec.note(f"{case}: skipped ({msg})")
        else:
            rec.check(case, outcome == "passed", msg)
    counts = [o for o, _ in outcomes.values()]
    for o in ("passed", "failed", "skipped"):
        rec.figure(f"tests {o}", counts.count(o))


def names_a_test(node):
    """tests/x.py[::name[param]] names a file that defines test function `name`."""
    path, _, name = node.partition("::")
    src = ROOT / path
    return src.is_file() and (not name or f"def {name.split('[')[0]}(" in src.read_text())


def junit_outcomes(xml_text):
    """{test id: (passed | failed | skipped, message)} from a pytest junit xml report."""
    import xml.etree.ElementTree as ET
    out = {}
    for case in ET.fromstring(xml_text).iter("testcase"):
        outcome, msg = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "skipped" if child.tag == "skipped" else "failed"
                msg = (child.get("message") or "")[:200]
        out[f"{case.get('classname')}::{case.get('name')}"] = (outcome, msg)
    return out


def part_kernel(mode, rec):
    """bench/kernel.py --short=1 run here, its markdown rows turned into figures (GPU: the fused kernels)."""
    if mode != "dry":
        if device_for(mode, rec) is None:
            return
        if not have("triton"):
            return rec.skip("Triton is not installed")
    buf, argv = io.StringIO(), sys.argv
    sys.argv = [str(ROOT / "bench" / "kernel.py"), "--short=1", "--compile=0"]
    try:
        with contextlib.redirect_stdout(buf):
            runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        sys.argv = argv
        print(buf.getvalue())
    rows = markdown_rows(buf.getvalue())
    rec.check("kernel table has rows", len(rows) > 0)
    for r in rows:
        what = f"{r['out']} {r['dtype']} B={r['B']} V={r['V']}"
        for key, value in r.items():
            if key not in ("out", "dtype", "B", "V"):
                rec.figure(f"{what}: {key}", value)
        if r.get("rel err"):
            rec.check(f"{what}: fused log-probs match torch", float(r["rel err"]) < 1e-3, f"rel err {r['rel err']}")


def markdown_rows(text):
    """The rows of the last markdown table in text, as {header: cell} dicts."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    heads = [i for i, ln in enumerate(lines) if i + 1 < len(lines) and set(lines[i + 1]) <= set("|-")]
    if not heads:
        return []
    cells = lambda ln: [c.strip() for c in ln.strip("|").split("|")]  # noqa: E731
    names = cells(lines[heads[-1]])
    return [dict(zip(names, cells(ln))) for ln in lines[heads[-1] + 2:]]


def part_train_step(mode, rec):
    """bench/train_step.measure at the Qwen2.5-0.5B shape (dry: its tiny shape, fp32)."""
    dev = device_for(mode, rec)
    if dev is None:
        return
    ts = load_bench("train_step")
    argv = {"full": [], "quick": ["--rows=32", "--new_tokens=256", "--grad_ckpt=on"],
            "dry": ["--precision=fp32", "--grad_ckpt=on", "--group_size=2"]}[mode]
    args = ts.parse(argv)
    if mode == "dry":
        args.model, args.rows, args.prompt_len, args.new_tokens, args.micro_batch = "tiny", 4, 8, 8, 2
    out = ts.measure(args)
    rec.figure("shape", f"{out['model']}, {out['rows']} rows x ({out['prompt_len']} + {out['new_tokens']}), "
                        f"micro-batch {out['micro_batch']}, {out['precision']}")
    for key in ("rollout_s", "rollout_static_s", "rollout_peak_gib", "rollout_estimate_gib", "logp_diff_mean", "logp_diff_max"):
        rec.figure(key, out.get(key))
    for key in (k for k in out if k.startswith("update_")):
        u = out[key]
        if u.get("oom"):
            rec.check(f"{key}: fits in memory", False, "out of memory")
            continue
        for k, v in u.items():
            rec.figure(f"{key}: {k}", v)
        rec.check(f"{key}: loss is finite", math.isfinite(u["loss"]))
        if dev == "cuda":  # the estimate says +-20%
            ratio = u["peak_gib"] / u["estimate_gib"]
            rec.check(f"{key}: peak memory within 30% of the estimate", abs(ratio - 1) <= 0.3, f"peak / estimate {ratio:.2f}")


def part_rollout(mode, rec):
    """bench/rollout.run on nano-vllm's workload and the GRPO-shaped one, beside transformers generate."""
    import torch
    dev = device_for(mode, rec)
    if dev is None:
        return
    ro = load_bench("rollout")
    tiny = ["--layers=1", "--hidden=64", "--heads=2", "--kv_heads=1", "--head_dim=32", "--inter=128", "--vocab=512"]
    argv = {"full": [], "quick": ["--seqs=64", "--max_len=512", "--prompts=8", "--max_new=512"],
            "dry": tiny + ["--seqs=4", "--min_len=4", "--max_len=12", "--prompts=1", "--group=2", "--max_new=16"]}[mode]
    args = ro.parse(argv)
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    bandwidth = ro.copy_bandwidth(dev, mib=256 if dev == "cuda" else 16)
    rec.figure("copy bandwidth", round(bandwidth / 1e9, 1), "GB/s")
    if mode != "dry" and have("transformers"):
        hf, ours = ro.models(args, dev, dtype)
    else:
        hf, ours = None, ro.our_model(args, dev, dtype)
        rec.note("transformers generate not timed: " + ("dry run" if mode == "dry" else "transformers is not installed"))
    rec.figure("model", f"Qwen3 shape, {args.layers} layers x {args.hidden}, {ours.num_params() / 1e6:.0f}M parameters, {dtype}")
    for label, workload, temperature, shared_too in (("nanovllm", ro.nanovllm_workload, 0.6, False),
                                                     ("grpo", ro.grpo_workload, 1.0, mode == "full")):
        prompts, budgets = workload(args)
        rec.figure(f"{label}: workload", f"{len(prompts)} sequences, {sum(budgets)} output tokens")
        for what, pre, t, tps, share in ro.run(label, ours, hf, prompts, budgets, temperature, dev, bandwidth, shared_too, 1):
            rec.figure(f"{what}: tokens/s", round(tps, 1))
            rec.figure(f"{what}: share of the decode roofline", round(share, 4))
            if pre is not None:
                rec.figure(f"{what}: prefill s", round(pre, 3))
            if what.startswith(f"{label}, our engine"):  # the roofline is a floor: a share over 1 means it is wrong
                rec.check(f"{what}: no faster than the roofline", share <= 1.0, f"share {share:.1%}")


def part_quickstart(mode, rec):
    """`python train.py` into a temporary folder (quick: fewer steps; dry: a tiny model for a step)."""
    if device_for(mode, rec) is None:
        return
    flags = {"full": [], "quick": ["--steps=30", "--n_eval=200"],
             "dry": ["--n_layer=1", "--n_embd=32", "--n_head=2", "--n_ops=1", "--max_num=9", "--n_train=64", "--n_test=8",
                     "--n_eval=8", "--eval_k=2", "--sft_steps=2", "--sft_batch=8", "--steps=1", "--prompts_per_step=2",
                     "--group_size=2", "--max_new_tokens=8", "--threads=1", "--verify_workers=1", "--device=cpu"]}[mode]
    with tempfile.TemporaryDirectory() as d:
        argv = [f"--out_dir={d}", f"--base_dir={d}/base", f"--data_dir={d}/data", *flags]
        t, rc, note = time.time(), 0, ""
        if mode == "dry":  # the same flags through train.main, in this process (no second torch start-up)
            import train
            train.main(argv)
        else:
            proc = subprocess.run([sys.executable, "train.py", *argv], cwd=ROOT, capture_output=True, text=True)
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            rc, note = proc.returncode, f"rc {proc.returncode} {proc.stderr.strip()[-300:]}"
        rec.figure("wall time", round(time.time() - t, 1), "s")
        summary = Path(d) / "summary.json"
        rec.check("train.py ran and wrote summary.json", rc == 0 and summary.exists(), note)
        if not summary.exists():
            return
        s = json.loads(summary.read_text())
    for key in (k for k in s if k.startswith(("base_", "final_"))):
        rec.figure(key, s[key])
    for key, value in CPU_QUICKSTART.items():
        rec.figure(f"{key}, CPU (README)", value)
    if mode == "full":  # the bar of the slow test of tests/test_train.py
        base, final = s["base_greedy_acc"], s["final_greedy_acc"]
        rec.check("base greedy accuracy in [0.15, 0.6]", 0.15 <= base <= 0.6, f"{base:.3f}")
        rec.check("GRPO raises greedy accuracy by >= 0.10", final - base >= 0.10, f"{base:.3f} -> {final:.3f}")
