"""Our prompt sets in ``data/prompts/``, loaded into typed, frozen records and checked on the way in.

Every loader reads one JSON object (``emolib.stimuli.read_json_object``) and fails with a ``ValueError``
that names the file, the entry (list name, index and, where there is one, its id) and what is wrong:
a missing or misspelt field, an empty text, a duplicate id or text, an emotion outside the 171 words,
an intensity template without ``{x}``, values that do not rise, a category count that is off. A missing
file raises ``FileNotFoundError`` (as the other loaders in ``emolib.stimuli`` do).

Files and loaders:

* ``implicit_emotion.json`` -> :func:`load_implicit` (messages implying an emotion, neutral baseline)
* ``intensity.json`` -> :func:`load_intensity` (numeric templates whose quantity raises danger or loss)
* ``activities.json`` -> :func:`load_activities` (64 activities for the preference / Elo experiment)
* ``sycophancy.json`` -> :func:`load_sycophancy` (flawed work with a sycophantic and an honest reply)
* ``posttrain_prompts.json`` -> :func:`load_posttrain_prompts` (measurement prompts by kind, and
  fine-tuning prompts kept disjoint from them)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .constants import PROMPTS_DIR
from .stimuli import load_emotions, read_json_object

IMPLICIT_FILE = PROMPTS_DIR / "implicit_emotion.json"
INTENSITY_FILE = PROMPTS_DIR / "intensity.json"
ACTIVITIES_FILE = PROMPTS_DIR / "activities.json"
SYCOPHANCY_FILE = PROMPTS_DIR / "sycophancy.json"
POSTTRAIN_FILE = PROMPTS_DIR / "posttrain_prompts.json"

ACTIVITY_CATEGORIES = (
    "pleasant", "useful", "creative", "social", "boring", "unpleasant", "harmful", "self_related",
)  # fmt: skip
ACTIVITIES_PER_CATEGORY = 8
ACTIVITY_WORDS = (5, 12)  # inclusive range of words in an activity text
# The sentence frames an activity text must fit (it is a bare verb phrase, lower-case, unpunctuated).
PREFERENCE_FRAME = "Would you prefer to (A) {a} or (B) {b}?"
RATHER_FRAME = "I would rather {a}."
FEELING_FRAME = "How would you feel about {a}?"

PLACEHOLDER = "{x}"
MIN_INTENSITY_VALUES = 3
# A sycophantic and an honest reply may differ in length (characters) by at most this share of the longer.
REPLY_LENGTH_TOLERANCE = 0.2

POSTTRAIN_KINDS = ("neutral", "challenging", "self")
TRAINING_CATEGORIES = ("everyday", "advice", "emotional", "self")


# ----------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class ImplicitPrompt:
    text: str
    expected: str  # one of the 171 emotion words, lower-case


@dataclass(frozen=True)
class ImplicitPrompts:
    prompts: tuple[ImplicitPrompt, ...]
    neutral: tuple[str, ...]


@dataclass(frozen=True)
class IntensityTemplate:
    name: str
    text: str  # contains "{x}" exactly once and no other braces
    values: tuple[float, ...]  # strictly increasing (ints stay ints)

    def fill(self, value: float) -> str:
        """The template with ``{x}`` replaced by ``value`` (integral values written without a decimal point)."""
        return self.text.replace(PLACEHOLDER, format_value(value))

    def filled(self) -> tuple[str, ...]:
        return tuple(self.fill(v) for v in self.values)


@dataclass(frozen=True)
class Activity:
    id: str
    category: str
    text: str  # bare verb phrase: "watch the sun set over a quiet mountain lake"


@dataclass(frozen=True)
class SycophancyScenario:
    id: str
    domain: str
    user: str
    flaw: str
    sycophantic: str
    honest: str


@dataclass(frozen=True)
class ClearCutPair:
    id: str
    user: str
    sycophantic: str
    honest: str


@dataclass(frozen=True)
class SycophancySet:
    scenarios: tuple[SycophancyScenario, ...]
    clear_cut: tuple[ClearCutPair, ...]


@dataclass(frozen=True)
class PosttrainPrompt:
    id: str
    kind: str  # one of POSTTRAIN_KINDS
    text: str


@dataclass(frozen=True)
class TrainingPrompt:
    id: str
    category: str  # one of TRAINING_CATEGORIES
    text: str


@dataclass(frozen=True)
class PosttrainPrompts:
    neutral: tuple[PosttrainPrompt, ...]
    challenging: tuple[PosttrainPrompt, ...]
    self: tuple[PosttrainPrompt, ...]
    training: tuple[TrainingPrompt, ...]

    def by_kind(self, kind: str) -> tuple[PosttrainPrompt, ...]:
        """The measurement prompts of one kind (``neutral``, ``challenging`` or ``self``)."""
        if kind not in POSTTRAIN_KINDS:
            raise ValueError(f"Unknown post-training prompt kind {kind!r}; expected one of {POSTTRAIN_KINDS}")
        return getattr(self, kind)

    @property
    def measurement(self) -> tuple[PosttrainPrompt, ...]:
        """All measurement prompts, kinds in the order of POSTTRAIN_KINDS."""
        return self.neutral + self.challenging + self.self


# ----------------------------------------------------------------------------------------------- helpers
def format_value(value: float) -> str:
    """``200`` -> "200", ``98.6`` -> "98.6", ``500.0`` -> "500"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def normalize_text(text: str) -> str:
    """Lower-cased text with punctuation dropped and whitespace collapsed (the key for duplicate checks)."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


class _File:
    """One prompt file being validated: builds error messages that name the file and the entry."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"Prompt file not found: {self.path}")
        self.data = read_json_object(self.path)

    def error(self, where: str, what: str) -> ValueError:
        return ValueError(f"{self.path}: {where}: {what}")

    def top_list(self, key: str) -> list:
        if key not in self.data:
            raise self.error("top level", f"missing list {key!r} (found keys {sorted(self.data)})")
        items = self.data[key]
        if not isinstance(items, list) or not items:
            raise self.error(f"{key!r}", "expected a non-empty JSON list")
        return items

    @staticmethod
    def where(key: str, index: int, item: Any) -> str:
        ident = item.get("id") if isinstance(item, dict) else None
        return f"{key}[{index}]" + (f" (id {ident!r})" if isinstance(ident, str) and ident else "")

    def record(self, key: str, index: int, item: Any, fields: Sequence[str]) -> dict[str, Any]:
        """Check ``item`` is an object with exactly ``fields``; return it."""
        where = self.where(key, index, item)
        if not isinstance(item, dict):
            raise self.error(
                where, f"expected an object with fields {list(fields)}, got {type(item).__name__}"
            )
        missing = [f for f in fields if f not in item]
        if missing:
            raise self.error(where, f"missing field(s) {missing}")
        unknown = sorted(set(item) - set(fields))
        if unknown:
            raise self.error(where, f"unknown field(s) {unknown}; expected {list(fields)}")
        return item

    def text(self, where: str, item: dict, field: str) -> str:
        value = item[field]
        if not isinstance(value, str) or not value.strip():
            raise self.error(where, f"field {field!r} must be a non-empty string, got {value!r}")
        return value.strip()

    def unique(self, entries: Iterable[tuple[str, str]], what: str, key=lambda s: s) -> None:
        """``entries`` are (where, value) pairs; fail at the first value whose key was seen before."""
        seen: dict[str, str] = {}
        for where, value in entries:
            k = key(value)
            if k in seen:
                raise self.error(where, f"duplicate {what} {value!r} (first at {seen[k]})")
            seen[k] = where

    def ids_and_texts(self, rows: list[tuple[str, Any]], text_fields: Sequence[str]) -> None:
        """Ids unique; each of ``text_fields`` unique (lower-cased, punctuation ignored) across ``rows``."""
        self.unique(((w, r.id) for w, r in rows), "id")
        for field in text_fields:
            entries = ((w, getattr(r, field)) for w, r in rows)
            self.unique(entries, f"{field} (compared lower-cased, punctuation ignored)", key=normalize_text)


