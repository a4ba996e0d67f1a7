"""The machine's matrix-multiply peak, measured now, for the dtypes the benchmarks use.

GEMMs shaped like the model's own products: [tokens, d_model] x [d_model, d_ff] (MLP up/gate),
[tokens, d_ff] x [d_ff, d_model] (MLP down), [tokens, d_model] x [d_model, d_model] (attention projections),
and one square product for reference. The peak of a dtype is the best of these shapes. Each shape is
timed for at least ``seconds`` after a warm-up, with torch's default thread count.

    python benchmarks/peak.py [--d-model 576] [--d-ff 1536] [--tokens 512] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import common  # noqa: F401  (sets the offline environment and sys.path)

DTYPES = ("float32", "bfloat16")


def shapes(d_model: int, d_ff: int, tokens: int, square: int = 1024) -> dict[str, tuple[int, int, int]]:
    """(M, K, N) of each product: an [M, K] by [K, N] matrix multiply."""
    sq = max(square, d_model)
    return {
        "mlp_up": (tokens, d_model, d_ff),
        "mlp_down": (tokens, d_ff, d_model),
        "attn_proj": (tokens, d_model, d_model),
        f"square_{sq}": (sq, sq, sq),
    }


def gemm_gflops(m: int, k: int, n: int, dtype: str, device: str = "cpu", seconds: float = 0.3) -> float:
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(m, k, device=device).to(dt)
    b = torch.randn(k, n, device=device).to(dt)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    a @ b  # warm-up
    sync()
    reps, t0 = 0, time.perf_counter()
    while True:  # at least one timed product (a slow dtype is not repeated for long)
        a @ b
        reps += 1
        sync()
        if time.perf_counter() - t0 >= seconds:
            break
    return 2.0 * m * k * n * reps / (time.perf_counter() - t0) / 1e9


def measure_peak(
    d_model: int = 576,
    d_ff: int = 1536,
    tokens: int = 512,
    device: str = "cpu",
    seconds: float = 0.3,
    square: int = 1024,
) -> dict[str, Any]:
    """GFLOP/s per dtype and shape, and the peak (best shape) per dtype."""
    out: dict[str, Any] = {"device": device, "shapes": {}, "peak_gflops": {}}
    for dtype in DTYPES:
        per = {
            name: round(gemm_gflops(*mkn, dtype, device, seconds), 1)
            for name, mkn in shapes(d_model, d_ff, tokens, square).items()
        }
        out["shapes"][dtype] = per
        out["peak_gflops"][dtype] = max(per.values())
    return out


def measure(method: str, opts: dict[str, Any]) -> dict[str, Any]:
    if method != "peak":
        raise ValueError(method)
    return measure_peak(
        opts.get("d_model", 576),
        opts.get("d_ff", 1536),
        opts.get("tokens", 512),
        opts.get("device", "cpu"),
        opts.get("seconds", 0.3),
        opts.get("square", 1024),
    )


if __name__ == "__main__":
    if not common.child_main(measure):
        ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        ap.add_argument("--d-model", type=int, default=576)
        ap.add_argument("--d-ff", type=int, default=1536)
        ap.add_argument("--tokens", type=int, default=512)
        ap.add_argument("--device", default="cpu")
        ap.add_argument("--seconds", type=float, default=0.3)
        a = ap.parse_args()
        print(json.dumps(measure_peak(a.d_model, a.d_ff, a.tokens, a.device, a.seconds), indent=1))
