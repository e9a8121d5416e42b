"""Compile every Triton kernel of nanorlvr/kernels.py for a GPU, on a machine without one.

The CPU tests run the kernels in Triton's interpreter, which accepts Python the compiler refuses (a
kernel once broke on GPU only: an inline-asm string held in a local variable). Triton's wheel carries
the CUDA compiler (ptxas), so this script compiles to a cubin what each launcher would launch on CUDA,
without a driver: it swaps each kernel for a recorder, calls the launchers on CPU tensors, and compiles
every recorded launch for the target. Run as `python tests/kernels_compile.py [sm]`; the kernel test
suite runs it in a subprocess, as the interpreter must be off before Triton is imported.
"""

import os
import sys

os.environ["TRITON_INTERPRET"] = "0"  # before Triton is imported: real JIT functions, not interpreted ones
import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from nanorlvr import kernels as K  # noqa: E402

TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.int64: "i64"}
KERNELS = ("_lse_kernel", "_write_kernel", "_sample_kernel", "_finish_kernel")


def signature(fn, args, kwargs):
    """Triton's signature (name -> type) and constexpr values of one launch, as the JIT would infer them."""
    values = list(args) + [kwargs[p.name] for p in fn.params[len(args):]]
    sig, constexprs = {}, {}
    for p, v in zip(fn.params, values):
        if p.is_constexpr:
            sig[p.name], constexprs[p.name] = "constexpr", v
        elif isinstance(v, torch.Tensor):
            sig[p.name] = "*" + TYPES[v.dtype]
        elif isinstance(v, int):
            sig[p.name] = "i32" if -2**31 <= v < 2**31 else "i64"
        else:
            sig[p.name] = "fp32"
    return sig, constexprs


def compile_all(sm=90):
    """Compile each distinct launch of every mode, dtype and output; returns [(kernel, constexprs)]."""
    target, seen = GPUTarget("cuda", sm, 32), {}

    class Recorder:
        def __init__(self, fn):
            self.fn = fn

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                if "FAST_LOG2" in kwargs:  # what the launcher picks on CUDA (here, on CPU tensors, it would not)
                    kwargs["FAST_LOG2"] = True
                sig, constexprs = signature(self.fn, args, kwargs)
                key = (self.fn.__name__, repr(sig), repr(constexprs), kwargs.get("num_warps"))
                if key not in seen:
                    seen[key] = triton.compile(ASTSource(self.fn, sig, constexprs=constexprs), target=target,
                                               options={"num_warps": kwargs.get("num_warps", 4)})
            return launch

    saved = {name: getattr(K, name) for name in KERNELS}
    try:
        for name in KERNELS:
            setattr(K, name, Recorder(saved[name]))
        for dtype in (torch.float32, torch.bfloat16):
            a = b = torch.zeros(5, 3000, dtype=dtype)
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
    return [(key[0], key[2]) for key in seen]


if __name__ == "__main__":
    sm = int(sys.argv[1]) if len(sys.argv) > 1 else 90
    launches = compile_all(sm)
    for name, constexprs in launches:
        print(f"compiled {name} {constexprs}")
    print(f"ok: {len(launches)} kernel variants compiled for sm_{sm}")
