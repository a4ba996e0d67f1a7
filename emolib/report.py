"""What a reader sees around the numbers: results at a glance, the provenance box, hidden parameter cells.

- :func:`glance_table` turns ``metrics.json`` into one row per headline claim (our value, 95% CI, null, p,
  the paper's value and a one-word verdict). The rows are data (``data/glance.json``), so a new chapter adds
  its claims without touching code. The verdict rule is :func:`judge` (documented there).
- :func:`provenance_box` is the last cell of every chapter: model, weights hash, seed, quick mode, emolib
  version, commit, build date, the effective settings, and how to cite the page (from ``CITATION.cff``).
- :func:`hide_parameter_cells` tags the ``parameters`` cell and papermill's ``injected-parameters`` cell of
  an executed notebook ``remove-cell`` (``python -m emolib.report hide book/_generated/NAME.ipynb``).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .constants import DATA_DIR, REPO_ROOT

GLANCE_FILE = DATA_DIR / "glance.json"
CITATION_FILE = REPO_ROOT / "CITATION.cff"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"

# The one-word verdicts, in the order the rule tries them (see :func:`judge`).
REPLICATES = "replicates"
WEAKER = "weaker"
NOT_REPLICATED = "does not replicate"
NOT_TESTABLE = "not testable on this model"
NOT_RUN = "not run yet"
VERDICTS: tuple[str, ...] = (REPLICATES, WEAKER, NOT_REPLICATED, NOT_TESTABLE, NOT_RUN)

HIDE_TAG = "remove-cell"
PARAMETER_TAGS = ("parameters", "injected-parameters")

# The paper's corpus: 12 stories per topic per emotion over 100 topics (PAPER.md, method step 2).
PAPER_STORIES_PER_EMOTION = 1200

__all__ = [
    "GLANCE_FILE",
    "PAPER_STORIES_PER_EMOTION",
    "VERDICTS",
    "CorpusFacts",
    "GlanceEntry",
    "GlanceRow",
    "GlanceSummary",
    "ModelFacts",
    "citation_text",
    "corpus_facts",
    "glance_summary",
    "glance_table",
    "hide_parameter_cells",
    "judge",
    "load_glance_rows",
    "provenance_box",
]


# ------------------------------------------------------------------------------------ results at a glance
@dataclass(frozen=True)
class GlanceRow:
    """One headline claim, as read from ``data/glance.json``.

    key: the metrics.json key of our value. ci: ``[low key, high key]`` (default ``<key>_ci_low/_ci_high``).
    p: the key of the permutation p-value (default ``<key>_p``); its prose form is read from ``<p>_text``
    when recorded (:meth:`emolib.stats.PValue.text`, which writes floor values as bounds), else formatted
    with :func:`emolib.stats.fmt_p` using ``<p>_n_perm`` when recorded.
    reference: the value the CI must exclude, a metrics key (e.g. ``chance_top1``) or a number (default 0).
    null_key / null_label: what the "null" column shows (e.g. the shuffled-label 95th percentile); when it
    is not recorded the column shows the reference with ``reference_label`` (e.g. "chance").
    sign: the paper's direction (+1: our value should exceed the reference; default: the sign of ``paper``,
    else +1). paper: the published value on the same scale as ours, or None (then no magnitude check);
    paper_text: how the table shows it. validity: keys of readout validity checks
    (``readout_validity_*_pass``); the claim is not testable when every recorded one is False.
    """

    claim: str
    chapter: str
    key: str
    ci: tuple[str, str] = ("", "")
    p: str = ""
    reference: str | float = 0.0
    null_key: str | None = None
    null_label: str = ""
    reference_label: str = ""
    paper: float | None = None
    paper_text: str = ""
    sign: int = 1
    validity: tuple[str, ...] = ()
    fmt: str = ".3f"
    alpha: float = 0.05

    def __post_init__(self) -> None:
        for name in ("claim", "chapter", "key"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(
                    f"glance row: {name} must be a non-empty string, got {getattr(self, name)!r}"
                )
        if not self.ci[0] and not self.ci[1]:
            object.__setattr__(self, "ci", (f"{self.key}_ci_low", f"{self.key}_ci_high"))
        if len(self.ci) != 2 or not all(isinstance(k, str) and k for k in self.ci):
            raise ValueError(f"glance row {self.key}: ci must be two keys, got {self.ci!r}")
        if not self.p:
            object.__setattr__(self, "p", f"{self.key}_p")
        if self.sign not in (1, -1):
            raise ValueError(f"glance row {self.key}: sign must be +1 or -1, got {self.sign!r}")
        if self.paper is not None and not (
            isinstance(self.paper, (int, float)) and math.isfinite(self.paper)
        ):
            raise ValueError(
                f"glance row {self.key}: paper must be a finite number or null, got {self.paper!r}"
            )
        if not isinstance(self.reference, (str, int, float)) or isinstance(self.reference, bool):
            raise ValueError(f"glance row {self.key}: reference must be a key or a number")
        if not 0 < self.alpha < 1:
            raise ValueError(f"glance row {self.key}: alpha must be in (0, 1), got {self.alpha}")
        format(0.5, self.fmt)  # raises on a bad format spec

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GlanceRow:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known - {"comment"}
        if unknown:
            raise ValueError(f"glance row {d.get('key')!r}: unknown fields {sorted(unknown)}")
        kw = {k: v for k, v in d.items() if k in known}
        if "ci" in kw:
            kw["ci"] = tuple(kw["ci"])
        if "validity" in kw:
            kw["validity"] = tuple(kw["validity"])
        if "sign" not in kw:
            paper = kw.get("paper")
            kw["sign"] = -1 if isinstance(paper, (int, float)) and paper < 0 else 1
        return cls(**kw)


def load_glance_rows(path: str | Path = GLANCE_FILE) -> list[GlanceRow]:
    """The headline claims of every chapter (``data/glance.json``: ``{"rows": [...]}``)."""
    data = json.loads(Path(path).read_text())
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected an object with a non-empty 'rows' list")
    out = [GlanceRow.from_dict(r) for r in rows]
    claims = [r.claim for r in out]
    dup = {c for c in claims if claims.count(c) > 1}
    if dup:
        raise ValueError(f"{path}: duplicate claims {sorted(dup)}")
    return out


def _num(metrics: Mapping[str, Any], key: str) -> float | None:
    """A finite number recorded under ``key``, else None (missing, None, NaN, not a number)."""
    v = metrics.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


@dataclass(frozen=True)
class GlanceEntry:
    """A row judged against one model's metrics: the displayed cells and the verdict with its reason."""

    row: GlanceRow
    value: float | None
    ci_low: float | None
    ci_high: float | None
    reference: float | None
    null: float | None
    p: float | None
    p_text: str
    verdict: str
    reason: str

    def cells(self) -> dict[str, str]:
        r, f = self.row, self.row.fmt
        show = lambda x: "—" if x is None else format(x, f)  # noqa: E731
        if self.null is not None:
            null = f"{format(self.null, f)} ({r.null_label})" if r.null_label else format(self.null, f)
        elif self.reference is not None and (
            isinstance(r.reference, str) or self.reference != 0 or r.reference_label
        ):
            ref = format(self.reference, f)
            null = f"{ref} ({r.reference_label})" if r.reference_label else ref
        else:
            null = "—"
        ci = (
            "—"
            if self.ci_low is None or self.ci_high is None
            else f"[{show(self.ci_low)}, {show(self.ci_high)}]"
        )
        paper = r.paper_text or ("—" if r.paper is None else format(r.paper, f))
        return {
            "chapter": r.chapter,
            "claim": r.claim,
            "ours": show(self.value),
            "95% CI": ci,
            "null": null,
            "p": self.p_text,
            "paper": paper,
            "verdict": self.verdict,
        }