def _similar_lengths(f: _File, where: str, sycophantic: str, honest: str) -> None:
    a, b = len(sycophantic), len(honest)
    if abs(a - b) > REPLY_LENGTH_TOLERANCE * max(a, b):
        raise f.error(
            where,
            f"replies differ too much in length ({a} vs {b} characters; at most "
            f"{REPLY_LENGTH_TOLERANCE:.0%} of the longer), so length could decide the readout",
        )
    if normalize_text(sycophantic) == normalize_text(honest):
        raise f.error(where, "the sycophantic and honest replies are the same text")


# ----------------------------------------------------------------------------------------------- loaders
def load_implicit(path: str | Path = IMPLICIT_FILE, emotions: Sequence[str] | None = None) -> ImplicitPrompts:
    """User messages implying an emotion (``expected`` checked against ``emotions``, default the 171 words)."""
    f = _File(path)
    known = [e.lower() for e in (load_emotions() if emotions is None else emotions)]
    known_set = set(known)
    prompts: list[tuple[str, ImplicitPrompt]] = []
    for i, item in enumerate(f.top_list("prompts")):
        where = f.where("prompts", i, item)
        f.record("prompts", i, item, ("text", "expected"))
        expected = f.text(where, item, "expected").lower()
        if expected not in known_set:
            raise f.error(
                where, f"unknown emotion {expected!r} in 'expected' (not one of the {len(known)} words)"
            )
        prompts.append((where, ImplicitPrompt(f.text(where, item, "text"), expected)))
    neutral: list[tuple[str, str]] = []
    for i, item in enumerate(f.top_list("neutral")):
        where = f"neutral[{i}]"
        if not isinstance(item, str) or not item.strip():
            raise f.error(where, f"expected a non-empty string, got {item!r}")
        neutral.append((where, item.strip()))
    texts = [(w, p.text) for w, p in prompts] + neutral
    f.unique(texts, "text (compared lower-cased, punctuation ignored)", key=normalize_text)
    return ImplicitPrompts(tuple(p for _, p in prompts), tuple(t for _, t in neutral))


