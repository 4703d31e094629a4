"""Time diffusers' attention dispatch against torch SDPA directly, piece by piece, on the perf
suite's CPU quick shapes (docs/reports/upgrade-gate.md, "torch 2.14.1: diffusers' _native_math/_native_flash").

    python scripts/dispatch_overhead.py [--threads N] [--reps R] [--dtype fp32] [--profile]

Rows, timed interleaved round by round on the same inputs (median ms per call):
  sdpa-math        torch SDPA inside sdpa_kernel(MATH)            (attnparity's sdpa-math row)
  sdpa-flash       torch SDPA inside sdpa_kernel(FLASH_ATTENTION) (attnparity's sdpa-flash row)
  diffusers:X      attnparity's diffusers:X row: attention_backend(X) + dispatch_attention_fn
  dispatch X       dispatch_attention_fn(backend=X) alone, no attention_backend context manager
  ctx X (empty)    `with attention_backend(X): pass`, nothing computed
  sdpa_kernel (empty)  `with sdpa_kernel(MATH): pass`
--profile prints cProfile's top functions of 20 calls of the diffusers:_native_math row.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()

    import torch
    import diffusers
    from diffusers.models import attention_dispatch as ad
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from attnparity.backends.registry import get_backend
    from attnparity.perf.shapes import quick_cpu

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    print(f"torch {torch.__version__} (cuda build: {torch.version.cuda}), diffusers {diffusers.__version__}, "
          f"threads {torch.get_num_threads()}, {args.dtype}, {args.reps} interleaved rounds")

    def sdpa_with(kernel):
        def f(q, k, v):
            with sdpa_kernel([kernel]):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return f

    def row(name):
        fn = get_backend(name).fn
        return lambda q, k, v: fn(q, k, v)

    def dispatch(name):
        b = ad.AttentionBackendName(name)
        return lambda q, k, v: ad.dispatch_attention_fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                       backend=b)

    def ctx(name):
        b = ad.AttentionBackendName(name)

        def f(q, k, v):
            with ad.attention_backend(b):
                pass
        return f

    def empty_kernel(q, k, v):
        with sdpa_kernel([SDPBackend.MATH]):
            pass

    rows = {"sdpa-math": sdpa_with(SDPBackend.MATH), "sdpa-flash": sdpa_with(SDPBackend.FLASH_ATTENTION),
            "diffusers:native": row("diffusers:native"), "diffusers:_native_math": row("diffusers:_native_math"),
            "dispatch _native_math": dispatch("_native_math"), "ctx _native_math (empty)": ctx("_native_math"),
            "ctx native (empty)": ctx("native"), "sdpa_kernel (empty)": empty_kernel}
    if dtype != torch.float32:  # diffusers' _native_flash takes fp16/bf16 only
        rows["diffusers:_native_flash"] = row("diffusers:_native_flash")
        rows["dispatch _native_flash"] = dispatch("_native_flash")

    for shape in quick_cpu():
        g = torch.Generator().manual_seed(0)
        q = torch.randn(shape.batch, shape.heads, shape.sq, shape.head_dim, generator=g).to(dtype)
        k = torch.randn(shape.batch, shape.heads, shape.skv, shape.head_dim, generator=g).to(dtype)
        v = torch.randn(shape.batch, shape.heads, shape.skv, shape.head_dim, generator=g).to(dtype)
        times: dict[str, list[float]] = {n: [] for n in rows}
        for f in rows.values():  # warm-up
            f(q, k, v)
        for _ in range(args.reps):
            for n, f in rows.items():
                t0 = time.perf_counter()
                f(q, k, v)
                times[n].append((time.perf_counter() - t0) * 1e3)
        print(f"\n{shape.name}  (B{shape.batch} H{shape.heads} Sq{shape.sq} Skv{shape.skv} D{shape.head_dim})")
        for n, ts in times.items():
            print(f"  {n:28s} {statistics.median(ts):9.3f} ms   (min {min(ts):.3f})")

    if args.profile:
        import cProfile
        import pstats

        shape = quick_cpu()[2]
        q = torch.randn(shape.batch, shape.heads, shape.sq, shape.head_dim).to(dtype)
        f = rows["diffusers:_native_math"]
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(20):
            f(q, q, q)
        pr.disable()
        print(f"\ncProfile, 20 calls of diffusers:_native_math on {shape.name}:")
        pstats.Stats(pr).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