def _chapter_n_perm(metrics: Mapping[str, Any], chapter: str) -> int | None:
    """``n_perm`` of the effective config the chapter's notebook recorded (``_provenance``), if any."""
    for name, prov in (metrics.get("_provenance") or {}).items():
        if str(name).startswith(f"{chapter}_") and isinstance(prov, Mapping):
            n = (prov.get("config") or {}).get("n_perm")
            if isinstance(n, int) and not isinstance(n, bool) and n >= 1:
                return n
    return None


def _p_text(metrics: Mapping[str, Any], key: str, p: float | None, chapter: str) -> str:
    """Prose form of a recorded p-value: ``<key>_text`` when recorded; else with ``<key>_n_perm`` (or the
    chapter's ``n_perm``, used only when p is exactly its floor 1/(n+1)) a floor value becomes a bound."""
    text = metrics.get(f"{key}_text")
    if isinstance(text, str) and text:
        return text
    if p is None:
        return "—"
    from .stats import fmt_p

    n_perm = metrics.get(f"{key}_n_perm")
    if isinstance(n_perm, int) and not isinstance(n_perm, bool) and n_perm >= 1:
        return fmt_p(p, n_perm)
    n_cfg = _chapter_n_perm(metrics, chapter)
    if n_cfg is not None and math.isclose(p * (n_cfg + 1), 1.0, rel_tol=1e-9):
        return fmt_p(p, n_cfg)
    return fmt_p(p)


