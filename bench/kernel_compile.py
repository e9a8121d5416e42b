"""Compile every Triton kernel of nanorlvr/papers/kernels.py for a GPU, on a machine without one, and count
the instructions of their inner loops.

The CPU tests run the kernels in Triton's interpreter, which accepts Python the compiler refuses (a
kernel once broke on GPU only: an inline-asm string held in a local variable). Triton's wheel carries
the CUDA compiler (ptxas), so this script compiles to a cubin what each launcher would launch on CUDA,
without a driver: it swaps each kernel for a recorder, calls the launchers on CPU tensors, and compiles
every recorded launch for the target. The kernel tests run it in a subprocess (the interpreter must
be off before Triton is imported):

  python bench/kernel_compile.py [--sm=90]          compile all, or fail with the compiler's error
  python bench/kernel_compile.py --sass             also disassemble (cuobjdump, also in the wheel) and
                                                    print each kernel's inner-loop instructions per element
  python bench/kernel_compile.py --sass --philox_rounds=7    the same with a cheaper sampler RNG

Instructions per element bound a streaming kernel without a GPU at hand: an H100 issues about
132 SMs x 4 x 32 x 1.75 GHz = 30e12 thread-instructions/s, so keeping pace with 3 TB/s of 2-byte
logits (two rows read, 4 bytes per element) allows at most ~40 per element, and fewer in practice.
"""

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

os.environ["TRITON_INTERPRET"] = "0"  # before Triton is imported: real JIT functions, not interpreted ones
import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import BaseBackend, GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from nanorlvr.papers import kernels as K  # noqa: E402

KERNELS = ("_lse_kernel", "_write_kernel", "_sample_kernel", "_finish_kernel")


def _specialize(v, specialize, align):
    """(type, attribute) of one argument, by Triton's own function where this Triton has it."""
    try:
        from triton._C.libtriton import native_specialize_impl  # internal, as in triton/runtime/jit.py
    except ImportError:  # a plain signature: still a compile check, without 16-byte alignment hints
        types = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.int64: "*i64"}
        if isinstance(v, torch.Tensor):
            return types[v.dtype], None
        return ("i32" if -2**31 <= v < 2**31 else "i64", None) if isinstance(v, int) else ("fp32", None)
    return native_specialize_impl(BaseBackend, v, False, specialize, align)


def signature(fn, args, kwargs):
    """Signature (name -> type), constexprs and attributes (16-divisible pointers and ints) of one launch:
    what Triton's JIT infers from the same arguments."""
    values = list(args) + [kwargs[p.name] for p in fn.params[len(args):]]
    sig, constexprs, attrs = {}, {}, {}
    for i, (p, v) in enumerate(zip(fn.params, values)):
        if p.is_constexpr:
            sig[p.name], constexprs[p.name] = "constexpr", v
            continue
        ty, attr = _specialize(v, not p.do_not_specialize, not p.do_not_specialize_on_alignment)
        sig[p.name] = ty
        if ty == "constexpr":  # an int equal to 1
            constexprs[p.name] = v
        elif attr:
            attrs[(i,)] = BaseBackend.parse_attr(attr)
    return sig, constexprs, attrs


def compile_all(sm=90, vocab=151936):
    """Compile each distinct launch of every mode, dtype and output: {(kernel, dtype, constexprs, warps): compiled}."""
    target, seen = GPUTarget("cuda", sm, 32), {}

    class Recorder:
        def __init__(self, fn):
            self.fn = fn

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                if "FAST_LOG2" in kwargs:  # what the launcher picks on CUDA (here, on CPU tensors, it would not)
                    kwargs["FAST_LOG2"] = True
                sig, constexprs, attrs = signature(self.fn, args, kwargs)
                key = (self.fn.__name__, sig["a_ptr"][1:], repr(constexprs), kwargs.get("num_warps", 4), repr(attrs))
                if key not in seen:
                    seen[key] = triton.compile(ASTSource(self.fn, sig, constexprs, attrs), target=target,
                                               options={"num_warps": kwargs.get("num_warps", 4)})
            return launch

    saved = {name: getattr(K, name) for name in KERNELS}
    try:
        for name in KERNELS:
            setattr(K, name, Recorder(saved[name]))
        for dtype in (torch.float32, torch.bfloat16):
            a = b = torch.zeros(5, vocab, dtype=dtype)  # rows of 16-byte multiples are vectorised (Qwen's)
            for mode in K.MODES:
                K.mix_logprobs_triton(a, b, mode, 0.5, 1.0, chunks=2)
                K.mix_sample_triton(a, b, mode, 0.5, 1.0, seed=1, chunks=2)
                K.mix_sample_triton(a, b, mode, 0.5, 0.0, chunks=2)
            K.token_dlogp_triton(a, b, torch.zeros(5, dtype=torch.int64), chunks=2)
    finally:
        for name in KERNELS:
            setattr(K, name, saved[name])
    for k in seen.values():
        assert k.asm["cubin"], "empty cubin"
    return seen


def loop_profile(cubin):
    """SASS of the longest loop (the column loop): its instruction count and the most common opcodes."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    code = [(int(m[1], 16), m[2].split()) for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    loops = [(int(t[-1], 16), at) for at, t in code if "BRA" in t and int(t[-1], 16) < at]  # backward branches
    lo, hi = max(loops, key=lambda l: l[1] - l[0])
    ops = [(t[1] if t[0].startswith("@") else t[0]).split(".")[0] for at, t in code if lo <= at <= hi]
    return len(ops), collections.Counter(ops).most_common(4)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sm", type=int, default=90, help="compute capability: 90 = H100/H200, 80 = A100")
    p.add_argument("--sass", action="store_true", help="print inner-loop instructions per element")
    p.add_argument("--vocab", type=int, default=151936, help="row length: 151936 (Qwen), 50257 (GPT-2, unaligned)")
    p.add_argument("--philox_rounds", type=int, default=K.PHILOX_ROUNDS, help="rounds of the sampler's RNG")
    args = p.parse_args()
    K.PHILOX_ROUNDS = args.philox_rounds
    compiled = compile_all(args.sm, args.vocab)
    for (name, dtype, constexprs, warps, _), k in compiled.items():
        line = f"{name:15s} {dtype:5s} warps={warps} {constexprs}"
        if args.sass and "BLOCK" in constexprs:  # the streaming kernels: a (4, BLOCK) tile per loop step
            n, top = loop_profile(k.asm["cubin"])
            per_thread = K.ROWS * K.BLOCK // (32 * warps)
            line += f"\n    loop: {n} instructions for {per_thread} elements per thread = " \
                    f"{n / per_thread:.1f} per element; most: {', '.join(f'{o} {c}' for o, c in top)}"
        print(line)
    print(f"ok: {len(compiled)} kernel variants compiled for sm_{args.sm}")
