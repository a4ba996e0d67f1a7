"""Corpus: job layout, leak and degeneracy rules, and resumable, reproducible generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emolib.corpus import (
    Sampling,
    build_jobs,
    degenerate_reason,
    generate_corpus,
    leak_spans,
    prompts_hash,
    read_jsonl,
    render_prompt,
)
from emolib.stimuli import load_emotions, load_topics


def test_jobs_crossed_design_round_robin():
    emotions, topics = load_emotions(), load_topics()[:60]
    jobs = build_jobs(emotions, topics, 60, 90, ["subject a", "subject b"])
    stories = [j for j in jobs if j.kind == "story"]
    assert len(stories) == 171 * 60 and sum(j.kind == "neutral" for j in jobs) == 90
    first_round = [j.emotion for j in jobs if j.kind == "story"][:171]
    assert first_round == emotions  # every emotion once before any gets a second story
    for e in ("afraid", "calm", "worn out"):
        mine = [j for j in stories if j.emotion == e]
        assert sorted(j.topic_index for j in mine) == list(range(60))  # crossed: every topic once
        assert {j.topic_index % 5 for j in mine[:10]} == set(
            range(5)
        )  # a partial corpus still fills every fold
        assert {j.person for j in mine} == {"first", "third"}
    assert {j.topic for j in jobs if j.kind == "neutral"} == {"subject a", "subject b"}
    assert len({j.id for j in jobs}) == len(jobs)
    with pytest.raises(ValueError, match="crossed"):
        build_jobs(emotions, topics, 61, 0)


def test_prompts_chat_and_base(tiny):
    job = build_jobs(["afraid"], ["A storm reaches the harbour"], 1, 1)
    chat = render_prompt(job[-1], tiny.tokenizer)
    assert chat.startswith("<|im_start|>user") and chat.endswith("<|im_start|>assistant\n")
    assert "afraid" in chat and "storm" in chat

    class Base:
        chat_template = None

    base = render_prompt(job[-1], Base())
    assert "<|im_start|>" not in base and "afraid" in base
    neutral = render_prompt(job[0], Base())
    assert neutral.endswith("Human:")


@pytest.mark.parametrize(
    "emotion,text,n",
    [
        ("desperate", "She was desperate. Desperately, in desperation, she ran.", 3),
        ("happy", "Happiness? He was happy, happily so.", 3),
        ("calm", "Nothing here names it.", 0),
        ("at ease", "He felt at ease, then at  ease again.", 2),
        ("worn out", "I am worn-out and worn out.", 2),
        ("afraid", "Fraidy cat.", 0),
        ("panicked", "She panicked.", 1),
        ("panic", "He panicked, panicking, in a panicky way.", 3),
        ("happy", "It happened twice.", 0),
        ("content", "Continue to the continent, contented; contentment.", 2),
        ("mad", "She made a mad dash, madder still.", 2),
        ("playful", "The player was playfully quick.", 1),
        ("reflective", "A reflection, reflectively.", 1),
        ("amazed", "Amazement! She was amazed, amazing.", 3),
    ],
)
def test_leak_spans(emotion, text, n):
    assert len(leak_spans(text, emotion)) == n


def test_degenerate_rule():
    assert degenerate_reason("Too short.") == "too_short"
    assert degenerate_reason("I am a cat. " * 20) == "looping"
    story = (
        "Maria stood at the window, counting the cars that passed below. Her coffee had gone cold an hour "
        "ago, but she kept her fingers wrapped around the mug as if it could still warm her. When the "
        "phone finally rang she let it ring twice more before answering."
    )
    assert degenerate_reason(story) is None


def test_generation_resumes_exactly(tiny, tmp_path):
    jobs = build_jobs(["afraid", "calm", "happy"], ["A storm", "A letter", "A train"], 2, 2)
    s = Sampling(max_new_tokens=6, batch_size=3, seed=7)
    whole = tmp_path / "whole.jsonl"
    rep = generate_corpus(tiny.hf_model, tiny.tokenizer, jobs, whole, s, progress=False)
    assert rep.n_generated == len(jobs) and rep.new_tokens > 0

    part = tmp_path / "part.jsonl"
    generate_corpus(tiny.hf_model, tiny.tokenizer, jobs, part, s, progress=False, max_batches=1)
    lines = part.read_text().splitlines()
    assert len(lines) == 3
    # a run killed mid-write: one finished record lost and a torn line left behind
    part.write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])
    rep2 = generate_corpus(tiny.hf_model, tiny.tokenizer, jobs, part, s, progress=False)
    assert rep2.n_done_before == 2 and rep2.n_generated == len(jobs) - 2
    a = {r["id"]: r["text"] for r in read_jsonl(whole)}
    b = {r["id"]: r["text"] for r in read_jsonl(part)}
    assert a == b  # same texts as the uninterrupted run
    assert len(part.read_text().splitlines()) == len(jobs)

    rep3 = generate_corpus(tiny.hf_model, tiny.tokenizer, jobs, part, s, progress=False)
    assert rep3.n_generated == 0  # nothing is redone


def test_shards_fill_one_corpus_with_the_same_records(tiny, tmp_path):
    import threading

    jobs = build_jobs(["afraid", "calm", "happy"], ["A storm", "A letter", "A train"], 2, 2)
    s = Sampling(max_new_tokens=6, batch_size=2, seed=7)
    whole = tmp_path / "whole.jsonl"
    generate_corpus(tiny.hf_model, tiny.tokenizer, jobs, whole, s, progress=False)
    expect = {r["id"]: r["text"] for r in read_jsonl(whole)}

    # two "processes" (threads with their own file handles) on one file at once
    both = tmp_path / "both.jsonl"
    reps = {}

    def run(i):
        reps[i] = generate_corpus(tiny.hf_model, tiny.tokenizer, jobs, both, s, progress=False, shard=(i, 2))

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recs = read_jsonl(both)
    assert len(recs) == len(jobs) == len({r["id"] for r in recs})  # every job once
    assert {r["id"]: r["text"] for r in recs} == expect  # each batch keeps its seed
    assert reps[0].n_generated + reps[1].n_generated == len(jobs)
    assert {r["batch"] % 2 for r in recs if r["id"] in {j.id for j in jobs[:2]}} == {0}

    # a shard stopped early leaves its batches to a later unsharded run, which skips what is there
    part = tmp_path / "part.jsonl"
    generate_corpus(tiny.hf_model, tiny.tokenizer, jobs, part, s, progress=False, shard=(1, 2))
    n_shard = len(read_jsonl(part))
    assert 0 < n_shard < len(jobs)
    rest = generate_corpus(tiny.hf_model, tiny.tokenizer, jobs, part, s, progress=False)
    assert rest.n_generated == len(jobs) - n_shard
    assert {r["id"]: r["text"] for r in read_jsonl(part)} == expect
    with pytest.raises(ValueError, match="shard"):
        generate_corpus(tiny.hf_model, tiny.tokenizer, jobs, part, s, progress=False, shard=(2, 2))


def test_sort_in_job_order_makes_the_file_independent_of_shard_timing(tmp_path):
    from emolib.corpus import sort_in_job_order
    from emolib.stimuli import file_sha256

    recs = [{"id": f"j{k}", "kind": "story", "text": f"text {k} é"} for k in range(5)]
    order = [r["id"] for r in recs]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _lines(a, recs)
    _lines(b, [recs[k] for k in (3, 4, 0, 1, 2)])  # batches landed in another order
    assert sort_in_job_order(a, order) is False  # already in order: untouched
    assert sort_in_job_order(b, order) is True
    assert file_sha256(a) == file_sha256(b)
    assert [r["id"] for r in read_jsonl(b)] == order
    with pytest.raises(ValueError, match="not among the jobs"):
        sort_in_job_order(b, order[:3])
    assert [r["id"] for r in read_jsonl(b)] == order  # a refused sort leaves the file as it was


def _lines(path, recs):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")


def test_read_jsonl_malformed_middle(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"id": 1}) + "\nnot json\n" + json.dumps({"id": 2}) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(p)


def _write(path, recs):
    path.mkdir(parents=True, exist_ok=True)
    (path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_load_corpus_quality_and_validation(tmp_path):
    from emolib.corpus import load_corpus

    good = (
        "Maria stood at the window counting the cars that passed below while her coffee went cold "
        "and the clock on the wall ticked past midnight again and again without any news from him at all"
    )
    recs = [
        {"id": "s1", "kind": "story", "emotion": "afraid", "topic_index": 0, "text": good},
        {
            "id": "s2",
            "kind": "story",
            "emotion": "afraid",
            "topic_index": 1,
            "text": good + " She was afraid.",
        },
        {"id": "s3", "kind": "story", "emotion": "calm", "topic_index": 2, "text": "Too short."},
        {"id": "n1", "kind": "neutral", "emotion": None, "topic_index": 0, "text": good},
    ]
    _write(tmp_path / "ok", recs)
    c = load_corpus(tmp_path / "ok", ["afraid", "calm"])
    q = c.quality()
    assert q["n_stories"] == 3 and q["n_degenerate"] == 1 and q["leak_rate"] == 0.5
    assert q["stories_per_emotion_min"] == 0  # calm lost its only story
    assert list(c.usable()["id"]) == ["s1", "s2"]

    _write(tmp_path / "bad1", [{**recs[0], "emotion": "hangry"}])
    with pytest.raises(ValueError, match="hangry"):
        load_corpus(tmp_path / "bad1", ["afraid"])
    _write(tmp_path / "bad2", [{"id": "x", "kind": "story", "text": good}])
    with pytest.raises(ValueError, match="lacks fields"):
        load_corpus(tmp_path / "bad2", ["afraid"])
    _write(tmp_path / "bad3", [recs[0], recs[0]])
    with pytest.raises(ValueError, match="duplicate"):
        load_corpus(tmp_path / "bad3", ["afraid"])
    with pytest.raises(FileNotFoundError):
        load_corpus(tmp_path / "nothing", ["afraid"])


def test_run_corpus_in_shards_ends_in_job_order_with_complete_provenance(tiny, tmp_path):
    from emolib.corpus import run_corpus

    s = Sampling(max_new_tokens=3, batch_size=64, seed=1)
    kw = dict(
        n_per_emotion=1, n_topics=1, n_neutral=4, sampling=s, out_dir=tmp_path, loaded=tiny, progress=False
    )
    run_corpus("tiny", shard=(1, 2), **kw)  # the later batches land first
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["complete"] is False
    run_corpus("tiny", shard=(0, 2), **kw)
    prov = json.loads((tmp_path / "provenance.json").read_text())
    ids = [r["id"] for r in read_jsonl(tmp_path / "corpus.jsonl")]
    assert prov["complete"] is True and len(ids) == 171 + 4
    assert ids[:4] == [f"neutral-{k:04d}" for k in range(4)] and ids[4] == "story-000-000"
    assert ids == sorted(ids, key=lambda k: (k.startswith("story"), k))


def test_extra_neutral_dialogues_extend_a_finished_corpus_without_changing_it(tiny, tmp_path):
    from emolib.corpus import run_corpus

    base = build_jobs(["afraid", "calm"], ["A", "B"], 2, 2, ["x", "y", "z"])
    more = build_jobs(["afraid", "calm"], ["A", "B"], 2, 2, ["x", "y", "z"], n_neutral_extra=3)
    assert more[: len(base)] == base  # every earlier batch (and so its seed) is unchanged
    assert [j.id for j in more[len(base) :]] == ["neutral-0002", "neutral-0003", "neutral-0004"]
    assert [j.topic for j in more[len(base) :]] == ["z", "x", "y"]  # the subjects keep cycling

    s = Sampling(max_new_tokens=3, batch_size=64, seed=1)  # 173 jobs: the last batch holds 45
    kw = dict(n_per_emotion=1, n_topics=1, n_neutral=2, sampling=s, loaded=tiny, progress=False)
    run_corpus("tiny", out_dir=tmp_path, **kw)
    before = (tmp_path / "corpus.jsonl").read_text()
    run_corpus("tiny", out_dir=tmp_path, n_neutral_extra=5, **kw)
    after = (tmp_path / "corpus.jsonl").read_text()
    assert after.startswith(before) and len(after.splitlines()) == 171 + 2 + 5
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["complete"] is True and prov["jobs"]["n_neutral_extra"] == 5
    recs = read_jsonl(tmp_path / "corpus.jsonl")
    assert {r["batch"] for r in recs[-5:]} == {3}  # a batch of their own, after batches 0-2
    # the same texts as a corpus made with the extra dialogues from the start
    run_corpus("tiny", out_dir=tmp_path / "direct", n_neutral_extra=5, **kw)
    assert (tmp_path / "direct" / "corpus.jsonl").read_text() == after
    kw["out_dir"] = tmp_path
    with pytest.raises(ValueError, match="other settings"):
        run_corpus("tiny", n_neutral_extra=2, **kw)  # fewer than recorded: refused
    with pytest.raises(ValueError, match="other settings"):
        run_corpus("tiny", **{**kw, "n_neutral": 3})


def test_resume_in_another_dtype_is_refused(tiny, tmp_path):
    """A corpus sampled in one dtype is never resumed in another: the two halves would come from two samplers."""
    from emolib.corpus import run_corpus

    s = Sampling(max_new_tokens=3, batch_size=64, seed=1)
    kw = dict(n_per_emotion=1, n_topics=1, n_neutral=2, sampling=s, progress=False, out_dir=tmp_path)
    run_corpus("tiny", loaded=tiny, max_batches=1, **kw)
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["model"]["dtype"] == "float32" and prov["complete"] is False
    with pytest.raises(ValueError, match="sampled in float32"):
        run_corpus("tiny", dtype="bfloat16", **kw)


def test_prompt_hashes_are_per_format_and_the_v2_record_still_resumes(tmp_path):
    """A chat model's corpus is keyed by the chat wording only, so rewording the base-model openings does not
    orphan it; corpus v2's combined hash is read as the (unchanged) chat hash."""
    from emolib.corpus import SAME_PROMPTS, _check_same_design, prompts_hash

    assert prompts_hash(chat=True) != prompts_hash(chat=False)
    assert SAME_PROMPTS["a279371ba3c31b31"] == prompts_hash(chat=True)
    spec = {"design_version": "2", "n_per_emotion": 1}
    s = Sampling(max_new_tokens=3)
    old_sampling = {k: v for k, v in s.record().items() if k not in ("min_new_tokens", "stop_strings")}
    prov = {"model": {"dtype": "float32", "has_chat_template": True}, "jobs": spec, "sampling": old_sampling}
    (tmp_path / "corpus.jsonl").write_text("")
    (tmp_path / "provenance.json").write_text(json.dumps({**prov, "prompts_hash": "a279371ba3c31b31"}))
    _check_same_design(tmp_path, spec, s, dtype="float32")  # settings added since default to off
    with pytest.raises(ValueError, match="sampling"):
        _check_same_design(tmp_path, spec, Sampling(max_new_tokens=3, stop_strings=("\n\n",)), "float32")
    base = {
        **prov,
        "model": {"dtype": "float32", "has_chat_template": False},
        "prompts_hash": "a279371ba3c31b31",
    }
    (tmp_path / "provenance.json").write_text(json.dumps(base))
    with pytest.raises(
        ValueError, match="prompts_hash"
    ):  # a base model's corpus is keyed by the base wording
        _check_same_design(tmp_path, spec, s, dtype="float32")


