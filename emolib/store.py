"""A content-keyed store for the book's expensive intermediate results (the scoring passes of the
steering chapters), so that a rebuild reads what an earlier run of the same code on the same inputs
computed, and an interrupted run resumes.

``@memo("option_logprobs", version=1)`` wraps a function whose result is a numpy array, a pandas DataFrame or
a :class:`Bundle` (named arrays with JSON-able facts).
Its key hashes the function's name and ``version`` with a fingerprint of every argument (after defaults
are applied; ``ignore`` names arguments that cannot change the result, such as a progress flag): a model by its weights hash, dtype, device type and whether it runs through the bridge (not
by its name, so a local copy of the same weights shares entries); tensors and arrays by their bytes;
dataclasses field by field; strings, numbers, lists and dicts as they are. An argument that cannot be
fingerprinted turns the store off for that call (with a warning), never into a wrong hit.

Where entries live, read in this order:

1. the **committed store**, ``data/store/<kind>/<key>.{safetensors,json}``: results of the default model
   computed by the maintainers with ``EMOLIB_STORE=write`` and committed with their provenance (model,
   weights hash, emolib version, git commit, date, wall time of the computation);
2. the **user cache**, ``cache_dir()/store/<kind>/``: everything this machine computed.

``EMOLIB_STORE`` selects the mode: ``on`` (default: read both, write the user cache), ``write`` (also write
new entries into the committed store), ``off`` (read and write nothing: recompute everything, e.g. to check
the committed entries: ``EMOLIB_STORE=off make book``). Files are written atomically and carry a sha256 of
their content; a corrupt file is reported, ignored and recomputed. Arrays are stored as safetensors (float64
stays float64), frames as JSON (Python's float repr round-trips exactly); nothing is pickled.

**Pruning**: entries whose inputs changed are never looked up again but stay in the committed store. Run the
notebooks with ``EMOLIB_STORE_LOG=<file>`` (every lookup appends ``kind/key``), then
``python -m emolib.store prune --used <file>`` lists the entries no logged run asked for, and ``--apply``
deletes them (``make store-prune`` does both steps for every model in ``MODELS``).

**When to bump ``version``**: whenever the maths of the wrapped function, or of anything it calls, changes
in a way that can move its numbers. The committed entries then stop matching and are recomputed.
``tests/test_store.py`` recomputes committed entries that are cheap enough and compares.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .constants import DATA_DIR, cache_dir

STORE_DIR = DATA_DIR / "store"
STORE_FORMAT = "1"
MODES = ("on", "write", "off")

# hits and computations since the process started (or the last reset), per source
COUNTS: Counter = Counter()


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A stored result made of named arrays and JSON-able facts (e.g. a vector bank with its provenance)."""

    arrays: dict[str, np.ndarray]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


class Unfingerprintable(TypeError):
    """An argument the store cannot hash (the call then runs without the store)."""


def mode() -> str:
    m = os.environ.get("EMOLIB_STORE", "on").strip().lower() or "on"
    if m not in MODES:
        raise ValueError(f"EMOLIB_STORE must be one of {MODES}, got {m!r}")
    return m


def committed_root() -> Path:
    return Path(os.environ.get("EMOLIB_STORE_DIR") or STORE_DIR)


def cache_root() -> Path:
    return cache_dir() / "store"