def judge(row: GlanceRow, metrics: Mapping[str, Any]) -> GlanceEntry:
    """Judge one claim against one model's metrics. The rule, tried in this order:

    1. **not run yet**: our value is not recorded, the reference is a key that is not recorded, or neither
       a CI nor a p-value was recorded (no test to read).
    2. **not testable on this model**: every validity check named in ``row.validity`` that was recorded is
       False (no readout the chapter could use passed its own check, so the number is not interpreted; a
       chapter with two candidate readouts uses one that passes).
    3. **does not replicate**: not significant in the paper's direction. Significant means every recorded
       test passes: the 95% CI lies entirely on the paper's side of the reference (above it for sign +1,
       below for sign -1) and p < alpha (0.05).
    4. **weaker**: significant, but the paper gives a value and ours is less than half of it
       (``sign * ours < 0.5 * sign * paper``).
    5. **replicates**: significant, in the paper's direction, and at least half the paper's value (or the
       paper gives no number to compare with).
    """
    m = metrics
    value = _num(m, row.key)
    lo, hi = _num(m, row.ci[0]), _num(m, row.ci[1])
    p = _num(m, row.p)
    ref = _num(m, row.reference) if isinstance(row.reference, str) else float(row.reference)
    null = _num(m, row.null_key) if row.null_key else None
    p_text = _p_text(m, row.p, p, row.chapter)

    def entry(verdict: str, reason: str) -> GlanceEntry:
        return GlanceEntry(row, value, lo, hi, ref, null, p, p_text, verdict, reason)

    if value is None:
        return entry(NOT_RUN, f"{row.key} not in metrics.json")
    if ref is None:
        return entry(NOT_RUN, f"reference {row.reference} not in metrics.json")
    has_ci = lo is not None and hi is not None
    if not has_ci and p is None:
        return entry(NOT_RUN, f"no CI ({row.ci[0]}, {row.ci[1]}) and no p ({row.p}) recorded")
    recorded = [k for k in row.validity if isinstance(m.get(k), bool)]
    failed = [k for k in recorded if m[k] is False]
    if recorded and len(failed) == len(recorded):
        return entry(NOT_TESTABLE, f"validity check failed: {', '.join(failed)}")
    tests = []
    if has_ci:
        assert lo is not None and hi is not None
        tests.append(lo > ref if row.sign > 0 else hi < ref)
    if p is not None:
        tests.append(p < row.alpha)
    side = "above" if row.sign > 0 else "below"
    if not all(tests):
        return entry(NOT_REPLICATED, f"CI not entirely {side} {ref:g}, or p >= {row.alpha}")
    if row.paper is not None and row.sign * value < 0.5 * row.sign * row.paper:
        return entry(WEAKER, f"significant, but {value:.3g} is less than half the paper's {row.paper:g}")
    return entry(
        REPLICATES,
        f"CI {side} {ref:g}, p < {row.alpha}"
        + (f", and at least half the paper's {row.paper:g}" if row.paper is not None else ""),
    )


def _is_by_model(metrics: Mapping[str, Any]) -> bool:
    return (
        bool(metrics)
        and all(isinstance(v, Mapping) for v in metrics.values())
        and "_provenance" not in metrics
    )