def test_a_base_model_corpus_stops_at_paragraphs_by_default(tiny, tmp_path):
    """run_corpus picks BASE_CORPUS_SAMPLING for a model without a chat template, records it, and refuses a
    resume with other settings before loading anything."""
    import dataclasses

    from emolib.corpus import BASE_CORPUS_SAMPLING, run_corpus

    tok = tiny.tokenizer
    template, tok.chat_template = tok.chat_template, None
    try:
        base = dataclasses.replace(tiny, info=dataclasses.replace(tiny.info, has_chat_template=False))
        kw = dict(n_per_emotion=1, n_topics=1, n_neutral=2, progress=False, out_dir=tmp_path)
        over = {"max_new_tokens": 6, "min_new_tokens": 2, "stop_strings": ("\n",)}
        run_corpus("tiny", loaded=base, max_batches=1, overrides=over, **kw)
    finally:
        tok.chat_template = template
    prov = json.loads((tmp_path / "provenance.json").read_text())
    want = dataclasses.replace(BASE_CORPUS_SAMPLING, **over).record()
    assert prov["sampling"] == want and prov["prompts_hash"] == prompts_hash(chat=False)
    recs = [json.loads(x) for x in (tmp_path / "corpus.jsonl").read_text().splitlines()]
    assert recs and all(r["n_new_tokens"] >= 2 for r in recs)
    with pytest.raises(ValueError, match="sampling"):
        run_corpus(
            "tiny", overrides={"max_new_tokens": 300}, **kw
        )  # "tiny" is no model: refused before loading