def load_intensity(path: str | Path = INTENSITY_FILE) -> tuple[IntensityTemplate, ...]:
    """Numeric templates: ``text`` holds ``{x}`` once; at least 3 strictly increasing finite ``values``."""
    f = _File(path)
    out: list[tuple[str, IntensityTemplate]] = []
    for i, item in enumerate(f.top_list("templates")):
        where = f.where("templates", i, item)
        f.record("templates", i, item, ("name", "text", "values"))
        name, text = f.text(where, item, "name"), f.text(where, item, "text")
        where = f"templates[{i}] (name {name!r})"
        if text.count(PLACEHOLDER) != 1:
            raise f.error(where, f"text must contain {PLACEHOLDER!r} exactly once: {text!r}")
        if "{" in text.replace(PLACEHOLDER, "") or "}" in text.replace(PLACEHOLDER, ""):
            raise f.error(where, f"text has braces other than {PLACEHOLDER!r}: {text!r}")
        values = item["values"]
        if not isinstance(values, list) or len(values) < MIN_INTENSITY_VALUES:
            raise f.error(
                where, f"'values' must be a list of at least {MIN_INTENSITY_VALUES} numbers: {values!r}"
            )
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise f.error(where, f"'values' must be finite numbers; found {v!r}")
        for a, b in zip(values, values[1:]):
            if not b > a:
                raise f.error(where, f"'values' must be strictly increasing; {a!r} is followed by {b!r}")
        out.append((where, IntensityTemplate(name, text, tuple(values))))
    f.unique(((w, t.name) for w, t in out), "name")
    return tuple(t for _, t in out)


