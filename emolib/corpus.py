"""The story corpus, written by the model under study (as in the paper).

- :func:`build_jobs` lays out every story (emotion x topic x narration) and every neutral dialogue, in a
  fixed round-robin order, so that a corpus cut short still covers every emotion evenly.
- :func:`generate_corpus` samples them in batches with a KV cache, appends finished records to a JSONL
  file and, when rerun, resumes where it stopped: finished records are never redone or lost. Each batch
  has its own seed, so an interrupted and resumed run gives the same texts as an uninterrupted one.
- :func:`leak_pattern` / :func:`quality` flag stories that name their emotion and degenerate generations.

The prompt wording is our own.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from . import __version__
from .generate import Sampling, sample_batch

# --- prompts (our own wording) ------------------------------------------------------------------

STORY_CHAT = (
    "Write a short story of one paragraph (about 90 words) about this situation: {topic}. "
    "Tell it in the {person} person. The main character feels {emotion}. Let the reader sense that "
    "feeling only through what the character does, what their body feels, what they say and what they "
    'think. Never write the word "{emotion}" or any synonym of it. End the story with a complete sentence.'
)
STORY_BASE = (  # a base model continues a document: a writing exercise whose story starts after a blank line
    "Writing exercise: a one-paragraph story in the {person} person. Situation: {topic}. Feeling to convey "
    "without naming it: {emotion}.\n\nStory:\n\n"
)
NEUTRAL_CHAT = (
    "Write a short conversation between a Human and an AI Assistant about this practical subject: {topic}. "
    'Give three exchanges, each line starting with "Human:" or "Assistant:". Use only plain facts, '
    "numbers and instructions. Do not describe anyone's feelings, moods or reactions, and do not use "
    "words for feelings at all."
)
NEUTRAL_BASE = (
    "Below is a transcript of a strictly factual exchange between a Human and an AI Assistant about this "
    "practical subject: {topic}. It contains only facts, numbers and instructions.\n\nHuman:"
)
PERSONS = ("first", "third")
DEFAULT_SAMPLING = Sampling()
CORPUS_SAMPLING = Sampling(batch_size=128, max_new_tokens=256)  # the settings of `python -m emolib.corpus`
# A base model writes on past its story: it is stopped at its first paragraph break after 90 tokens, so
# that a story keeps tokens past the vectors' token offset (50) once it ends.
BASE_CORPUS_SAMPLING = Sampling(batch_size=64, max_new_tokens=256, min_new_tokens=90, stop_strings=("\n\n",))


# Corpora made with earlier prompt wordings (the texts are in the git history at the named commit).
EARLIER_PROMPTS = {
    "f610bacd8716f3c6": "v1: 20 stories per emotion, 144-token cap (prompts as of commit 4dfe2e2)"
}


def prompts_hash(chat: bool = True) -> str:
    """Hash of the wording a model is given: the chat prompts for a model with a chat template, the
    document openings for a base model."""
    parts = [STORY_CHAT, NEUTRAL_CHAT] if chat else [STORY_BASE, NEUTRAL_BASE]
    text = "\x1e".join([*parts, *PERSONS])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Corpus v2 recorded one hash of the chat and base wordings together (before hashes were per format, and
# before the base wording changed); its chat wording is the one above, so it counts as this chat hash.
SAME_PROMPTS = {"a279371ba3c31b31": prompts_hash(chat=True)}


def _recorded_prompts_hash(prov: dict[str, Any]) -> str | None:
    h = prov.get("prompts_hash")
    return SAME_PROMPTS.get(h, h)


@dataclass(frozen=True)
class Job:
    id: str
    kind: Literal["story", "neutral"]
    emotion: str | None
    topic_index: int
    topic: str
    person: str | None


def story_topic_index(emotion_index: int, j: int, n_topics: int) -> int:
    """Topic of the j-th story of an emotion in the crossed design: rounds j = 0..n_topics-1 give every
    emotion every topic exactly once, and within one round neighbouring emotions get different topics."""
    return (emotion_index * 7 + j) % n_topics


def build_jobs(
    emotions: list[str],
    topics: list[str],
    n_per_emotion: int,
    n_neutral: int,
    neutral_subjects: list[str] | None = None,
    n_neutral_extra: int = 0,
    n_rounds_extra: int = 0,
) -> list[Job]:
    """All jobs, round-robin: story round j covers every emotion once, and neutral dialogues are spread
    evenly between rounds. ``n_neutral_extra`` more neutral dialogues come after the last round, so that a
    finished corpus can be given more of them (:func:`run_corpus` batches them on their own, after the
    others' batches, so no earlier batch or seed changes).

    Crossed design: story j of emotion i is about topic ``(7 i + j) % len(topics)``, so with
    ``n_per_emotion == len(topics)`` every emotion covers every topic once (topic content can then be
    removed by centring on topic means), and a corpus cut short after r rounds still gives every emotion
    r stories on consecutive topics. Neutral dialogues cycle through ``neutral_subjects`` (default: the
    story topics).

    ``n_rounds_extra`` more story rounds come last (after the extra neutral dialogues), so that a finished
    corpus can be given more stories per emotion without changing any earlier job: round j keeps the topic
    rule above (rounds past the topic count start a new pass over the topics) and flips the narration on
    each pass, so a topic's second story of an emotion is told in the other person."""
    if min(n_per_emotion, n_neutral, n_neutral_extra, n_rounds_extra) < 0:
        raise ValueError("n_per_emotion, n_neutral, n_neutral_extra and n_rounds_extra must be >= 0")
    if n_per_emotion > len(topics):
        raise ValueError(
            f"n_per_emotion ({n_per_emotion}) exceeds the {len(topics)} topics of the crossed design"
        )
    subjects = neutral_subjects or topics
    stories = []
    for j in range(n_per_emotion + n_rounds_extra):
        for i, e in enumerate(emotions):
            t = story_topic_index(i, j, len(topics))
            # the narration flips on each pass over the topics
            person = PERSONS[(i + j + j // len(topics)) % 2]
            stories.append(Job(f"story-{i:03d}-{j:03d}", "story", e, t, topics[t], person))
    stories, more = stories[: n_per_emotion * len(emotions)], stories[n_per_emotion * len(emotions) :]
    neutral = [
        Job(f"neutral-{k:04d}", "neutral", None, k % len(subjects), subjects[k % len(subjects)], None)
        for k in range(n_neutral + n_neutral_extra)
    ]
    neutral, extra = neutral[:n_neutral], neutral[n_neutral:]
    rounds = max(n_per_emotion, 1)
    per_round = -(-len(neutral) // rounds) if neutral else 0
    jobs: list[Job] = []
    for r in range(rounds):
        jobs.extend(neutral[r * per_round : (r + 1) * per_round])
        jobs.extend(stories[r * len(emotions) : (r + 1) * len(emotions)])
    return jobs + extra + more


def render_prompt(job: Job, tokenizer: Any) -> str:
    """The exact prompt string: the chat format of :mod:`emolib.chat` for chat models, a story opening
    (or transcript opening) for base models."""
    from .chat import user_turn, uses_template

    chat = uses_template(tokenizer)
    if job.kind == "story":
        tpl = STORY_CHAT if chat else STORY_BASE
        body = tpl.format(topic=job.topic.rstrip("."), person=job.person, emotion=job.emotion)
    else:
        tpl = NEUTRAL_CHAT if chat else NEUTRAL_BASE
        body = tpl.format(topic=job.topic.rstrip("."))
    return user_turn(tokenizer, body) if chat else body


# --- quality ------------------------------------------------------------------------------------


def _forms(word: str) -> set[str]:
    """The word with its regular inflections and close derivations. Whole forms only: a bare stem followed
    by any letters over-matched (happy -> happened, content -> continue, mad -> made, playful -> player)."""
    w = word.lower()
    forms = {w} | {
        w + s for s in ("s", "es", "ly", "ness", "ment", "ed", "d", "ing", "er", "est", "ity", "edly")
    }
    if w.endswith("y"):
        forms |= {w[:-1] + s for s in ("ies", "ied", "ily", "iness", "ier", "iest")}
    if w.endswith("e"):
        forms |= {w[:-1] + s for s in ("ing", "ion", "ation", "ity", "y")}
    if w.endswith("c"):  # panic -> panicked, panicky
        forms |= {w + "k" + s for s in ("ed", "ing", "y", "s")}
    if w.endswith("ed") and len(w) > 5:  # participles: frightened -> frightening, amazed -> amazement
        stem = w[:-3] + "y" if w.endswith("ied") else w[:-2]
        forms |= {stem + "ing", stem + "ment", w[:-1] + "ment"}
        if stem.endswith("e"):
            forms.add(stem[:-1] + "ing")
    if w.endswith("ous"):  # anxious -> anxiety
        forms.add(w[:-3] + "ety")
    if len(w) <= 4 and w[-1] not in "aeiouy":  # mad -> madder, sad -> saddest
        forms |= {w + w[-1] + s for s in ("er", "est", "ed", "ing", "en", "ened")}
    return forms


def leak_pattern(emotion: str) -> re.Pattern[str]:
    """A regex for the emotion word and its inflections/derivations, as whole words (``desperate`` also
    matches ``desperately`` and ``desperation``; ``happy`` matches ``happiness``; ``panic`` matches
    ``panicked``; ``content`` does not match ``continue``). Multi-word emotions (``at ease``) match as a
    phrase, with spaces or hyphens."""
    words = re.split(r"[\s-]+", emotion.strip().lower())
    if len(words) > 1:
        return re.compile(r"\b" + r"[\s-]+".join(re.escape(w) for w in words) + r"\b", re.I)
    alts = sorted(_forms(words[0]), key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(f) for f in alts) + r")\b", re.I)


def leak_spans(text: str, emotion: str) -> list[tuple[int, int]]:
    return [m.span() for m in leak_pattern(emotion).finditer(text)]


@functools.lru_cache(maxsize=8)
def _word_index(emotions: tuple[str, ...]) -> tuple[dict[str, str], tuple[tuple[str, re.Pattern[str]], ...]]:
    """Single-word forms -> emotion, and the phrase patterns of multi-word emotions."""
    owner: dict[str, str] = {}
    phrases = []
    for e in emotions:
        words = re.split(r"[\s-]+", e.strip().lower())
        if len(words) > 1:
            phrases.append((e, leak_pattern(e)))
        else:
            for f in _forms(words[0]):
                owner.setdefault(f, e)
    return owner, tuple(phrases)


def emotion_words_in(text: str, emotions: Sequence[str]) -> list[str]:
    """The emotions whose word (or an inflection, as in :func:`leak_pattern`) occurs in ``text``."""
    owner, phrases = _word_index(tuple(emotions))
    found = {owner[w] for w in re.findall(r"[a-z]+", text.lower()) if w in owner}
    found |= {e for e, pat in phrases if pat.search(text)}
    return [e for e in emotions if e in found]


DEGENERATE_RULE = (
    "a generation is dropped as degenerate when it has fewer than 30 words, or when fewer than half of its "
    "word trigrams are distinct (a loop)"
)


def degenerate_reason(text: str) -> str | None:
    """``None`` for a usable text, else why it is dropped (see :data:`DEGENERATE_RULE`)."""
    words = re.findall(r"\w+", text.lower())
    if len(words) < 30:
        return "too_short"
    tri = list(zip(words, words[1:], words[2:]))
    if len(set(tri)) < 0.5 * len(tri):
        return "looping"
    return None


# --- the corpus file: plain while it is written, gzip-compressed once finished ---------------------------

CORPUS_FILE = "corpus.jsonl"
COMPRESSED_FILE = "corpus.jsonl.gz"


def corpus_file(folder: str | Path) -> Path:
    """The corpus file in ``folder``: ``corpus.jsonl`` (appended to while a corpus is generated) or, for a
    finished corpus compressed by :func:`compress_corpus`, ``corpus.jsonl.gz``. Neither there: the plain path
    (which does not exist). Both there is an error: which one is the corpus would be a guess."""
    folder = Path(folder)
    plain, packed = folder / CORPUS_FILE, folder / COMPRESSED_FILE
    if plain.exists() and packed.exists():
        raise ValueError(
            f"{folder} holds both {CORPUS_FILE} and {COMPRESSED_FILE}; keep one (python -m emolib.corpus "
            f"--compress {folder} or --expand {folder} replaces one by the other)"
        )
    return packed if packed.exists() else plain


def _decompress(data: bytes, path: Path) -> bytes:
    import gzip
    import zlib

    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: not a complete gzip file ({e}); restore it from version control") from e


def _read_bytes(path: Path) -> bytes:
    """The content of a JSONL file, decompressed if its name ends in ``.gz``."""
    data = path.read_bytes()
    return _decompress(data, path) if path.suffix == ".gz" else data


def content_sha256(path: str | Path) -> str:
    """The sha256 of a corpus file's JSONL content: the same for ``corpus.jsonl`` and its compressed copy,
    so compressing a corpus changes neither its recorded hash nor the result-store keys built on it."""
    return hashlib.sha256(_read_bytes(Path(path))).hexdigest()


def _recorded_sha(folder: Path) -> str | None:
    prov = folder / "provenance.json"
    return json.loads(prov.read_text()).get("corpus_sha256") if prov.exists() else None


def _convert(src: Path, dst: Path, content: Callable[[bytes], bytes]) -> Path:
    """Write ``content(bytes of src)`` to ``dst`` atomically, then remove ``src``; refused when ``src`` is
    missing or ``dst`` exists (the two forms of one corpus never live side by side)."""
    if not src.exists():
        raise FileNotFoundError(f"No {src.name} in {src.parent} to convert")
    if dst.exists():
        raise ValueError(f"{dst} exists already; remove one of the two files first")
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.write_bytes(content(src.read_bytes()))
    os.replace(tmp, dst)
    src.unlink()
    return dst


def compress_corpus(folder: str | Path) -> Path:
    """Replace a finished ``folder/corpus.jsonl`` by ``corpus.jsonl.gz`` (deterministic bytes: no name or
    time in the gzip header), after checking that the copy decompresses to the same content and that this
    content is the one ``provenance.json`` records. A corpus committed this way takes under a third of the
    space (SmolLM2's 200-per-emotion corpus: 10.6 MB for 36 MB). Returns the compressed file."""
    import gzip

    folder = Path(folder)
    plain = folder / CORPUS_FILE

    def pack(data: bytes) -> bytes:
        sha = hashlib.sha256(data).hexdigest()
        recorded = _recorded_sha(folder)
        if recorded != sha:
            raise ValueError(
                f"{plain} is not the corpus its provenance.json describes (recorded sha256 {recorded}, file "
                f"{sha}); only a finished corpus with its provenance is compressed"
            )
        blob = gzip.compress(data, compresslevel=9, mtime=0)
        if gzip.decompress(blob) != data:  # pragma: no cover - a broken zlib
            raise RuntimeError("gzip round trip changed the corpus; nothing was replaced")
        return blob

    return _convert(plain, folder / COMPRESSED_FILE, pack)


def expand_corpus(folder: str | Path) -> Path:
    """The reverse of :func:`compress_corpus` (a compressed corpus is expanded before it is extended):
    writes ``corpus.jsonl`` from ``corpus.jsonl.gz`` and removes the compressed file. Returns the plain file."""
    folder = Path(folder)
    packed = folder / COMPRESSED_FILE
    return _convert(packed, folder / CORPUS_FILE, lambda data: _decompress(data, packed))


def _parse_jsonl(data: bytes, path: Path) -> list[dict[str, Any]]:
    """Records of JSONL content read from ``path`` (named in errors); see :func:`read_jsonl`."""
    lines = data.decode("utf-8").split("\n")
    out = []
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if n == len(lines) - 1:
                break
            raise ValueError(f"{path}: line {n + 1} is not valid JSON ({e})") from e
    return out


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSONL file (gzip-compressed if its name ends in ``.gz``). A torn last line (a run killed
    mid-write) is ignored; a malformed line elsewhere is an error."""
    path = Path(path)
    if not path.exists():
        return []
    return _parse_jsonl(_read_bytes(path), path)


def _append(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Append the records whose id is not in the file yet, under an exclusive lock (several processes may
    write one corpus, see ``shard`` in :func:`generate_corpus`); returns how many were written."""
    with open(path, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            have = _ids_in(path)
            new = [r for r in records if r["id"] not in have]
            for r in new:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    return len(new)


def _ids_in(path: Path) -> set[str]:
    """The ids written to a JSONL file so far (a torn last line, being written elsewhere, is skipped)."""
    if not path.exists():
        return set()
    ids = set()
    for line in _read_bytes(path).decode("utf-8").split("\n"):
        try:
            ids.add(json.loads(line)["id"])
        except (ValueError, KeyError, TypeError):
            continue
    return ids


def _repair_tail(path: Path) -> None:
    """Cut a torn last line so that appends start on a fresh line (under the append lock, so a line another
    process is writing is never cut)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            data = f.read()
            if not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def pending_batches(items: Sequence[Any], out_path: Path, batch_size: int) -> tuple[set[str], list, int]:
    """The resume bookkeeping of an append-only JSONL of records keyed by ``item.id``: repairs a torn last
    line, and returns (ids already written, the (batch index, batch) pairs with something missing, how many
    of ``items`` are done). Batches are fixed slices of ``items``, so batch b always gets the same seed."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _repair_tail(out_path)
    done = {r["id"] for r in read_jsonl(out_path)}
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("Ids are not unique")
    batches = [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
    todo = [(b, batch) for b, batch in enumerate(batches) if any(it.id not in done for it in batch)]
    return done, todo, len(done & set(ids))


@dataclass
class GenerationReport:
    n_jobs: int
    n_done_before: int
    n_generated: int
    new_tokens: int
    seconds: float
    batches: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else float("nan")


def generate_batch(
    hf_model: Any, tokenizer: Any, prompts: list[str], sampling: Sampling, seed: int
) -> list[tuple[str, int, bool]]:
    """Sample continuations for ``prompts`` (see :func:`emolib.generate.sample_batch`). Returns
    (text, n_new_tokens, hit_eos) per prompt."""
    from .chat import encode

    ids = [encode(tokenizer, p) for p in prompts]
    stops = sampling.stop_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops or [0])[0]
    outs = sample_batch(hf_model, ids, sampling, seed, stop_ids=stops, pad_id=pad)
    return [(tokenizer.decode(new, skip_special_tokens=True).strip(), len(new), eos) for new, eos in outs]


def generate_corpus(
    hf_model: Any,
    tokenizer: Any,
    jobs: list[Job],
    out_path: str | Path,
    sampling: Sampling = DEFAULT_SAMPLING,
    *,
    model_name: str = "",
    progress: bool = True,
    max_batches: int | None = None,
    backend: Any = None,
    shard: tuple[int, int] | None = None,
    first_batch: int = 0,
) -> GenerationReport:
    """Generate every job not yet in ``out_path`` (append-only JSONL), batch by batch.

    Batches are fixed slices of ``jobs`` with seed ``sampling.seed * 1_000_003 + batch_index``; a batch
    that was cut short is regenerated whole with its own seed and only its missing records are written,
    so resuming reproduces an uninterrupted run.

    shard: ``(i, n)`` generates only the batches whose index is ``i`` modulo ``n``, so that ``n`` processes
    (one per core) can fill one corpus together. Whatever the sharding, each batch keeps its seed, so the
    records are the same as a single run's (their order in the file may differ). Appends are locked and skip
    ids already written, and a batch another process has finished meanwhile is skipped.

    first_batch: the index (and so the seed) of the first batch, for jobs that continue an earlier list.

    backend: what writes the texts (:class:`emolib.backends.GenerationBackend`); default
    :class:`emolib.backends.TorchBackend` over ``hf_model`` (which may be None when a backend is given).
    """
    from tqdm.auto import tqdm

    from .backends import TorchBackend

    backend = backend if backend is not None else TorchBackend(hf_model, tokenizer)

    out_path = Path(out_path)
    done, todo, n_before = pending_batches(jobs, out_path, sampling.batch_size)
    todo = [(b + first_batch, batch) for b, batch in todo]
    if shard is not None:
        i, n = shard
        if not (isinstance(n, int) and isinstance(i, int) and n >= 1 and 0 <= i < n):
            raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
        todo = [(b, batch) for b, batch in todo if b % n == i]
    report = GenerationReport(len(jobs), n_before, 0, 0, 0.0)
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), initial=report.n_done_before, desc="corpus", disable=not progress)
    _generate_batches(
        backend, tokenizer, todo, done, out_path, sampling, model_name, max_batches, report, bar
    )
    bar.close()
    report.seconds = time.perf_counter() - t0
    return report


def _generate_batches(
    backend: Any,
    tokenizer: Any,
    todo: list,
    done: set,
    out_path: Path,
    sampling: Sampling,
    model_name: str,
    max_batches: int | None,
    report: GenerationReport,
    bar: Any,
) -> None:
    for n, (b, batch) in enumerate(todo):
        if max_batches is not None and n >= max_batches:
            break
        done |= _ids_in(out_path)  # another process may have written this batch meanwhile
        if all(j.id in done for j in batch):
            continue
        seed = sampling.seed * 1_000_003 + b
        prompts = [render_prompt(j, tokenizer) for j in batch]
        outs = backend.generate(prompts, sampling, seed)
        recs = []
        for j, (text, n_tok, eos) in zip(batch, outs):
            report.new_tokens += n_tok
            if j.id in done:
                continue
            recs.append(
                {
                    **asdict(j),
                    "text": text,
                    "n_new_tokens": n_tok,
                    "hit_eos": eos,
                    "batch": b,
                    "seed": seed,
                    "model": model_name,
                }
            )
        written = _append(out_path, recs)
        done.update(r["id"] for r in recs)
        report.n_generated += written
        report.batches += 1
        bar.update(written)


def write_provenance(
    corpus_dir: str | Path,
    *,
    model_info: dict[str, Any],
    sampling: Sampling,
    jobs_spec: dict[str, Any],
    n_jobs: int | None = None,
) -> dict[str, Any]:
    """Write ``provenance.json`` next to the corpus with counts, hashes and settings.

    Written before generation starts as well as after it, so an interrupted run leaves a record of its
    settings (``complete`` false) that a resume is checked against."""
    corpus_dir = Path(corpus_dir)
    corpus_dir.mkdir(parents=True, exist_ok=True)
    path = corpus_file(corpus_dir)
    recs = read_jsonl(path) if path.exists() else []
    stories = [r for r in recs if r["kind"] == "story"]
    prov = {
        "model": model_info,
        "prompts_hash": prompts_hash(chat=bool(model_info.get("has_chat_template", True))),
        "sampling": sampling.record(),
        "jobs": jobs_spec,
        "counts": {
            "stories": len(stories),
            "neutral": sum(r["kind"] == "neutral" for r in recs),
            "emotions_covered": len({r["emotion"] for r in stories}),
            "new_tokens": sum(r["n_new_tokens"] for r in recs),
        },
        "complete": n_jobs is None or len(recs) >= n_jobs,
        "corpus_sha256": content_sha256(path) if path.exists() else None,
        "emolib_version": __version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    tmp = corpus_dir / f".provenance.{os.getpid()}.json"
    tmp.write_text(json.dumps(prov, indent=1))
    os.replace(tmp, corpus_dir / "provenance.json")  # atomic: several shards may finish together
    return prov


def corpus_dir_for(model_name: str, root: str | Path | None = None) -> Path:
    """``<root>/<model slug>``; the root defaults to ``$EMOLIB_CORPUS_DIR`` if set (read at call time: every
    chapter then reads its corpus from there, e.g. a staging folder whose results go to
    ``$EMOLIB_RESULTS_DIR``), else the repository's ``data/corpus``."""
    from .constants import CORPUS_DIR, model_slug

    return Path(root or os.environ.get("EMOLIB_CORPUS_DIR") or CORPUS_DIR) / model_slug(model_name)


# The batch index (and so the seed) of the first batch of extra story rounds: far past any main or extra
# neutral batch, so that raising n_neutral_extra later never shifts the seeds of extra rounds.
EXTRA_ROUNDS_FIRST_BATCH = 100_000
DESIGN_VERSION = "2"  # crossed emotion x topic design, neutral subjects of our own


def run_corpus(
    model_name: str,
    *,
    n_per_emotion: int = 60,
    n_topics: int = 60,
    n_neutral: int = 900,
    n_neutral_extra: int = 0,
    n_rounds_extra: int = 0,
    sampling: Sampling | None = None,
    out_dir: str | Path | None = None,
    loaded: Any = None,
    progress: bool = True,
    max_batches: int | None = None,
    shard: tuple[int, int] | None = None,
    dtype: str = "float32",
    overrides: dict[str, Any] | None = None,
    extra_rounds_dtype: str | None = None,
) -> tuple[Path, GenerationReport]:
    """Load the model (unless ``loaded`` is given) in ``dtype``, generate what is missing, write provenance.

    ``sampling`` defaults to :data:`CORPUS_SAMPLING` for a model with a chat template and to
    :data:`BASE_CORPUS_SAMPLING` (stop at a paragraph break) for a base model, with ``overrides`` (fields of
    :class:`~emolib.generate.Sampling`) replaced in it.

    Stories use the first ``n_topics`` of the paper's topics in a crossed design (see :func:`build_jobs`);
    neutral dialogues use our practical subjects (``data/neutral_subjects.json``). A folder that already
    holds a corpus made with other settings is an error, never silently extended; the one change allowed is
    a larger ``n_neutral_extra`` (more neutral dialogues after the stories) or ``n_rounds_extra`` (more story
    rounds after those): no earlier batch changes. When one is raised a second time, its last batch gains
    jobs: the records already written stay, the new ones come from that batch's seed, so they differ from a
    run that had the larger value from the start (keep the previous value's jobs a multiple of the batch
    size to avoid this).

    ``extra_rounds_dtype``: sample the extra story rounds in another dtype than the rest (e.g. a float32
    corpus extended in bfloat16, about 2x faster on an AVX-512 CPU). Allowed only once everything before the extra
    rounds is written, and before any extra round was sampled in ``dtype``; it is part of the recorded
    design (``jobs.extra_rounds_dtype``), so a resume must pass it again, while ``model.dtype`` in the
    provenance stays the dtype of the main part.

    A folder holding a compressed corpus (``corpus.jsonl.gz``, see :func:`compress_corpus`) is expanded before
    anything is sampled and compressed again when the run completes; a run interrupted in between leaves the
    plain file, which a resume extends (compress it by hand once complete)."""
    from .constants import EMOTIONS_FILE, NEUTRAL_SUBJECTS_FILE, TOPICS_FILE
    from .models import load_model
    from .stimuli import file_sha256, load_emotions, load_topics

    out = Path(out_dir) if out_dir else corpus_dir_for(model_name)
    spec = {
        "design_version": DESIGN_VERSION,
        "n_per_emotion": n_per_emotion,
        "n_topics": n_topics,
        "n_neutral": n_neutral,
        "emotions_sha256": file_sha256(EMOTIONS_FILE),
        "topics_sha256": file_sha256(TOPICS_FILE),
        "neutral_subjects_sha256": file_sha256(NEUTRAL_SUBJECTS_FILE),
        **({"n_neutral_extra": n_neutral_extra} if n_neutral_extra else {}),  # absent in older corpora
        **({"n_rounds_extra": n_rounds_extra} if n_rounds_extra else {}),
    }
    mixed = extra_rounds_dtype is not None and extra_rounds_dtype != dtype
    if mixed:
        if not n_rounds_extra:
            raise ValueError("extra_rounds_dtype applies to extra story rounds: pass n_rounds_extra > 0")
        spec["extra_rounds_dtype"] = extra_rounds_dtype
    topics = load_topics()[:n_topics]
    subjects = load_topics(NEUTRAL_SUBJECTS_FILE)
    emotions = load_emotions()
    jobs = build_jobs(emotions, topics, n_per_emotion, n_neutral, subjects, n_neutral_extra, n_rounds_extra)
    n_more = len(emotions) * n_rounds_extra
    n_main = len(jobs) - n_neutral_extra - n_more
    if sampling is not None and overrides:
        raise ValueError("pass either sampling or overrides, not both")

    def settings(chat: bool) -> Sampling:
        return sampling or dataclasses.replace(
            CORPUS_SAMPLING if chat else BASE_CORPUS_SAMPLING, **(overrides or {})
        )

    packed = corpus_file(out).name == COMPRESSED_FILE  # a finished corpus, compressed
    was_chat = _recorded_chat(out)
    main_dtype = dtype if mixed or not loaded else loaded.info.dtype
    if was_chat is not None:  # a corpus is there: a mismatch is refused before any model loads
        _check_same_design(out, spec, settings(was_chat), dtype=main_dtype)
    if mixed:
        missing = len({j.id for j in jobs[: len(jobs) - n_more]} - _ids_in(corpus_file(out)))
        if missing:
            raise ValueError(
                f"{out}: {missing} record(s) before the extra rounds are not written yet; finish them in {dtype} "
                f"(without extra_rounds_dtype) before sampling the extra rounds in {extra_rounds_dtype}"
            )
    if packed:  # generation appends to the plain file; compressed again below once complete
        expand_corpus(out)
    # sampling needs no hooks (see load_model)
    m = loaded or load_model(model_name, bridge=False, dtype=extra_rounds_dtype if mixed else dtype)
    sampling = settings(m.info.has_chat_template)
    if was_chat != m.info.has_chat_template:  # not checked above with these settings
        _check_same_design(out, spec, sampling, dtype=main_dtype)
    info = {**m.info.to_dict(), "dtype": main_dtype} if mixed else m.info.to_dict()
    record = dict(model_info=info, sampling=sampling, jobs_spec=spec, n_jobs=len(jobs))
    write_provenance(out, **record)  # the settings are on disk before the first batch
    kw = dict(model_name=model_name, progress=progress, max_batches=max_batches, shard=shard)
    path = out / "corpus.jsonl"
    report = generate_corpus(m.hf_model, m.tokenizer, jobs[:n_main], path, sampling, **kw)
    # Batched on their own, each part from a fixed first batch: the earlier batches keep their jobs and seeds.
    parts = [
        (jobs[n_main : n_main + n_neutral_extra], -(-n_main // sampling.batch_size)),
        (jobs[len(jobs) - n_more :] if n_more else [], EXTRA_ROUNDS_FIRST_BATCH),
    ]
    for part, first in parts:
        if not part:
            continue
        more = generate_corpus(m.hf_model, m.tokenizer, part, path, sampling, first_batch=first, **kw)
        report.n_jobs += more.n_jobs
        report.n_done_before += more.n_done_before
        report.n_generated += more.n_generated
        report.new_tokens += more.new_tokens
        report.seconds += more.seconds
        report.batches += more.batches
    if len(_ids_in(out / "corpus.jsonl") & {j.id for j in jobs}) == len(jobs):
        sort_in_job_order(out / "corpus.jsonl", [j.id for j in jobs])
    if write_provenance(out, **record)["complete"] and packed:
        compress_corpus(out)
    return out, report


def sort_in_job_order(path: str | Path, order: Sequence[str]) -> bool:
    """Rewrite a finished corpus with its records in job order (shards append batches in whatever order
    they finish, and the file's order and hash should not depend on that). Under the append lock; the file
    is replaced atomically. Returns whether anything moved."""
    path = Path(path)
    rank = {k: n for n, k in enumerate(order)}
    with open(path, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            recs = read_jsonl(path)
            unknown = [r["id"] for r in recs if r["id"] not in rank]
            if unknown:
                raise ValueError(f"{path}: {len(unknown)} record(s) not among the jobs, e.g. {unknown[0]!r}")
            ordered = sorted(recs, key=lambda r: rank[r["id"]])
            if [r["id"] for r in ordered] == [r["id"] for r in recs]:
                return False
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="utf-8") as g:
                for r in ordered:
                    g.write(json.dumps(r, ensure_ascii=False) + "\n")
                g.flush()
                os.fsync(g.fileno())
            os.replace(tmp, path)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    return True


def _recorded_chat(out: Path) -> bool | None:
    """Whether the corpus in ``out`` was written by a chat model (None: no corpus there yet)."""
    if not corpus_file(out).exists() or not (out / "provenance.json").exists():
        return None
    prov = json.loads((out / "provenance.json").read_text())
    return bool((prov.get("model") or {}).get("has_chat_template", True))


def _check_same_design(out: Path, spec: dict[str, Any], sampling: Sampling, dtype: str | None = None) -> None:
    prov_path = out / "provenance.json"
    if not corpus_file(out).exists() or not prov_path.exists():
        return
    prov = json.loads(prov_path.read_text())
    was = (prov.get("model") or {}).get("dtype")
    if dtype is not None and was is not None and was != dtype:
        raise ValueError(
            f"{out} holds a corpus sampled in {was}; resuming it in {dtype} would mix two samplers. "
            f"Pass --dtype {was} or choose another --out folder."
        )
    chat = bool((prov.get("model") or {}).get("has_chat_template", True))
    defaults = Sampling().record()  # settings added later (stop strings) were off in older corpora
    old = {
        "jobs": prov.get("jobs"),
        "sampling": {**defaults, **(prov.get("sampling") or {})},
        "prompts_hash": _recorded_prompts_hash(prov),
    }
    new = {"jobs": spec, "sampling": sampling.record(), "prompts_hash": prompts_hash(chat)}
    if (
        isinstance(old["jobs"], dict)
        and "extra_rounds_dtype" in spec
        and "extra_rounds_dtype" not in old["jobs"]
    ):
        if old["jobs"].get("n_rounds_extra", 0):  # extra rounds were sampled in the main dtype already
            raise ValueError(
                f"{out} already holds extra story rounds sampled in {was}; extra_rounds_dtype cannot change them. "
                "Resume without it or choose another --out folder."
            )
        old["jobs"] = {**old["jobs"], "extra_rounds_dtype": spec["extra_rounds_dtype"]}
    for key in (
        "n_neutral_extra",
        "n_rounds_extra",
    ):  # more jobs after the others leave every batch as it was
        if isinstance(old["jobs"], dict):
            was, now = old["jobs"].get(key, 0), spec.get(key, 0)
            if now >= was:
                old["jobs"] = {**old["jobs"], key: now}
                new["jobs"] = {**new["jobs"], key: now}
    diff = [k for k in new if old[k] != new[k]]
    if diff:
        raise ValueError(
            f"{out} holds a corpus made with other settings ({', '.join(diff)} differ); resuming it would mix "
            "two designs. Pass the recorded settings (see its provenance.json) or choose another --out folder."
        )


if __name__ == "__main__":  # python -m emolib.corpus --model smollm2-135m-instruct
    import argparse

    ap = argparse.ArgumentParser(description="Generate (or resume) the story corpus of a model.")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n-per-emotion", type=int, default=60)
    ap.add_argument("--n-topics", type=int, default=60)
    ap.add_argument("--n-neutral", type=int, default=900)
    ap.add_argument(
        "--n-neutral-extra", type=int, default=0,
        help="more neutral dialogues after the stories (a finished corpus can be extended this way)",
    )  # fmt: skip
    ap.add_argument(
        "--n-rounds-extra", type=int, default=0,
        help="more story rounds (one story per emotion each) after everything else: more stories per emotion",
    )  # fmt: skip
    ap.add_argument("--batch-size", type=int, default=None, help="default 128 (chat models), 64 (base)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default 256")
    ap.add_argument(
        "--min-new-tokens", type=int, default=None,
        help="no stop before this many tokens (default 0 for chat models, 90 for base models)",
    )  # fmt: skip
    ap.add_argument(
        "--paragraph-stop", default=None, action=argparse.BooleanOptionalAction,
        help="stop each text at its first paragraph break (default: on for base models only)",
    )  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"],
        help="weights and activations while sampling (recorded in provenance.json; a resume must match)",
    )  # fmt: skip
    ap.add_argument(
        "--extra-rounds-dtype", default=None, choices=["float32", "bfloat16"],
        help="sample the --n-rounds-extra stories in this dtype (e.g. extend a float32 corpus in bfloat16)",
    )  # fmt: skip
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--compress", default=None, metavar="DIR",
        help="replace the finished DIR/corpus.jsonl by corpus.jsonl.gz (same content hash) and exit",
    )  # fmt: skip
    ap.add_argument(
        "--expand", default=None, metavar="DIR", help="replace DIR/corpus.jsonl.gz by corpus.jsonl and exit"
    )  # fmt: skip
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: cores / shards)")
    ap.add_argument(
        "--shard", default=None, metavar="I/N",
        help="only batches with index I modulo N: run N processes (one per core) on one corpus",
    )  # fmt: skip
    a = ap.parse_args()
    if a.compress or a.expand:
        try:
            done = compress_corpus(a.compress) if a.compress else expand_corpus(a.expand)
        except (OSError, ValueError) as e:
            ap.exit(2, f"error: {e}\n")
        print(f"wrote {done} ({done.stat().st_size / 1e6:.1f} MB)")
        raise SystemExit(0)
    shard = None
    if a.shard:
        try:
            i, n = (int(x) for x in a.shard.split("/"))
        except ValueError:
            ap.error(f"--shard must look like 0/2, got {a.shard!r}")
        shard = (i, n)
    from .models import shard_threads

    shard_threads(shard[1] if shard else 1, a.threads)
    given = {
        "batch_size": a.batch_size,
        "max_new_tokens": a.max_new_tokens,
        "min_new_tokens": a.min_new_tokens,
        "stop_strings": None if a.paragraph_stop is None else (("\n\n",) if a.paragraph_stop else ()),
        "seed": a.seed,
    }
    path, rep = run_corpus(
        a.model,
        n_per_emotion=a.n_per_emotion,
        n_topics=a.n_topics,
        n_neutral=a.n_neutral,
        n_neutral_extra=a.n_neutral_extra,
        n_rounds_extra=a.n_rounds_extra,
        overrides={k: v for k, v in given.items() if v is not None},
        out_dir=a.out,
        shard=shard,
        dtype=a.dtype,
        extra_rounds_dtype=a.extra_rounds_dtype,
    )
    print(
        f"{path}: {rep.n_generated} new records, {rep.new_tokens} tokens in {rep.seconds:.0f} s "
        f"({rep.tokens_per_second:.1f} tok/s)"
    )


# --- loading a finished corpus ------------------------------------------------------------------

REQUIRED_FIELDS = ("id", "kind", "emotion", "topic_index", "text")


@dataclass(frozen=True)
class Corpus:
    """A loaded corpus. ``stories`` has one row per story with its emotion index (order of the emotion
    list), topic, leak flag (names its emotion) and degenerate reason (None = usable)."""

    stories: Any  # pandas.DataFrame
    neutral: Any  # pandas.DataFrame
    emotions: tuple[str, ...]
    sha256: str
    path: Path

    def _store_key(self) -> tuple[Any, ...]:
        """What :mod:`emolib.store` keys a corpus by: its file hash and emotion list (not its folder)."""
        return (self.sha256, self.emotions)

    def usable(self) -> Any:
        return self.stories[self.stories["degenerate"].isna()].reset_index(drop=True)

    def usable_neutral(self, clean: bool = True) -> Any:
        """Usable neutral dialogues; with ``clean``, only those that contain no word of the emotion list
        (nor an inflection of one): a "neutral" text that says *worried* is not neutral."""
        n = self.neutral[self.neutral["degenerate"].isna()]
        if clean:
            n = n[n["emotion_words"].str.len() == 0]
        return n.reset_index(drop=True)

    def quality(self) -> dict[str, Any]:
        s, n = self.stories, self.neutral
        ok = s[s["degenerate"].isna()]
        n_ok = n[n["degenerate"].isna()]
        cut = (~ok["hit_eos"].astype(bool)).mean() if "hit_eos" in ok and len(ok) else float("nan")
        return {
            "n_stories": int(len(s)),
            "n_neutral": int(len(n)),
            "n_degenerate": int(s["degenerate"].notna().sum()),
            "n_degenerate_neutral": int(n["degenerate"].notna().sum()),
            "degenerate_reasons": {str(k): int(v) for k, v in s["degenerate"].value_counts().items()},
            "leak_rate": float(ok["leak"].mean()) if len(ok) else float("nan"),
            "other_emotion_word_rate": float(ok["other_emotion_word"].mean()) if len(ok) else float("nan"),
            "cutoff_share": float(cut),
            "neutral_emotion_word_rate": float((n_ok["emotion_words"].str.len() > 0).mean())
            if len(n_ok)
            else float("nan"),
            "n_neutral_clean": int(len(self.usable_neutral(clean=True))),
            "stories_per_emotion_min": int(
                ok.groupby("emotion").size().reindex(self.emotions).fillna(0).min()
            ),
        }

    def leak_by_emotion(self) -> Any:
        ok = self.usable()
        return (
            ok.groupby("emotion")["leak"]
            .agg(["mean", "size"])
            .rename(columns={"mean": "leak_rate", "size": "n_stories"})
            .reindex(list(self.emotions))
        )


def load_corpus(folder: str | Path, emotions: Sequence[str]) -> Corpus:
    """Read ``folder/corpus.jsonl`` (or its compressed copy ``corpus.jsonl.gz``) and validate every record
    against the emotion list."""
    import pandas as pd

    folder = Path(folder)
    path = corpus_file(folder)
    if not path.exists():
        raise FileNotFoundError(f"No corpus at {path}; generate one with python -m emolib.corpus --model ...")
    data = _read_bytes(path)  # read (and decompressed) once: parsed and hashed below
    recs = _parse_jsonl(data, path)
    if not recs:
        raise ValueError(f"{path} holds no records")
    known = {e: i for i, e in enumerate(emotions)}
    for n, r in enumerate(recs):
        missing = [f for f in REQUIRED_FIELDS if f not in r]
        if missing:
            raise ValueError(f"{path}: record {n} lacks fields {missing}")
        if r["kind"] not in ("story", "neutral"):
            raise ValueError(f"{path}: record {n} has unknown kind {r['kind']!r}")
        if r["kind"] == "story" and r["emotion"] not in known:
            raise ValueError(f"{path}: record {n} names unknown emotion {r['emotion']!r}")
    df = pd.DataFrame(recs)
    if df["id"].duplicated().any():
        raise ValueError(f"{path}: duplicate ids {df.loc[df['id'].duplicated(), 'id'].tolist()[:5]}")
    df["degenerate"] = [degenerate_reason(t) for t in df["text"]]
    stories = df[df["kind"] == "story"].copy()
    stories["emotion_index"] = stories["emotion"].map(known).astype(int)
    stories["leak"] = [bool(leak_spans(t, e)) for t, e in zip(stories["text"], stories["emotion"])]
    stories["other_emotion_word"] = [
        bool(set(emotion_words_in(t, emotions)) - {e}) for t, e in zip(stories["text"], stories["emotion"])
    ]
    neutral = df[df["kind"] == "neutral"].copy()
    neutral["emotion_words"] = [tuple(emotion_words_in(t, emotions)) for t in neutral["text"]]
    return Corpus(
        stories.reset_index(drop=True),
        neutral.reset_index(drop=True),
        tuple(emotions),
        hashlib.sha256(data).hexdigest(),
        path,
    )