def test_extra_story_rounds_extend_a_finished_corpus_without_changing_it(tiny, tmp_path):
    """More stories per emotion after a finished corpus: later rounds start a new pass over the topics in
    the other narration, earlier records stay byte for byte, and the new batches have seeds of their own."""
    from emolib.corpus import EXTRA_ROUNDS_FIRST_BATCH, run_corpus

    base = build_jobs(["afraid", "calm"], ["A", "B"], 2, 2, ["x"], n_neutral_extra=1)
    more = build_jobs(["afraid", "calm"], ["A", "B"], 2, 2, ["x"], n_neutral_extra=1, n_rounds_extra=2)
    assert more[: len(base)] == base
    new = more[len(base) :]
    assert [j.id for j in new] == ["story-000-002", "story-001-002", "story-000-003", "story-001-003"]
    for j in new:  # the same topic as the story one pass earlier, in the other person
        twin = next(b for b in base if b.id == f"story-{j.id[6:9]}-{int(j.id[-3:]) - 2:03d}")
        assert j.topic == twin.topic and j.person != twin.person

    s = Sampling(max_new_tokens=3, batch_size=64, seed=1)
    kw = dict(n_per_emotion=1, n_topics=1, n_neutral=2, sampling=s, loaded=tiny, progress=False)
    run_corpus("tiny", out_dir=tmp_path, **kw)
    before = (tmp_path / "corpus.jsonl").read_text()
    run_corpus("tiny", out_dir=tmp_path, n_rounds_extra=1, **kw)
    after = (tmp_path / "corpus.jsonl").read_text()
    assert after.startswith(before) and len(after.splitlines()) == 171 * 2 + 2
    recs = read_jsonl(tmp_path / "corpus.jsonl")
    assert {r["batch"] for r in recs[-171:]} == {EXTRA_ROUNDS_FIRST_BATCH + k for k in range(3)}
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["complete"] is True and prov["jobs"]["n_rounds_extra"] == 1
    with pytest.raises(ValueError, match="other settings"):
        run_corpus("tiny", out_dir=tmp_path, **kw)  # fewer rounds than recorded: refused