# ------------------------------------------------------------------------------------------ fingerprints
def _digest(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def fingerprint(obj: Any) -> Any:
    """A JSON-able, deterministic description of ``obj`` that changes whenever its content does."""
    import torch

    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return {"float": repr(obj)}
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return fingerprint(obj.item())
    custom = getattr(obj, "_store_key", None)
    if callable(custom):  # objects that know which of their fields carry content (not timestamps)
        return {"custom": type(obj).__qualname__, "value": fingerprint(custom())}
    info = getattr(obj, "info", None)
    if info is not None and getattr(info, "weights_hash", None) and hasattr(obj, "tokenizer"):
        return {
            "model": info.weights_hash,
            "dtype": str(info.dtype),
            "device": str(info.device).split(":")[0],
            "bridge": getattr(obj, "bridge", None) is not None,
        }
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        return {"tensor": _digest(t.numpy().tobytes()), "shape": list(t.shape), "dtype": str(t.dtype)}
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        if a.dtype == object:
            return {"list": [fingerprint(x) for x in a.tolist()]}
        return {"array": _digest(a.tobytes()), "shape": list(a.shape), "dtype": str(a.dtype)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            "dataclass": type(obj).__qualname__,
            "fields": {f.name: fingerprint(getattr(obj, f.name)) for f in dataclasses.fields(obj)},
        }
    if isinstance(obj, Mapping):
        return {
            "dict": [
                [fingerprint(k), fingerprint(v)] for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))
            ]
        }
    if isinstance(obj, (list, tuple)):
        return {"list": [fingerprint(x) for x in obj]}
    if hasattr(obj, "to_json") and hasattr(obj, "columns"):  # a DataFrame
        return {"frame": _digest(obj.to_json(orient="split", double_precision=15).encode())}
    raise Unfingerprintable(f"cannot fingerprint a {type(obj).__qualname__}")


def key_of(kind: str, version: int, args: Mapping[str, Any]) -> str:
    src = {"kind": kind, "version": version, "format": STORE_FORMAT, "args": fingerprint(dict(args))}
    return _digest(json.dumps(src, sort_keys=True).encode())[:32]


# ------------------------------------------------------------------------------------------------ files
def _frame_payload(df: Any) -> dict[str, Any]:
    cols = [str(c) for c in df.columns]
    if len(set(cols)) != len(cols):
        raise ValueError("a stored frame needs unique column names")
    data = {}
    dtypes = {}
    for c, col in zip(cols, df.columns):
        s = df[col]
        dtypes[c] = str(s.dtype)
        data[c] = [None if (isinstance(v, float) and v != v) else v for v in s.tolist()]
    return {"columns": cols, "dtypes": dtypes, "data": data, "n_rows": int(len(df))}


def _frame_from(payload: Mapping[str, Any]) -> Any:
    import pandas as pd

    df = pd.DataFrame({c: payload["data"][c] for c in payload["columns"]}, columns=payload["columns"])
    for c, dt in payload["dtypes"].items():
        if dt.startswith(("float", "int", "bool")):
            df[c] = df[c].astype(dt if not dt.startswith("float") else "float64")
    return df


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)


def _save(path_stem: Path, value: Any, meta: dict[str, Any]) -> Path:
    if isinstance(value, np.ndarray):
        import torch
        from safetensors.torch import save_file

        arr = np.ascontiguousarray(value)
        if arr.dtype == object:
            raise TypeError("object arrays are not stored")
        t = torch.from_numpy(arr.copy())
        meta = {**meta, "type": "array", "sha256": _digest(arr.tobytes())}
        path = path_stem.with_suffix(".safetensors")
        _write_atomic(path, lambda p: save_file({"value": t}, str(p), metadata={"meta": json.dumps(meta)}))
        return path
    if isinstance(value, Bundle):
        import torch
        from safetensors.torch import save_file

        arrays = {str(k): np.ascontiguousarray(v) for k, v in value.arrays.items()}
        info = json.dumps(value.info, sort_keys=True)
        meta = {**meta, "type": "bundle", "sha256": _bundle_digest(arrays, info)}
        tensors = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
        path = path_stem.with_suffix(".safetensors")
        _write_atomic(
            path, lambda p: save_file(tensors, str(p), metadata={"meta": json.dumps(meta), "info": info})
        )
        return path
    if hasattr(value, "columns") and hasattr(value, "to_json"):
        payload = _frame_payload(value)
        body = json.dumps(payload, sort_keys=True)
        doc = {"meta": {**meta, "type": "frame", "sha256": _digest(body.encode())}, "frame": payload}
        path = path_stem.with_suffix(".json")
        _write_atomic(path, lambda p: p.write_text(json.dumps(doc, indent=0, sort_keys=True)))
        return path
    raise TypeError(f"the store keeps numpy arrays, DataFrames and Bundles, not {type(value).__qualname__}")