def glance_table(metrics: Mapping[str, Any], rows: Sequence[GlanceRow] | None = None) -> Any:
    """Results at a glance: one row per claim (columns chapter, claim, ours, 95% CI, null, p, paper,
    verdict), for one model's metrics.json dict, or for ``{model: metrics}`` (then a ``model`` column
    comes first and the claims repeat per model)."""
    import pandas as pd

    rows = load_glance_rows() if rows is None else list(rows)
    if _is_by_model(metrics):
        frames = []
        for model, mx in metrics.items():
            t = glance_table(mx, rows)
            t.insert(0, "model", model)
            frames.append(t)
        return pd.concat(frames, ignore_index=True)
    return pd.DataFrame([judge(r, metrics).cells() for r in rows])


@dataclass(frozen=True)
class GlanceSummary:
    """How many claims got each verdict (for the prose)."""

    counts: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, int]:
        names = {
            REPLICATES: "replicates",
            WEAKER: "weaker",
            NOT_REPLICATED: "not_replicated",
            NOT_TESTABLE: "not_testable",
            NOT_RUN: "not_run",
        }
        out = {"glance_n_claims": sum(self.counts.values())}
        out.update({f"glance_n_{names[v]}": int(self.counts.get(v, 0)) for v in VERDICTS})
        return out


def glance_summary(table: Any) -> GlanceSummary:
    """Verdict counts of a :func:`glance_table`."""
    counts = table["verdict"].value_counts()
    return GlanceSummary({v: int(counts.get(v, 0)) for v in VERDICTS})


# ------------------------------------------------------------------------------------ facts for the prose
@dataclass(frozen=True)
class ModelFacts:
    """The model card's headline facts (recorded by chapter 00)."""

    model_name: str
    n_layers: int
    d_model: int
    n_params: int
    default_layer: int
    weights_hash: str
    dtype: str
    device: str

    @classmethod
    def from_model(cls, m: Any) -> ModelFacts:
        from .config import default_layer

        info = m.info
        return cls(
            info.name,
            int(info.n_layers),
            int(info.d_model),
            int(sum(p.numel() for p in m.hf_model.parameters())),
            default_layer(int(info.n_layers)),
            str(info.weights_hash),
            str(info.dtype),
            str(info.device),
        )

    def metrics(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "n_params": self.n_params,
            "n_params_millions": self.n_params / 1e6,
            "default_layer": self.default_layer,
            "weights_hash": self.weights_hash,
        }


@dataclass(frozen=True)
class CorpusFacts:
    """Size of the committed corpus of a model, against the paper's (for the limitations)."""

    stories_per_emotion: int | None
    n_stories: int | None
    n_neutral: int | None
    folder: str

    def metrics(self) -> dict[str, Any]:
        per = self.stories_per_emotion
        return {
            "corpus_stories_per_emotion": per if per is not None else "not available",
            "corpus_n_stories": self.n_stories if self.n_stories is not None else "not available",
            "corpus_n_neutral": self.n_neutral if self.n_neutral is not None else "not available",
            "paper_stories_per_emotion": PAPER_STORIES_PER_EMOTION,
            "corpus_share_of_paper": (per / PAPER_STORIES_PER_EMOTION) if per else "not available",
        }


def corpus_facts(model: str, folder: str | Path | None = None) -> CorpusFacts:
    """Read the corpus size from ``data/corpus/<slug>/provenance.json`` (cheap: the corpus itself is not
    loaded). A model without a corpus gives None counts."""
    from .corpus import corpus_dir_for

    folder = Path(folder) if folder is not None else corpus_dir_for(model)
    prov_path = folder / "provenance.json"
    if not prov_path.exists():
        return CorpusFacts(None, None, None, str(folder))
    prov = json.loads(prov_path.read_text())
    jobs, counts = prov.get("jobs", {}), prov.get("counts", {})
    per = jobs.get("n_per_emotion")
    if per is not None:  # extra story rounds add one story per emotion each
        per = int(per) + int(jobs.get("n_rounds_extra", 0))
    return CorpusFacts(
        int(per) if per is not None else None,
        int(counts["stories"]) if "stories" in counts else None,
        int(counts["neutral"]) if "neutral" in counts else None,
        str(folder),
    )


# ------------------------------------------------------------------------------------------ provenance
def _read_cff(path: str | Path = CITATION_FILE) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.exists():
        return {}
    data = yaml.safe_load(p.read_text()) or {}
    return data if isinstance(data, dict) else {}