def load_activities(path: str | Path = ACTIVITIES_FILE) -> tuple[Activity, ...]:
    """The preference activities: 8 categories x 8, unique ids and texts, each a bare verb phrase."""
    f = _File(path)
    rows: list[tuple[str, Activity]] = []
    lo, hi = ACTIVITY_WORDS
    for i, item in enumerate(f.top_list("activities")):
        where = f.where("activities", i, item)
        f.record("activities", i, item, ("id", "category", "text"))
        a = Activity(*(f.text(where, item, k) for k in ("id", "category", "text")))
        if a.category not in ACTIVITY_CATEGORIES:
            raise f.error(where, f"unknown category {a.category!r}; expected one of {ACTIVITY_CATEGORIES}")
        if not a.text[0].islower():
            raise f.error(
                where, f"text must start with a lower-case letter to fit the sentence frames: {a.text!r}"
            )
        if not a.text[-1].isalnum():
            raise f.error(where, f"text must not end with punctuation (the frames add it): {a.text!r}")
        if "\n" in a.text or not lo <= len(a.text.split()) <= hi:
            raise f.error(where, f"text must be one line of {lo}-{hi} words: {a.text!r}")
        rows.append((where, a))
    f.ids_and_texts(rows, ("text",))
    counts = {c: sum(a.category == c for _, a in rows) for c in ACTIVITY_CATEGORIES}
    wrong = {c: n for c, n in counts.items() if n != ACTIVITIES_PER_CATEGORY}
    if wrong:
        raise f.error(
            "activities", f"each category needs exactly {ACTIVITIES_PER_CATEGORY} activities; found {wrong}"
        )
    return tuple(a for _, a in rows)


def load_sycophancy(path: str | Path = SYCOPHANCY_FILE) -> SycophancySet:
    """Flawed-work scenarios and blatant clear-cut pairs, each with a sycophantic and an honest reply."""
    f = _File(path)
    rows: list[tuple[str, Any]] = []
    scen_fields = ("id", "domain", "user", "flaw", "sycophantic", "honest")
    for i, item in enumerate(f.top_list("scenarios")):
        where = f.where("scenarios", i, item)
        f.record("scenarios", i, item, scen_fields)
        s = SycophancyScenario(*(f.text(where, item, k) for k in scen_fields))
        _similar_lengths(f, where, s.sycophantic, s.honest)
        rows.append((where, s))
    n_scen = len(rows)
    pair_fields = ("id", "user", "sycophantic", "honest")
    for i, item in enumerate(f.top_list("clear_cut")):
        where = f.where("clear_cut", i, item)
        f.record("clear_cut", i, item, pair_fields)
        p = ClearCutPair(*(f.text(where, item, k) for k in pair_fields))
        _similar_lengths(f, where, p.sycophantic, p.honest)
        rows.append((where, p))
    f.ids_and_texts(rows, ("user",))
    return SycophancySet(tuple(r for _, r in rows[:n_scen]), tuple(r for _, r in rows[n_scen:]))


def load_posttrain_prompts(path: str | Path = POSTTRAIN_FILE) -> PosttrainPrompts:
    """Measurement prompts by kind, and fine-tuning prompts; ids and texts unique over all four lists, so
    the training prompts are disjoint from the measured ones (compared lower-cased, punctuation ignored)."""
    f = _File(path)
    rows: list[tuple[str, Any]] = []
    by_kind: dict[str, tuple[PosttrainPrompt, ...]] = {}
    for kind in POSTTRAIN_KINDS:
        got = []
        for i, item in enumerate(f.top_list(kind)):
            where = f.where(kind, i, item)
            f.record(kind, i, item, ("id", "kind", "text"))
            p = PosttrainPrompt(*(f.text(where, item, k) for k in ("id", "kind", "text")))
            if p.kind != kind:
                raise f.error(where, f"kind {p.kind!r} does not match the list it is in ({kind!r})")
            got.append(p)
            rows.append((where, p))
        by_kind[kind] = tuple(got)
    training = []
    for i, item in enumerate(f.top_list("training")):
        where = f.where("training", i, item)
        f.record("training", i, item, ("id", "category", "text"))
        t = TrainingPrompt(*(f.text(where, item, k) for k in ("id", "category", "text")))
        if t.category not in TRAINING_CATEGORIES:
            raise f.error(where, f"unknown category {t.category!r}; expected one of {TRAINING_CATEGORIES}")
        training.append(t)
        rows.append((where, t))
    f.ids_and_texts(rows, ("text",))
    return PosttrainPrompts(**by_kind, training=tuple(training))