def test_extra_rounds_in_another_dtype_extend_a_finished_corpus(tiny_dir, tmp_path):
    """A float32 corpus gains extra story rounds sampled in bfloat16: only once its main part is written,
    recorded in the design (a resume must name it again), the earlier records unchanged."""
    from emolib.corpus import run_corpus

    s = Sampling(max_new_tokens=3, batch_size=64, seed=1)
    kw = dict(n_per_emotion=1, n_topics=1, n_neutral=2, sampling=s, progress=False, out_dir=tmp_path)
    name = str(tiny_dir)
    bf = dict(extra_rounds_dtype="bfloat16")
    with pytest.raises(ValueError, match="n_rounds_extra > 0"):
        run_corpus(name, **bf, **kw)
    run_corpus(name, max_batches=1, **kw)
    with pytest.raises(ValueError, match="not written yet"):
        run_corpus(name, n_rounds_extra=1, **bf, **kw)
    run_corpus(name, **kw)
    before = (tmp_path / "corpus.jsonl").read_text()
    run_corpus(name, n_rounds_extra=1, **bf, **kw)
    after = (tmp_path / "corpus.jsonl").read_text()
    assert after.startswith(before) and len(after.splitlines()) == 171 * 2 + 2
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["model"]["dtype"] == "float32" and prov["jobs"]["extra_rounds_dtype"] == "bfloat16"
    assert prov["complete"] is True
    with pytest.raises(ValueError, match="other settings"):
        run_corpus(name, n_rounds_extra=1, **kw)  # resumed without naming the extra rounds' dtype
    run_corpus(name, n_rounds_extra=2, **bf, **kw)  # more rounds in the same dtype
    assert (tmp_path / "corpus.jsonl").read_text().startswith(after)
    assert len(read_jsonl(tmp_path / "corpus.jsonl")) == 171 * 3 + 2
    kw["out_dir"] = tmp_path / "fp32_rounds"
    run_corpus(name, n_rounds_extra=1, **kw)
    with pytest.raises(ValueError, match="already holds extra story rounds"):
        run_corpus(name, n_rounds_extra=2, **bf, **kw)