def _author(a: Mapping[str, Any]) -> str:
    if a.get("name"):
        return str(a["name"])
    given, family = a.get("given-names", ""), a.get("family-names", "")
    initials = " ".join(f"{g[0]}." for g in str(given).split() if g)
    return f"{family}, {initials}".strip(", ") if family else str(given)


def _year(d: Any) -> str:
    if isinstance(d, (_dt.date, _dt.datetime)):
        return str(d.year)
    return str(d)[:4] if d else "n.d."


def citation_text(path: str | Path = CITATION_FILE) -> dict[str, str]:
    """The book's citation and the original study's, rendered from CITATION.cff: ``{"book": ..., "study":
    ...}`` (empty strings where the file gives nothing)."""
    cff = _read_cff(path)
    out = {"book": "", "study": ""}
    if cff:
        authors = "; ".join(_author(a) for a in cff.get("authors", []) if isinstance(a, Mapping))
        parts = [f"{authors} ({_year(cff.get('date-released'))}).", f"{cff.get('title', '')}."]
        if cff.get("version"):
            parts.append(f"Version {cff['version']}.")
        url = cff.get("url") or cff.get("repository-code") or cff.get("repository")
        if url:
            parts.append(str(url))
        out["book"] = " ".join(p for p in parts if p.strip("."))
        refs = [r for r in cff.get("references", []) if isinstance(r, Mapping)]
        if refs:
            r = refs[0]
            names = [_author(a) for a in r.get("authors", []) if isinstance(a, Mapping)]
            ids = [str(i.get("value")) for i in r.get("identifiers", []) if isinstance(i, Mapping)]
            where = ", ".join(str(x) for x in (r.get("journal"), *ids) if x)
            out["study"] = (
                f"{', '.join(names)} ({_year(r.get('year'))}). {r.get('title', '')}. {where}.".strip()
            )
    return out


def chapter_title(notebook: str, folder: str | Path = NOTEBOOKS_DIR) -> str:
    """The H1 of ``notebooks/<notebook>.ipynb`` (the page title), else the notebook name."""
    path = Path(folder) / f"{notebook}.ipynb"
    try:
        import nbformat

        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                for line in cell.source.splitlines():
                    if line.startswith("# "):
                        return line[2:].strip()
                break
    except (OSError, ValueError):
        pass
    return notebook


def _weights_hash(run: Any, model: Any) -> tuple[str, str]:
    """(hash, where it came from): the loaded model, else what this notebook's provenance or chapter 00
    recorded for this model."""
    if model is not None and getattr(getattr(model, "info", None), "weights_hash", None):
        return str(model.info.weights_hash), "loaded model"
    prov = getattr(run, "provenance", {}) or {}
    if prov.get("weights_hash"):
        return str(prov["weights_hash"]), "this run"
    try:
        metrics = run.metrics()
    except Exception:  # noqa: BLE001 - a missing or unreadable metrics.json only blanks this field
        metrics = {}
    mine = metrics.get("_provenance", {}).get(getattr(run, "notebook", ""), {})
    if isinstance(mine, Mapping) and mine.get("weights_hash"):
        return str(mine["weights_hash"]), "this run"
    if metrics.get("weights_hash"):
        return str(metrics["weights_hash"]), "recorded by chapter 00"
    return "not recorded", ""


class ProvenanceBox:
    """The box's HTML (``_repr_html_`` for Jupyter) with a plain-text fallback (``__repr__``)."""

    def __init__(self, html_text: str, text: str) -> None:
        self.html = html_text
        self.text = text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


_BOX_STYLE = (
    "border:1px solid #c8c8c8;border-radius:6px;padding:0.6em 0.9em;margin:1.5em 0 0.5em 0;"
    "font-size:0.85em;line-height:1.45;background:#fafafa"
)


