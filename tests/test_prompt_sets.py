"""Typed prompt-set loaders: the committed files, and malformed copies that must fail with a clear message."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import statistics

import pytest

from emolib.constants import PROMPTS_DIR
from emolib.prompt_sets import (
    ACTIVITIES_PER_CATEGORY,
    ACTIVITY_CATEGORIES,
    FEELING_FRAME,
    POSTTRAIN_KINDS,
    PREFERENCE_FRAME,
    RATHER_FRAME,
    REPLY_LENGTH_TOLERANCE,
    TRAINING_CATEGORIES,
    IntensityTemplate,
    load_activities,
    load_implicit,
    load_intensity,
    load_posttrain_prompts,
    load_sycophancy,
    normalize_text,
)
from emolib.stimuli import load_emotions

LICENCE = "MIT (this project's own wording)"


def _raw(name: str) -> dict:
    return json.loads((PROMPTS_DIR / name).read_text(encoding="utf-8"))


def _write(tmp_path, data, name="bad.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return p


def _fails(loader, path, *parts):
    """``loader(path)`` raises ValueError whose message names the file and contains every one of ``parts``."""
    with pytest.raises(ValueError) as e:
        loader(path)
    msg = str(e.value)
    assert str(path) in msg, msg
    for part in parts:
        assert part in msg, (part, msg)
    return msg


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


# --------------------------------------------------------------------------------------- committed files
def test_committed_files_load_with_stated_counts():
    imp = load_implicit()
    assert len(imp.prompts) >= 12 and len(imp.neutral) >= 8
    assert all(p.expected in load_emotions() for p in imp.prompts)
    assert len(load_intensity()) >= 4

    acts = load_activities()
    assert len(acts) == 64
    for c in ACTIVITY_CATEGORIES:
        assert sum(a.category == c for a in acts) == ACTIVITIES_PER_CATEGORY

    syc = load_sycophancy()
    assert len(syc.scenarios) >= 24 and len(syc.clear_cut) >= 20

    pt = load_posttrain_prompts()
    for kind in POSTTRAIN_KINDS:
        got = pt.by_kind(kind)
        assert len(got) >= 64 and {p.kind for p in got} == {kind}
    assert len(pt.measurement) == sum(len(pt.by_kind(k)) for k in POSTTRAIN_KINDS)
    assert len(pt.training) >= 400
    assert {t.category for t in pt.training} == set(TRAINING_CATEGORIES)
    with pytest.raises(ValueError, match="training"):
        pt.by_kind("training")


@pytest.mark.parametrize("name", ["activities.json", "sycophancy.json", "posttrain_prompts.json"])
def test_new_files_carry_description_and_licence(name):
    data = _raw(name)
    assert data["licence"] == LICENCE
    assert isinstance(data["description"], str) and len(data["description"]) > 40


def test_records_are_frozen():
    a = load_activities()[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.text = "something else"  # type: ignore[misc]


def test_intensity_fill():
    t = IntensityTemplate("t", "took {x} mg", (200, 98.6, 500.0))
    assert t.filled() == ("took 200 mg", "took 98.6 mg", "took 500 mg")


# --------------------------------------------------------------------------------------- activities
def test_activities_fit_the_three_sentence_frames():
    acts = load_activities()
    for a in acts:
        assert a.text[0].islower() and a.text[-1].isalnum(), a
        assert a.text == a.text.strip() and "\n" not in a.text
        assert 5 <= len(a.text.split()) <= 12, a
        # no speaker-dependent pronouns: the phrase must mean the same after "Would you" and "I would"
        assert not _words(a.text) & {"i", "me", "my", "you", "your", "yours", "we", "our"}, a
        rather = RATHER_FRAME.format(a=a.text)
        feel = FEELING_FRAME.format(a=a.text)
        assert rather.startswith("I would rather ") and rather.endswith(a.text + ".")
        assert feel.endswith(a.text + "?") and ".?" not in feel and "??" not in feel
    q = PREFERENCE_FRAME.format(a=acts[0].text, b=acts[-1].text)
    assert q == f"Would you prefer to (A) {acts[0].text} or (B) {acts[-1].text}?"


def test_activities_avoid_emotion_words_and_have_similar_lengths():
    acts = load_activities()
    emotions = load_emotions()
    for a in acts:
        hits = [e for e in emotions if re.search(rf"\b{re.escape(e)}\b", a.text.lower())]
        assert not hits, (a.id, hits)
    lengths = {
        c: statistics.mean(len(a.text.split()) for a in acts if a.category == c) for c in ACTIVITY_CATEGORIES
    }
    overall = statistics.mean(lengths.values())
    assert all(abs(v - overall) <= 1.5 for v in lengths.values()), lengths


# --------------------------------------------------------------------------------------- sycophancy
def test_sycophancy_pairs_match_in_length_and_opening():
    syc = load_sycophancy()
    for s in (*syc.scenarios, *syc.clear_cut):
        a, b = len(s.sycophantic), len(s.honest)
        assert abs(a - b) <= REPLY_LENGTH_TOLERANCE * max(a, b), s.id
        # same opening words, so the first tokens do not decide a likelihood readout
        assert s.sycophantic.split()[:2] == s.honest.split()[:2], s.id
    assert len({s.domain for s in syc.scenarios}) >= 20
    assert all(s.flaw and "\n" not in s.flaw for s in syc.scenarios)


# --------------------------------------------------------------------------------------- post-training
def test_training_prompts_disjoint_from_measurement_prompts():
    pt = load_posttrain_prompts()
    measured = [p.text for p in pt.measurement]
    assert len({normalize_text(t) for t in measured}) == len(measured)
    keys = {t.lower().strip() for t in measured} | {normalize_text(t) for t in measured}
    for t in pt.training:
        assert t.text.lower().strip() not in keys and normalize_text(t.text) not in keys, t.id
    # no near-duplicates either: word-set overlap (Jaccard) well below identity
    mw = [(m, _words(m)) for m in measured]
    for t in pt.training:
        tw = _words(t.text)
        for m, w in mw:
            assert len(tw & w) / len(tw | w) < 0.7, (t.text, m)


def test_posttrain_prompts_are_varied():
    pt = load_posttrain_prompts()
    for kind in POSTTRAIN_KINDS:
        lengths = [len(p.text.split()) for p in pt.by_kind(kind)]
        assert max(lengths) >= 2.5 * min(lengths), kind
    assert len({normalize_text(t.text) for t in pt.training}) == len(pt.training)


# --------------------------------------------------------------------------------------- malformed files
def test_implicit_missing_field_and_unknown_emotion(tmp_path):
    data = _raw("implicit_emotion.json")
    bad = copy.deepcopy(data)
    del bad["prompts"][1]["expected"]
    _fails(load_implicit, _write(tmp_path, bad), "prompts[1]", "missing field", "expected")

    bad = copy.deepcopy(data)
    bad["prompts"][2]["expected"] = "hangry"
    _fails(load_implicit, _write(tmp_path, bad), "prompts[2]", "unknown emotion", "hangry")

    bad = copy.deepcopy(data)
    bad["neutral"].append(bad["neutral"][0].upper())
    _fails(
        load_implicit, _write(tmp_path, bad), f"neutral[{len(data['neutral'])}]", "duplicate", "neutral[0]"
    )

    bad = copy.deepcopy(data)
    bad["prompts"][0]["expcted"] = "sad"
    _fails(load_implicit, _write(tmp_path, bad), "prompts[0]", "unknown field", "expcted")


@pytest.mark.parametrize(
    "edit,parts",
    [
        (lambda t: t.update(text="I took some ibuprofen."), ["templates[0] (name 'medicine dose')", "{x}"]),
        (lambda t: t.update(text="took {x} and {x}"), ["templates[0]", "exactly once"]),
        (lambda t: t.update(text="took {x} of {y}"), ["templates[0]", "braces"]),
        (
            lambda t: t.update(values=[1, 5, 3, 8]),
            ["templates[0]", "strictly increasing", "5 is followed by 3"],
        ),
        (lambda t: t.update(values=[1, 1, 3]), ["templates[0]", "strictly increasing"]),
        (lambda t: t.update(values=[1, 2]), ["templates[0]", "at least 3"]),
        (lambda t: t.update(values=[1, "2", 3]), ["templates[0]", "finite numbers", "'2'"]),
        (lambda t: t.update(values=[False, 2, 3]), ["templates[0]", "finite numbers"]),
        (lambda t: t.pop("values"), ["templates[0]", "missing field", "values"]),
    ],
)
def test_malformed_intensity(tmp_path, edit, parts):
    data = _raw("intensity.json")
    edit(data["templates"][0])
    _fails(load_intensity, _write(tmp_path, data), *parts)


def test_intensity_duplicate_name(tmp_path):
    data = _raw("intensity.json")
    data["templates"][2]["name"] = data["templates"][0]["name"]
    _fails(load_intensity, _write(tmp_path, data), "templates[2]", "duplicate name")


@pytest.mark.parametrize(
    "edit,parts",
    [
        (lambda a: a[5].update(id=a[0]["id"]), ["activities[5] (id 'pleasant_01')", "duplicate id"]),
        (lambda a: a[9].update(text=a[0]["text"].upper().lower()), ["activities[9]", "duplicate text"]),
        (
            lambda a: a[3].update(category="fun"),
            ["activities[3] (id 'pleasant_04')", "unknown category", "fun"],
        ),
        (lambda a: a[10].update(category="pleasant"), ["each category", "'pleasant': 9", "'useful': 7"]),
        (lambda a: a.pop(), ["each category", "'self_related': 7"]),
        (lambda a: a[0].update(text="Watch the sun set over a quiet lake"), ["activities[0]", "lower-case"]),
        (
            lambda a: a[0].update(text="watch the sun set over a quiet lake."),
            ["activities[0]", "punctuation"],
        ),
        (lambda a: a[0].update(text="watch the sunset"), ["activities[0]", "5-12 words"]),
        (lambda a: a[4].pop("category"), ["activities[4] (id 'pleasant_05')", "missing field", "category"]),
        (lambda a: a[4].update(text=""), ["activities[4]", "non-empty string"]),
    ],
)
def test_malformed_activities(tmp_path, edit, parts):
    data = _raw("activities.json")
    edit(data["activities"])
    _fails(load_activities, _write(tmp_path, data), *parts)


@pytest.mark.parametrize(
    "edit,parts",
    [
        (lambda d: d["scenarios"][2].pop("flaw"), ["scenarios[2] (id 'syc_03')", "missing field", "flaw"]),
        (
            lambda d: d["clear_cut"][0].update(id="syc_01"),
            ["clear_cut[0] (id 'syc_01')", "duplicate id", "scenarios[0]"],
        ),
        (
            lambda d: d["scenarios"][1].update(honest="Thanks, but no."),
            ["scenarios[1] (id 'syc_02')", "differ too much in length"],
        ),
        (
            lambda d: d["clear_cut"][3].update(honest=d["clear_cut"][3]["sycophantic"]),
            ["clear_cut[3]", "same text"],
        ),
        (
            lambda d: d["clear_cut"][4].update(user=d["scenarios"][0]["user"]),
            ["clear_cut[4]", "duplicate user"],
        ),
        (lambda d: d.pop("clear_cut"), ["top level", "missing list 'clear_cut'"]),
        (lambda d: d.update(scenarios=[]), ["'scenarios'", "non-empty"]),
    ],
)
def test_malformed_sycophancy(tmp_path, edit, parts):
    data = _raw("sycophancy.json")
    edit(data)
    _fails(load_sycophancy, _write(tmp_path, data), *parts)


@pytest.mark.parametrize(
    "edit,parts",
    [
        (
            lambda d: d["training"][7].update(text=d["self"][3]["text"].upper().rstrip("?!.")),
            ["training[7] (id 'train_008')", "duplicate text", "self[3] (id 'self_04')"],
        ),
        (lambda d: d["training"][0].update(id="neutral_01"), ["training[0]", "duplicate id", "neutral[0]"]),
        (
            lambda d: d["challenging"][5].update(kind="neutral"),
            ["challenging[5] (id 'challenging_06')", "does not match"],
        ),
        (lambda d: d["training"][2].update(category="misc"), ["training[2]", "unknown category", "misc"]),
        (lambda d: d["self"][1].pop("text"), ["self[1] (id 'self_02')", "missing field", "text"]),
        (lambda d: d.update(neutral="not a list"), ["'neutral'", "non-empty JSON list"]),
        (lambda d: d["neutral"].__setitem__(0, "just a string"), ["neutral[0]", "expected an object"]),
    ],
)
def test_malformed_posttrain(tmp_path, edit, parts):
    data = _raw("posttrain_prompts.json")
    edit(data)
    _fails(load_posttrain_prompts, _write(tmp_path, data), *parts)


@pytest.mark.parametrize(
    "loader", [load_implicit, load_intensity, load_activities, load_sycophancy, load_posttrain_prompts]
)
def test_not_json_not_object_and_missing_file(tmp_path, loader):
    _fails(loader, _write(tmp_path, "{broken"), "not valid JSON")
    _fails(loader, _write(tmp_path, "[1, 2]"), "JSON object")
    with pytest.raises(FileNotFoundError):
        loader(tmp_path / "nope.json")