def test_jsonl_records_with_unicode_line_separators_read_back(tmp_path):
    """json.dumps(ensure_ascii=False) writes U+2028 raw; str.splitlines split the record there, and a
    finished Gemma corpus failed to load. Records are split on newlines only."""
    from emolib.corpus import _append, _ids_in

    path = tmp_path / "c.jsonl"
    recs = [{"id": "a", "text": "one\u2028two\x85three"}, {"id": "b", "text": "ok"}]
    assert _append(path, recs) == 2
    assert read_jsonl(path) == recs and _ids_in(path) == {"a", "b"}


def test_a_compressed_corpus_loads_with_the_same_hash_and_extends(tiny_dir, tmp_path):
    """A finished corpus compressed to corpus.jsonl.gz loads as the same corpus (same content hash, so the
    store keys and the provenance still match), is expanded to be extended and compressed again once
    complete; compressing a file that is not the recorded corpus, or keeping both files, is refused."""
    import gzip

    from emolib.corpus import compress_corpus, corpus_file, expand_corpus, load_corpus, run_corpus
    from emolib.stimuli import load_emotions

    s = Sampling(max_new_tokens=3, batch_size=64, seed=1)
    kw = dict(n_per_emotion=1, n_topics=1, n_neutral=2, sampling=s, progress=False, out_dir=tmp_path)
    run_corpus(str(tiny_dir), **kw)
    plain = (tmp_path / "corpus.jsonl").read_bytes()
    before = load_corpus(tmp_path, load_emotions())
    packed = compress_corpus(tmp_path)
    assert packed.name == "corpus.jsonl.gz" and not (tmp_path / "corpus.jsonl").exists()
    assert gzip.decompress(packed.read_bytes()) == plain and corpus_file(tmp_path) == packed
    after = load_corpus(tmp_path, load_emotions())
    assert (
        after.sha256
        == before.sha256
        == json.loads((tmp_path / "provenance.json").read_text())["corpus_sha256"]
    )
    assert after.stories.equals(before.stories) and after.path == packed
    # deterministic bytes: compressing again after expanding gives the same file
    expand_corpus(tmp_path)
    assert (tmp_path / "corpus.jsonl").read_bytes() == plain
    assert compress_corpus(tmp_path).read_bytes() == packed.read_bytes()
    run_corpus(str(tiny_dir), n_rounds_extra=1, **kw)  # extending expands, then compresses the finished file
    assert corpus_file(tmp_path).name == "corpus.jsonl.gz" and not (tmp_path / "corpus.jsonl").exists()
    bigger = load_corpus(tmp_path, load_emotions())
    assert (
        len(bigger.stories) == 171 * 2
        and bigger.stories.head(171)["text"].tolist() == before.stories["text"].tolist()
    )
    # refusals
    (tmp_path / "corpus.jsonl").write_bytes(plain)
    with pytest.raises(ValueError, match="both"):
        load_corpus(tmp_path, load_emotions())
    with pytest.raises(ValueError, match="exists already"):
        compress_corpus(tmp_path)
    (tmp_path / "corpus.jsonl.gz").unlink()
    with pytest.raises(ValueError, match="not the corpus its provenance"):
        compress_corpus(tmp_path)  # the provenance now records the extended corpus
    with pytest.raises(FileNotFoundError):
        expand_corpus(tmp_path)
    (tmp_path / "corpus.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00truncated")
    (tmp_path / "corpus.jsonl").unlink()
    with pytest.raises(ValueError, match="not a complete gzip"):
        load_corpus(tmp_path, load_emotions())
    (tmp_path / "corpus.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + b"\xff" * 64)
    with pytest.raises(ValueError, match="not a complete gzip"):  # a corrupt deflate stream
        load_corpus(tmp_path, load_emotions())


def test_corpus_dir_for_follows_the_environment(monkeypatch, tmp_path):
    from emolib.corpus import corpus_dir_for

    monkeypatch.delenv("EMOLIB_CORPUS_DIR", raising=False)
    assert corpus_dir_for("smollm2-135m-instruct").parts[-3:] == ("data", "corpus", "smollm2-135m-instruct")
    monkeypatch.setenv("EMOLIB_CORPUS_DIR", str(tmp_path))
    assert corpus_dir_for("smollm2-135m-instruct") == tmp_path / "smollm2-135m-instruct"
    assert corpus_dir_for("smollm2-135m-instruct", root="x") == Path("x") / "smollm2-135m-instruct"