def provenance_box(
    run: Any, model: Any = None, *, title: str | None = None, citation: str | Path = CITATION_FILE
) -> ProvenanceBox:
    """A small self-contained box (no remote assets) for the end of a chapter: model spec and weights hash,
    seed, quick mode, emolib version, git commit, build date, the config's effective settings (collapsed),
    and how to cite the page. ``run``: the chapter's :class:`emolib.results.Run`; ``model``: the loaded
    model, when the chapter has one (for its weights hash)."""
    prov = getattr(run, "provenance", {}) or {}
    cfg = dict(prov.get("config") or {})
    notebook = getattr(run, "notebook", cfg.get("notebook", ""))
    title = title or chapter_title(notebook)
    whash, whash_src = _weights_hash(run, model)
    spec = str(cfg.get("model", getattr(run, "slug", "")))
    if cfg.get("adapter"):
        spec += f" + adapter {cfg['adapter']}"
    facts = [
        ("model", spec),
        ("weights hash", f"{whash} ({whash_src})" if whash_src else whash),
        ("seed", cfg.get("seed", "")),
        ("quick mode", cfg.get("quick", "")),
        ("device / dtype", f"{cfg.get('device', '')} / {cfg.get('dtype', '')}"),
        ("emolib", prov.get("emolib_version", "")),
        ("git commit", prov.get("git_commit", "")),
        ("built", prov.get("date", "")),
    ]
    from . import store

    if sum(store.COUNTS.values()):  # only pages whose chapter ran stored scoring passes
        facts.append(("scoring passes", store.summary()))
    cite = citation_text(citation)
    e = html.escape
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:1em;font-weight:600'>{e(str(k))}</th>"
        f"<td><code>{e(str(v))}</code></td></tr>"
        for k, v in facts
    )
    settings = "".join(
        f"<tr><td style='padding-right:1em'><code>{e(str(k))}</code></td>"
        f"<td><code>{e(json.dumps(v))}</code></td></tr>"
        for k, v in sorted(cfg.items())
    )
    how = (
        f"Cite a figure or table as <em>“Figure N of chapter ‘{e(title)}’”</em> (N is the number in its "
        f"caption), naming the model above, and cite the book:"
    )
    book = (
        f"<blockquote style='margin:0.3em 0 0.3em 1em'>{e(cite['book'])}</blockquote>" if cite["book"] else ""
    )
    study = (
        (
            f"together with the original study: <blockquote style='margin:0.3em 0 0 1em'>{e(cite['study'])}"
            "</blockquote>"
        )
        if cite["study"]
        else ""
    )
    html_text = (
        f"<div class='emolib-provenance' style='{_BOX_STYLE}'>"
        f"<strong>Provenance of this page</strong> (chapter ‘{e(title)}’; notebook <code>{e(notebook)}</code>)"
        f"<table style='margin:0.4em 0;border:none'>{rows}</table>"
        f"<details><summary>Effective settings of this run ({len(cfg)})</summary>"
        f"<table style='margin:0.3em 0;border:none'>{settings}</table></details>"
        f"<details open><summary><strong>How to cite this page</strong></summary>"
        f"<p style='margin:0.3em 0'>{how}</p>{book}{study}"
        "<p style='margin:0.3em 0 0 0'>Citation metadata: <code>CITATION.cff</code> in the repository. "
        "Numbers on this page are also in <code>results/&lt;model&gt;/metrics.json</code>.</p>"
        "</details></div>"
    )
    text = "\n".join(
        [f"Provenance of this page ({title})", *(f"  {k}: {v}" for k, v in facts), f"  cite: {cite['book']}"]
    )
    return ProvenanceBox(html_text, text)


# ------------------------------------------------------------------------------ hidden parameter cells
def hide_parameter_cells(path: str | Path, out: str | Path | None = None) -> int:
    """Tag the ``parameters`` cell and papermill's ``injected-parameters`` cell of an executed notebook
    ``remove-cell`` (Jupyter Book then drops them from the page; the provenance box shows the values).
    Writes ``out`` (default: in place) and returns how many cells are hidden. Idempotent."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    n = 0
    for cell in nb.cells:
        tags = list(cell.get("metadata", {}).get("tags", []))
        if any(t in tags for t in PARAMETER_TAGS):
            if HIDE_TAG not in tags:
                tags.append(HIDE_TAG)
            cell.setdefault("metadata", {})["tags"] = tags
            n += 1
    nbformat.write(nb, str(out or path))
    return n


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m emolib.report hide NOTEBOOK.ipynb [...]``"""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "hide":
        print("usage: python -m emolib.report hide NOTEBOOK.ipynb [NOTEBOOK.ipynb ...]", file=sys.stderr)
        return 2
    for p in args[1:]:
        n = hide_parameter_cells(p)
        if n == 0:
            print(f"warning: {p} has no parameters cell to hide", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