def _bundle_digest(arrays: Mapping[str, np.ndarray], info: str) -> str:
    h = hashlib.sha256(info.encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode())
        h.update(str(a.dtype).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _load(path_stem: Path) -> tuple[Any, dict[str, Any]] | None:
    """The stored value and its metadata, or None when there is no entry. A corrupt entry warns and
    counts as absent (it is recomputed and, in the user cache, overwritten)."""
    st, js = path_stem.with_suffix(".safetensors"), path_stem.with_suffix(".json")
    try:
        if st.exists():
            from safetensors import safe_open

            with safe_open(str(st), framework="pt") as f:
                head = f.metadata() or {}
                meta = json.loads(head["meta"])
                tensors = {k: f.get_tensor(k).numpy() for k in f.keys()}
            if meta.get("type") == "bundle":
                if _bundle_digest(tensors, head["info"]) != meta.get("sha256"):
                    raise ValueError("checksum mismatch")
                return Bundle(tensors, json.loads(head["info"])), meta
            arr = tensors["value"]
            if _digest(np.ascontiguousarray(arr).tobytes()) != meta.get("sha256"):
                raise ValueError("checksum mismatch")
            return arr, meta
        if js.exists():
            doc = json.loads(js.read_text())
            body = json.dumps(doc["frame"], sort_keys=True)
            if _digest(body.encode()) != doc["meta"].get("sha256"):
                raise ValueError("checksum mismatch")
            return _frame_from(doc["frame"]), doc["meta"]
    except Exception as e:  # noqa: BLE001 - any failure to read means: recompute
        warnings.warn(f"Ignoring a corrupt store entry {path_stem} ({e}); recomputing it", stacklevel=3)
    return None


def _provenance(args: Mapping[str, Any]) -> dict[str, Any]:
    from . import __version__
    from .results import git_commit

    out: dict[str, Any] = {"emolib_version": __version__, "git_commit": git_commit()}
    for v in args.values():
        info = getattr(v, "info", None)
        if info is not None and getattr(info, "weights_hash", None):
            out.update({"model": info.name, "weights_hash": info.weights_hash, "dtype": str(info.dtype)})
            break
    return out


# ------------------------------------------------------------------------------------------- use log
def _note_use(kind: str, key: str) -> None:
    """Append ``kind/key`` to the file named by ``EMOLIB_STORE_LOG`` (if set): the entries a run looked up,
    read or computed, which :func:`unused` compares with the committed store. One short line per append, so
    processes running at once can share the file."""
    log = os.environ.get("EMOLIB_STORE_LOG", "").strip()
    if not log:
        return
    path = Path(log)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{kind}/{key}\n")


def read_use_log(*paths: str | Path) -> set[str]:
    """The ``kind/key`` names recorded in one or more use logs (see :func:`_note_use`)."""
    used: set[str] = set()
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(
                f"no store use log at {path} (set EMOLIB_STORE_LOG while running the notebooks)"
            )
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            kind, sep, key = line.partition("/")
            if not sep or not kind or len(key) != 32 or any(c not in "0123456789abcdef" for c in key):
                raise ValueError(f"{path}:{n}: not a store use line (kind/32-hex key): {line!r}")
            used.add(line)
    if not used:
        raise ValueError(
            f"the use logs {[str(p) for p in paths]} record no store lookups; refusing to call every entry unused"
        )
    return used


def unused(used: set[str], root: str | Path | None = None) -> list[Path]:
    """Files of the store under ``root`` (default: the committed store) whose ``kind/key`` is not in ``used``:
    entries no current run looks up (superseded by a code or input change)."""
    root = Path(root) if root is not None else committed_root()
    out = []
    for p in sorted(root.glob("*/*")):
        if p.suffix not in (".safetensors", ".json") or p.name.endswith(".tmp"):
            continue
        if f"{p.parent.name}/{p.stem}" not in used:
            out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m emolib.store prune --used LOG [LOG ...] [--apply]``: list (or, with ``--apply``, delete) the
    committed entries that no run recorded in the use logs looked up."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m emolib.store", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("prune", help="committed entries that the logged runs did not look up")
    pr.add_argument("--used", nargs="+", required=True, help="use logs written with EMOLIB_STORE_LOG")
    pr.add_argument("--root", default=None, help="store to prune (default: the committed store, data/store)")
    pr.add_argument("--apply", action="store_true", help="delete them (default: only list them)")
    a = ap.parse_args(argv)
    stale = unused(read_use_log(*a.used), a.root)
    by_kind: Counter = Counter()
    size = 0
    for p in stale:
        by_kind[p.parent.name] += 1
        size += p.stat().st_size
    for kind, n in sorted(by_kind.items()):
        print(f"{kind}: {n} unused")
    verb = "deleted" if a.apply else "would delete (rerun with --apply)"
    print(f"{len(stale)} unused entries, {size / 2**20:.1f} MiB: {verb}")
    if a.apply:
        for p in stale:
            p.unlink()
    return 0


# ------------------------------------------------------------------------------------------------ memo
def memo(
    kind: str, version: int, ignore: tuple[str, ...] = (), depends: tuple[Any, ...] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: look the call up in the store before running it (see the module docstring). ``ignore``:
    arguments left out of the key because they cannot change the result (e.g. ``progress``). ``depends``:
    version constants of the code it relies on (e.g. :data:`emolib.extract.EXTRACT_VERSION`), part of the key."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn)
        unknown = set(ignore) - set(sig.parameters)
        if unknown:
            raise ValueError(f"{kind}: ignore names unknown arguments {sorted(unknown)}")

        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            m = mode()
            if m == "off":
                return fn(*args, **kwargs)
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            try:
                keyed = {k: v for k, v in bound.arguments.items() if k not in ignore}
                key = key_of(kind, version, {**keyed, "__depends__": list(depends)} if depends else keyed)
            except Unfingerprintable as e:
                warnings.warn(f"{kind}: not stored ({e})", stacklevel=2)
                COUNTS["unkeyed"] += 1
                return fn(*args, **kwargs)
            _note_use(kind, key)
            for source, root in (("committed", committed_root()), ("cache", cache_root())):
                got = _load(root / kind / key)
                if got is not None:
                    COUNTS[source] += 1
                    return got[0]
            t0 = time.perf_counter()
            value = fn(*args, **kwargs)
            meta = {
                "kind": kind,
                "version": version,
                "key": key,
                "seconds": round(time.perf_counter() - t0, 2),
                "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                **_provenance(bound.arguments),
            }
            roots = [cache_root()] + ([committed_root()] if m == "write" else [])
            for root in roots:
                try:
                    _save(root / kind / key, value, meta)
                except (OSError, TypeError) as e:
                    warnings.warn(f"{kind}: result not stored in {root} ({e})", stacklevel=2)
            COUNTS["computed"] += 1
            return value

        inner.__wrapped__ = fn  # type: ignore[attr-defined]
        inner.store_kind = kind  # type: ignore[attr-defined]
        return inner

    return wrap


def summary() -> str:
    """One line for a page's provenance box: where this process's stored computations came from."""
    c = COUNTS
    n = c["committed"] + c["cache"] + c["computed"] + c["unkeyed"]
    if not n:
        return "none used"
    parts = [
        f"{c['computed'] + c['unkeyed']} computed in this run",
        f"{c['committed']} read from the committed store (data/store)",
        f"{c['cache']} from this machine's cache",
    ]
    return f"{n} in all: " + ", ".join(parts) + f" (mode {mode()}; EMOLIB_STORE=off recomputes all)"


def entries(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Metadata of every entry under ``root`` (default: the committed store), for checks and reports."""
    root = Path(root) if root is not None else committed_root()
    out = []
    for p in sorted(root.glob("*/*")):
        if p.suffix not in (".safetensors", ".json") or p.name.endswith(".tmp"):
            continue
        got = _load(p.with_suffix(""))
        if got is None:
            raise ValueError(f"corrupt store entry {p}")
        out.append({**got[1], "path": str(p)})
    return out


if __name__ == "__main__":
    raise SystemExit(main())
