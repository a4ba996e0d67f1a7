"""Headline numbers: one call puts a value in the book (myst_nb glue) and in results/<model>/metrics.json.

``metrics.json`` is shared by every notebook of a model: :func:`record` merges keys in (never drops other
notebooks' keys), writes atomically, and keeps each notebook's provenance under ``_provenance``.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

from . import __version__
from .constants import REPO_ROOT, results_root
from .stimuli import read_json_object


class _Text(str):
    """A string whose repr is itself, so that ``{glue:text}`` shows it without quotes."""

    def __repr__(self) -> str:
        return str(self)


def _plain(value: Any) -> Any:
    """JSON-ready copy (numpy / torch scalars and arrays to Python; NaN to None)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    raise TypeError(f"Cannot record a value of type {type(value).__name__} in metrics.json")


def results_dir(slug: str, root: str | Path | None = None) -> Path:
    """``results/<slug>/`` (``slug``: :attr:`emolib.config.RunConfig.slug` or :func:`model_slug`)."""
    return Path(root or results_root()) / slug


def read_metrics(model: str, root: str | Path | None = None) -> dict[str, Any]:
    path = results_dir(model, root) / "metrics.json"
    if not path.exists():
        return {}
    return read_json_object(path)  # a malformed file raises before anything is overwritten


def write_metrics(model: str, updates: dict[str, Any], root: str | Path | None = None) -> Path:
    """Merge ``updates`` into metrics.json (nested ``_provenance`` merged one level deep). Chapters of one
    model may run at once (two papermill jobs): the read-merge-write holds an exclusive lock on a sidecar
    file, and each writer goes through a temporary file of its own, so no process loses another's keys."""
    import fcntl
    import tempfile

    path = results_dir(model, root) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = _plain(updates)
    with open(path.with_name("metrics.json.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read_metrics(model, root)
        for k, v in plain.items():
            if k == "_provenance" and isinstance(v, dict):
                data.setdefault("_provenance", {}).update(v)
            else:
                data[k] = v
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="metrics.", suffix=".json.tmp")
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    return path


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Run:
    """One notebook run: seeds everything from its config, records the config as provenance, and puts
    numbers into the book (glue) and into metrics.json with one call each.

    >>> run = VectorsConfig(notebook="01_emotion_vectors", quick=True).start()   # doctest: +SKIP
    >>> run.record("heldout_top1_cv", 0.03)                                      # doctest: +SKIP
    """

    def __init__(self, config: Any, *, root: str | Path | None = None, glue: bool = True) -> None:
        self.config = config
        self.notebook = config.notebook
        self.slug = config.slug
        self.root = root
        self.glue = glue
        self._recorded: dict[str, Any] = {}
        seed_everything(config.seed)
        self.out = results_dir(self.slug, root)
        self.out.mkdir(parents=True, exist_ok=True)
        self.provenance = {
            "config": config.provenance(),
            "emolib_version": __version__,
            "git_commit": git_commit(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        write_metrics(self.slug, {"_provenance": {self.notebook: self.provenance}}, root)

    def metrics(self) -> dict[str, Any]:
        """Everything recorded for this model so far (every chapter)."""
        return read_metrics(self.slug, self.root)

    def record(self, key: str, value: Any, *, glue: bool | None = None) -> None:
        """Glue ``value`` under ``key`` for the text, and merge it into metrics.json. A key recorded again
        with the same value (e.g. by a typed result's ``metrics()`` after the notebook recorded it) is glued
        once, since the book refuses duplicate glue keys; with another value it is an error."""
        plain = _plain(value)  # what metrics.json holds: compared as such (arrays as lists, NaN as None)
        if key in self._recorded:
            if self._recorded[key] != plain:
                raise ValueError(
                    f"{key!r} recorded twice with different values: {self._recorded[key]!r}, {plain!r}"
                )
            return
        if (glue if glue is not None else self.glue) and not isinstance(value, (dict, list)):
            from myst_nb import glue as _glue

            _glue(key, _Text(value) if isinstance(value, str) else value, display=False)
        write_metrics(self.slug, {key: value}, self.root)
        self._recorded[key] = plain

    def record_result(self, result: Any) -> None:
        """Record every headline number of a typed result (its ``metrics()`` dict), in one call."""
        for k, v in result.metrics().items():
            self.record(k, v)

    def figure(self, name: str, fig: Any, *, glue: bool = True) -> None:
        """Save ``fig`` as results/<slug>/figures/<name>.png, glue it (for ``{glue:figure}``) and close it
        (so that the notebook does not show it a second time)."""
        import matplotlib.pyplot as plt

        path = self.out / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        if glue and self.glue:
            from myst_nb import glue as _glue

            _glue(name, fig, display=False)
        plt.close(fig)


def comparison_table(metrics: dict[str, Any], reference_rows: list[dict[str, Any]]) -> Any:
    """Our numbers (from metrics.json, with their CI where one was recorded as ``<stem>_ci_low/high``)
    beside the published ones. ``reference_rows`` items: metric, key, paper, replications."""
    import pandas as pd

    rows = []
    for r in reference_rows:
        key, stem = r["key"], r["key"].removesuffix("_r")
        lo, hi = metrics.get(f"{stem}_ci_low"), metrics.get(f"{stem}_ci_high")
        ours = metrics.get(key)
        rows.append(
            {
                "metric": r["metric"],
                "this model": "not run" if ours is None else f"{ours:.3g}",
                "95% CI": f"[{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else "",
                "paper (Claude Sonnet 4.5)": r["paper"],
                "open replications": r.get("replications") or "",
            }
        )
    return pd.DataFrame(rows).set_index("metric")
