"""Emotion words, story topics and human ratings: loaded and validated.

Every loader checks its file and fails with a ``ValueError`` that names the file and the problem
(unknown or duplicate emotion, missing column, wrong type), rather than letting a bad row travel on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from .constants import EMOTIONS_FILE, PROMPTS_DIR, TOPICS_FILE


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json_object(path: str | Path) -> dict:
    """A JSON object from ``path``; ValueError (naming the file) if it is not valid JSON or not an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def load_prompt_file(name: str, folder: str | Path = PROMPTS_DIR) -> dict:
    """One of our prompt sets in ``data/prompts/`` (implicit-emotion messages, intensity templates)."""
    path = Path(folder) / name
    if not path.exists():
        raise FileNotFoundError(f"Prompt file not found: {path}")
    return read_json_object(path)


def _load_string_list(path: str | Path, what: str) -> list[str]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: expected a non-empty JSON list of strings")
    bad = [i for i, x in enumerate(items) if not isinstance(x, str) or not x.strip()]
    if bad:
        raise ValueError(f"{path}: entries {bad[:5]} are not non-empty strings")
    seen: set[str] = set()
    dups = [x for x in items if x.strip().lower() in seen or seen.add(x.strip().lower())]
    if dups:
        raise ValueError(f"{path}: duplicate {what} entries: {sorted(set(dups))}")
    return [x.strip() for x in items]


def load_emotions(path: str | Path = EMOTIONS_FILE) -> list[str]:
    """The emotion words, in file order (this order indexes every vector matrix)."""
    return [e.lower() for e in _load_string_list(path, "emotion")]


def load_topics(path: str | Path = TOPICS_FILE) -> list[str]:
    return _load_string_list(path, "topic")


def check_emotions(requested: Iterable[str], known: list[str]) -> list[str]:
    """Return ``requested`` lower-cased, or raise ValueError naming the unknown ones."""
    req = [str(r).strip().lower() for r in requested]
    unknown = [r for r in req if r not in set(known)]
    if unknown:
        raise ValueError(
            f"Unknown emotion(s) {unknown}; known are the {len(known)} words of emotions_171.json"
        )
    return req


# Plain sentences for the model card's residual-norm profile (our own wording).
PLAIN_SENTENCES = (
    "The train to the coast leaves every morning at half past seven.",
    "She put the kettle on and looked out at the garden while it boiled.",
    "Our committee meets on the first Tuesday of each month in the library.",
    "He folded the map, checked the tyres and drove north along the river.",
    "The recipe needs two eggs, a cup of flour and a pinch of salt.",
    "Rain is expected in the afternoon, clearing by the evening.",
)
