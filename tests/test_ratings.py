"""Warriner ratings: loading, validation and the join to the 171 emotion words (real files, no model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emolib.constants import RATINGS_FILE
from emolib.ratings import join_ratings, load_lemma_map, load_ratings
from emolib.stimuli import file_sha256, load_emotions

WARRINER_SHA256 = "78ac8107c78e116bb96538fae4faa47281a155f5f8fe39f30bbc6ea3db05b446"  # PROVENANCE.md


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return load_ratings()


@pytest.fixture(scope="module")
def emotions() -> list[str]:
    return load_emotions()


@pytest.fixture
def small() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Word": ["happy", "Sad", "horror", "calm"],
            "V.Mean.Sum": [8.0, 2.0, 3.0, 7.0],
            "A.Mean.Sum": [6.0, 3.0, 6.5, 2.0],
        }
    )


def test_real_ratings_load_unmodified(ratings):
    assert file_sha256(RATINGS_FILE) == WARRINER_SHA256
    assert list(ratings.columns) == ["Word", "V.Mean.Sum", "A.Mean.Sum"]
    assert len(ratings) == 13915
    assert "null" in set(ratings["Word"])  # not read as NaN
    for col in ("V.Mean.Sum", "A.Mean.Sum"):
        assert ratings[col].dtype == np.float64 and ratings[col].between(1, 9).all()


def test_join_real_emotions_coverage(ratings, emotions):
    exact = join_ratings(emotions, ratings, lemma_map={})
    assert exact.n_exact >= 126 and exact.n_lemma == 0
    full = join_ratings(emotions, ratings)
    assert full.n_exact == exact.n_exact
    assert len(full.table) > 126 and full.coverage == pytest.approx(len(full.table) / 171)
    assert sorted(full.unmatched + list(full.table.index)) == sorted(emotions)
    # rows keep the emotion order, and position points back into the emotion list
    assert list(full.table["position"]) == sorted(full.table["position"])
    assert [emotions[p] for p in full.table["position"]] == list(full.table.index)
    assert set(full.table["match"]) == {"exact", "lemma"}
    summary = full.to_dict()
    assert summary["n_matched"] == summary["n_exact"] + summary["n_lemma"] == len(full.table)
    assert summary["lemma_matches"]["horrified"] == "horror"


def test_join_values_come_from_the_right_rows(ratings, emotions):
    table = join_ratings(emotions, ratings).table
    by_word = ratings.set_index("Word")
    for emotion, word in [("afraid", "afraid"), ("horrified", "horror"), ("loving", "love")]:
        assert table.loc[emotion, "lemma"] == word
        assert table.loc[emotion, "valence"] == by_word.loc[word, "V.Mean.Sum"]
        assert table.loc[emotion, "arousal"] == by_word.loc[word, "A.Mean.Sum"]
    assert table.loc["afraid", "valence"] < 4 and table.loc["loving", "valence"] > 6


def test_lemma_map_is_sound(ratings, emotions):
    lemma_map = load_lemma_map()
    assert list(lemma_map.columns) == ["word", "lemma", "note"]
    words = set(ratings["Word"].str.lower())
    used = lemma_map[lemma_map["lemma"] != ""]
    assert len(used) > 0
    assert [w for w in used["lemma"] if w not in words] == []  # every lemma is rated
    assert [w for w in lemma_map["word"] if w not in emotions] == []  # every entry is an emotion word
    assert [w for w in lemma_map["word"] if w in words] == []  # and one without an exact match
    assert (lemma_map["note"].str.strip() != "").all()


def test_join_exact_wins_and_is_case_insensitive(small):
    j = join_ratings(
        ["sad", "happy", "horrified", "bored"], small, lemma_map={"happy": "calm", "horrified": "horror"}
    )
    assert list(j.table.index) == ["sad", "happy", "horrified"]
    assert j.table.loc["sad", "lemma"] == "Sad" and j.table.loc["sad", "match"] == "exact"
    assert j.table.loc["happy", "valence"] == 8.0  # exact match, not the mapped "calm"
    assert j.table.loc["horrified", "match"] == "lemma" and j.table.loc["horrified", "valence"] == 3.0
    assert j.unmatched == ["bored"] and j.coverage == pytest.approx(0.75)


def test_join_ignores_unused_map_entries_and_rejects_missing_lemma(small):
    j = join_ratings(["happy"], small, lemma_map={"elated": "nonexistent"})
    assert j.coverage == 1.0
    with pytest.raises(ValueError, match="nonexistent"):
        join_ratings(["happy", "elated"], small, lemma_map={"elated": "nonexistent"})


def test_join_rejects_duplicate_emotions(small):
    with pytest.raises(ValueError, match="duplicate"):
        join_ratings(["happy", "Happy"], small, lemma_map={})


def test_malformed_ratings_csv(tmp_path, small):
    path = tmp_path / "ratings.csv"
    small.drop(columns=["A.Mean.Sum"]).to_csv(path)
    with pytest.raises(ValueError, match="A.Mean.Sum"):
        load_ratings(path)
    bad = small.astype({"V.Mean.Sum": object})
    bad.loc[1, "V.Mean.Sum"] = "n/a"
    bad.to_csv(path)
    with pytest.raises(ValueError, match="V.Mean.Sum"):
        load_ratings(path)
    small.to_csv(path)
    assert load_ratings(path)["V.Mean.Sum"].tolist() == [8.0, 2.0, 3.0, 7.0]


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_ratings(tmp_path / "absent.csv")
    with pytest.raises(FileNotFoundError):
        load_lemma_map(tmp_path / "absent.csv")


def test_malformed_lemma_map(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("word,lemma\nloving,love\n", encoding="utf-8")
    with pytest.raises(ValueError, match="note"):
        load_lemma_map(path)
    path.write_text("word,lemma,note\nloving,love,a\nLoving,lover,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="duplicate"):
        load_lemma_map(path)
