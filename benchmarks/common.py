"""Shared pieces of the benchmarks: the machine, child processes, memory and FLOP counting.

How work is counted (the same everywhere): a *FLOP-equivalent* is 2 x (number of weights in the matrices a
token passes through) per token. For a decoder layer that is its attention projections (q, k, v, o) and its
MLP matrices; the LM head counts only where logits are computed. Embedding look-ups, norms, softmax and the
attention-score products (which grow with context length) are not counted, so a fraction of the matmul peak
computed from it is a slight underestimate of the work done. Padding tokens never count as tokens.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, torch version and CPU capability, load and date."""
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": mem_gb,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# --- memory ----------------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark of this process (Linux), so that the peak read later
    covers only the measured phase, not model loading. False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (since the last :func:`reset_peak_rss` where it worked)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- FLOP-equivalents -------------------------------------------------------------------------------


def matrix_params(hf_model: Any) -> dict[str, Any]:
    """Weights in the matrices of each decoder layer (list) and of the LM head (0 if absent)."""
    base = getattr(hf_model, "model", hf_model)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(f"{type(hf_model).__name__}: no .model.layers to count")
    per_layer = [sum(p.numel() for p in layer.parameters() if p.ndim >= 2) for layer in layers]
    head = hf_model.get_output_embeddings() if hasattr(hf_model, "get_output_embeddings") else None
    return {"per_layer": per_layer, "head": int(head.weight.numel()) if head is not None else 0}


def flop_eq(params: int, tokens: int) -> float:
    return 2.0 * params * tokens


# --- child processes --------------------------------------------------------------------------------


def child_main(measure: Any) -> bool:
    """If this process was started as a benchmark child (``--child METHOD --opts JSON``), run ``measure`` and
    print its result as the last line of stdout. Returns whether it did."""
    if "--child" not in sys.argv:
        return False
    method = sys.argv[sys.argv.index("--child") + 1]
    opts = json.loads(sys.argv[sys.argv.index("--opts") + 1])
    print(json.dumps(measure(method, opts)))
    return True


def run_isolated(script: Path, method: str, opts: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    """Run ``script --child method --opts JSON`` in a fresh Python process and return its JSON result."""
    cmd = [sys.executable, str(script), "--child", method, "--opts", json.dumps(opts)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    lines = [x for x in p.stdout.strip().splitlines() if x.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"{script.name} {method} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(lines[-1])


def run(script: Path, measure: Any, method: str, opts: dict[str, Any], isolate: bool) -> dict[str, Any]:
    """One method, in its own process (``isolate``: peak memory is then the method's own) or in this one."""
    if isolate:
        return run_isolated(script, method, opts)
    return measure(method, opts)


@functools.lru_cache(maxsize=2)
def load(model: str, dtype: str = "float32", device: str = "cpu", bridge: bool = True) -> Any:
    """The model (cached: in-process runs load it once; each isolated child loads its own). ``bridge=False``:
    the plain transformers model, as corpus generation loads it."""
    from emolib.models import load_model

    return load_model(model, dtype=dtype, device=device, bridge=bridge)
