"""Across models: every ``results/<model>/metrics.json`` side by side (the comparison chapter).

- :func:`load_all_metrics` reads every model's metrics (a malformed file is an error naming it).
- :func:`compare_models` judges each headline claim of ``data/glance.json`` for each model with the same
  rule as the results-at-a-glance table (:func:`emolib.report.judge`) and adds the paper's value and the
  open replications' figures (``data/replications.json``) as reference columns.
- :func:`depth_curves` puts the per-layer curves (PC1-valence r, CV recognition over chance) on a common
  axis, relative depth = layer / number of layers, since models differ in depth.

Numbers are compared, never raw directions: vectors of different models live in different bases.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .constants import DATA_DIR, results_root
from .report import GlanceEntry, GlanceRow, judge, load_glance_rows

REPLICATIONS_FILE = DATA_DIR / "replications.json"

# Per-layer curves recorded by chapters 01 and 02 ({layer: value} dicts in metrics.json).
CURVES = {
    "pc1_valence_r_by_layer": "PC1 vs valence, Pearson r",
    "heldout_top1_cv_by_layer": "CV top-1 recognition / chance",
}
# Each model's own corpus (chapter 01): (metrics key, column label, format); shares are of the stories.
CORPUS_KEYS = (
    ("n_params_millions", "parameters (M)", ".0f"),
    ("n_stories", "stories", ",.0f"),
    ("stories_per_emotion_min", "usable stories per emotion (min)", ".0f"),
    ("median_story_tokens", "median story tokens", ".0f"),
    ("degenerate_share", "degenerate (dropped)", ".1%"),
    ("cutoff_share", "cut off at the token cap", ".1%"),
    ("leak_rate", "names its own emotion", ".1%"),
    ("neutral_emotion_word_rate", "neutral dialogues with an emotion word", ".1%"),
    ("split_half_per_half", "stories per half", ".0f"),
    ("split_half_cosine", "split-half cosine", ".2f"),
)
# Chapter 05's comparison of a base model with its post-trained version: (metrics key, label).
POSTTRAIN_KEYS = (
    ("posttrain_profile_r_neutral", "profile r, neutral prompts"),
    ("posttrain_profile_r_challenging", "profile r, challenging prompts"),
    ("posttrain_profile_r_self", "profile r, prompts about itself"),
    ("posttrain_shift_consistency_r", "shift consistency across prompt sets"),
)
STEERING_KEYS = (
    "blackmail_desperate_slope",
    "blackmail_calm_slope",
    "coding_desperate_slope",
    "coding_calm_slope",
)

__all__ = [
    "Comparison",
    "Replication",
    "compare_models",
    "depth_curves",
    "depth_references",
    "load_all_metrics",
    "load_replications",
    "posttrain_frame",
    "posttrain_pairs",
    "steering_frame",
]


@dataclass(frozen=True)
class Replication:
    """One figure of an open replication (``data/replications.json``)."""

    key: str
    value: float | None
    text: str
    project: str
    models: str
    source: str

    def __post_init__(self) -> None:
        for name in ("key", "text", "project", "models", "source"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise ValueError(
                    f"replication row {self.key!r}: {name} must be a non-empty string, got {v!r}"
                )
        if self.value is not None and not (
            isinstance(self.value, (int, float))
            and not isinstance(self.value, bool)
            and math.isfinite(self.value)
        ):
            raise ValueError(f"replication row {self.key!r}: value must be a finite number or null")

    def cell(self) -> str:
        return f"{self.text} ({self.models}; {self.project})"


def load_replications(path: str | Path = REPLICATIONS_FILE) -> list[Replication]:
    """The open replications' figures; an error names the file and the entry."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the replications file ({e})") from e
    rows = raw.get("rows") if isinstance(raw, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected an object with a 'rows' list")
    out = []
    for n, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ValueError(f"{path}: row {n} is not an object")
        fields = set(Replication.__dataclass_fields__)
        missing, unknown = fields - set(r), set(r) - fields
        if missing or unknown:
            raise ValueError(
                f"{path}: row {n} ({r.get('key')!r}): missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        try:
            out.append(Replication(**r))
        except ValueError as e:
            raise ValueError(f"{path}: row {n}: {e}") from e
    return out


def load_all_metrics(root: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """``{model folder: metrics}`` for every ``<root>/*/metrics.json`` (default: :func:`results_root`),
    sorted by folder name. Folders without a metrics file are skipped; an unreadable one is an error."""
    root = Path(root) if root is not None else results_root()
    out: dict[str, dict[str, Any]] = {}
    if not root.is_dir():
        return out
    for path in sorted(root.glob("*/metrics.json")):
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: malformed metrics file ({e}); rerun that model's chapters") from e
        if not isinstance(m, dict):
            raise ValueError(f"{path}: expected a JSON object of metrics")
        out[path.parent.name] = m
    return out


def _num(x: Any) -> float | None:
    """A finite number from metrics.json, else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _fmt(x: float | None, f: str) -> str:
    return "—" if x is None else format(x, f)


def _cell(e: GlanceEntry) -> str:
    if e.value is None:
        return "not run"
    f = e.row.fmt
    ci = "" if e.ci_low is None or e.ci_high is None else f" [{_fmt(e.ci_low, f)}, {_fmt(e.ci_high, f)}]"
    return f"{_fmt(e.value, f)}{ci}: {e.verdict}"


@dataclass(frozen=True)
class Comparison:
    """Every claim judged for every model, with the reference figures. Build with :func:`compare_models`."""

    models: tuple[str, ...]
    rows: tuple[GlanceRow, ...]
    entries: Mapping[str, tuple[GlanceEntry, ...]]  # model -> one entry per row
    replications: tuple[Replication, ...]
    metrics_by_model: Mapping[str, Mapping[str, Any]]

    def table(self) -> Any:
        """One row per claim: chapter, claim, one column per model ("value [CI]: verdict"), the paper's
        value and the open replications' figures."""
        import pandas as pd

        recs = []
        for i, r in enumerate(self.rows):
            rec = {"chapter": r.chapter, "claim": r.claim}
            for m in self.models:
                rec[m] = _cell(self.entries[m][i])
            rec["paper"] = r.paper_text or ("—" if r.paper is None else format(r.paper, r.fmt))
            reps = [x.cell() for x in self.replications if x.key == r.key]
            rec["open replications"] = "; ".join(reps) or "—"
            recs.append(rec)
        return pd.DataFrame(recs)

    def long(self) -> Any:
        """Tidy: one row per (model, claim) with value, CI, null, p and verdict (for figures and checks)."""
        import pandas as pd

        recs = []
        for m in self.models:
            for e in self.entries[m]:
                recs.append(
                    {
                        "model": m,
                        "chapter": e.row.chapter,
                        "key": e.row.key,
                        "claim": e.row.claim,
                        "value": e.value,
                        "ci_low": e.ci_low,
                        "ci_high": e.ci_high,
                        "null": e.null,
                        "p": e.p,
                        "verdict": e.verdict,
                    }
                )
        cols = ["model", "chapter", "key", "claim", "value", "ci_low", "ci_high", "null", "p", "verdict"]
        return pd.DataFrame(recs, columns=cols)

    def corpora(self) -> Any:
        """One row per model: the quality figures of the corpus it wrote (chapter 01), formatted; the
        split-half cosine with its CI. "—" where a model did not record a figure."""
        import pandas as pd

        recs = []
        for m in self.models:
            mx = dict(self.metrics_by_model[m])
            if _num(mx.get("n_degenerate")) is not None and _num(mx.get("n_stories")):
                mx["degenerate_share"] = mx["n_degenerate"] / mx["n_stories"]
            rec = {"model": m}
            for key, label, f in CORPUS_KEYS:
                rec[label] = _fmt(_num(mx.get(key)), f)
            lo, hi = _num(mx.get("split_half_cosine_ci_low")), _num(mx.get("split_half_cosine_ci_high"))
            if lo is not None and hi is not None and rec["split-half cosine"] != "—":
                rec["split-half cosine"] += f" [{lo:.2f}, {hi:.2f}]"
            recs.append(rec)
        return pd.DataFrame(recs, columns=["model", *(label for _, label, _ in CORPUS_KEYS)])

    def verdict_counts(self) -> Any:
        """Per model, how many claims got each verdict."""
        t = self.long()
        return t.groupby(["model", "verdict"]).size().unstack(fill_value=0)

    def note(self) -> str:
        """One sentence for the prose: which models are missing a comparison partner, and how to add one."""
        if len(self.models) >= 2:
            return "each has run the chapters listed in its column of Table 1"
        how = (
            "to add a model, write its corpus (`python -m emolib.corpus --model <spec>`) and run its chapters "
            "(`make notebooks MODEL=<spec>`, or `make book-all MODELS=...` for several)"
        )
        if not self.models:
            return f"no model has results yet: {how}"
        return f"only one model has results so far, so this page shows it beside the published figures; {how}"

    def metrics(self) -> dict[str, Any]:
        t = self.long()
        run = t[t["verdict"] != "not run yet"]
        return {
            "compare_n_models": len(self.models),
            "compare_models": ", ".join(self.models) or "none",
            "compare_n_claims": len(self.rows),
            "compare_n_judged": int(len(run)),
            "compare_n_replications": len(self.replications),
        }


def compare_models(
    metrics_by_model: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    rows: Sequence[GlanceRow] | None = None,
    replications: Sequence[Replication] | None = None,
) -> Comparison:
    """Judge every headline claim for every model (default: every ``results/*/metrics.json``)."""
    mm = dict(load_all_metrics() if metrics_by_model is None else metrics_by_model)
    rows = tuple(load_glance_rows() if rows is None else rows)
    reps = tuple(load_replications() if replications is None else replications)
    entries = {m: tuple(judge(r, mx) for r in rows) for m, mx in mm.items()}
    return Comparison(tuple(mm), rows, entries, reps, mm)


def depth_references(cmp: Comparison) -> dict[str, list[tuple[str, float]]]:
    """Published single-layer values to draw on the depth curves: the paper's and the replications' figures
    for PC1-valence (curve label -> [(label, value)])."""
    out: dict[str, list[tuple[str, float]]] = {}
    label = CURVES["pc1_valence_r_by_layer"]
    for r in cmp.rows:
        if r.key == "pc1_valence_r" and r.paper is not None:
            out.setdefault(label, []).append(("paper (Claude Sonnet 4.5)", float(r.paper)))
    for x in cmp.replications:
        if x.key == "pc1_valence_r" and x.value is not None:
            out.setdefault(label, []).append((x.models, float(x.value)))
    return out


def _curve(m: Mapping[str, Any], key: str) -> dict[int, float]:
    raw = m.get(key)
    if not isinstance(raw, Mapping):
        return {}
    out = {}
    for k, v in raw.items():
        try:
            L, x = int(k), float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x):
            out[L] = x
    return out


def depth_curves(metrics_by_model: Mapping[str, Mapping[str, Any]]) -> Any:
    """Per model and layer: relative depth (layer / n_layers) and the per-layer curves of :data:`CURVES`
    (recognition divided by the model's chance top-1, so models with different emotion counts compare).
    Models that recorded no curve are left out."""
    import pandas as pd

    recs = []
    for model, m in metrics_by_model.items():
        n_layers = m.get("n_layers")
        if not isinstance(n_layers, int) or n_layers < 1:
            continue
        chance = m.get("chance_top1")
        for key, label in CURVES.items():
            for L, v in sorted(_curve(m, key).items()):
                if key == "heldout_top1_cv_by_layer":
                    if not isinstance(chance, (int, float)) or chance <= 0:
                        continue
                    v = v / chance
                recs.append({"model": model, "curve": label, "layer": L, "depth": L / n_layers, "value": v})
    return pd.DataFrame(recs, columns=["model", "curve", "layer", "depth", "value"])


def steering_frame(cmp: Comparison, keys: Sequence[str] = STEERING_KEYS) -> Any:
    """Steering slopes per model with CI, the random-direction 95th percentile |slope| and the verdict."""
    t = cmp.long()
    return t[t["key"].isin(keys)].reset_index(drop=True)


def posttrain_frame(cmp: Comparison, keys: Sequence[tuple[str, str]] = POSTTRAIN_KEYS) -> Any:
    """Chapter 05 per model: each measure of :data:`POSTTRAIN_KEYS` with its 95% CI, the permutation null's
    95th percentile (where recorded), the paper's value (from the glance rows), and which base model and
    post-trained checkpoint were compared (the model's own corpus supplies the stories for the vectors).
    Models without chapter 05 results are left out."""
    import pandas as pd

    paper = {r.key: r.paper for r in cmp.rows if r.paper is not None}
    recs = []
    for model in cmp.models:
        m = cmp.metrics_by_model[model]
        for key, label in keys:
            v = _num(m.get(key))
            if v is None:
                continue
            recs.append(
                {
                    "model": model,
                    "key": key,
                    "measure": label,
                    "value": v,
                    "ci_low": _num(m.get(f"{key}_ci_low")),
                    "ci_high": _num(m.get(f"{key}_ci_high")),
                    "null95": _num(m.get(f"{key}_null95")),
                    "paper": _num(paper.get(key)),
                    "base_model": m.get("posttrain_base_model"),
                    "post": m.get("posttrain_adapter"),
                    "layer": m.get("posttrain_layer"),
                }
            )
    cols = [
        "model",
        "key",
        "measure",
        "value",
        "ci_low",
        "ci_high",
        "null95",
        "paper",
        "base_model",
        "post",
        "layer",
    ]
    return pd.DataFrame(recs, columns=cols)


def posttrain_pairs(frame: Any) -> str:
    """One sentence for the prose: for each model in :func:`posttrain_frame`, which base and post-trained
    checkpoint were compared, at which layer."""
    if not len(frame):
        return "no model has run chapter 05 yet"
    parts = []
    for model, g in frame.groupby("model", sort=False):
        r = g.iloc[0]
        parts.append(f"{model}'s stories read by {r['base_model']} against {r['post']} at layer {r['layer']}")
    return "; ".join(parts)
