"""The data committed with the repository: unmodified third-party files, and a complete corpus for the
embedded default model with honest provenance."""

from __future__ import annotations

import json

from emolib.constants import DATA_DIR
from emolib.corpus import EARLIER_PROMPTS, corpus_dir_for, load_corpus, prompts_hash
from emolib.stimuli import file_sha256, load_emotions

SHA = {
    "Ratings_Warriner_et_al.csv": "78ac8107c78e116bb96538fae4faa47281a155f5f8fe39f30bbc6ea3db05b446",
    "emotions_171.json": "8f81e9727499247a93c8dcba3811b8c3ae26e7bd3821d2de2633c86d3da2bc8b",
    "story_topics_100.json": "b5871cc89510eece96d22a3de5d4afe1f88f8bab74e40aabde6bedf3f71d4b84",
}


def test_third_party_files_unmodified():
    for name, sha in SHA.items():
        assert file_sha256(DATA_DIR / name) == sha, name


def test_default_corpus_is_complete_and_documented():
    folder = corpus_dir_for("smollm2-135m-instruct")
    emotions = load_emotions()
    c = load_corpus(folder, emotions)
    per = c.stories.groupby("emotion").size()
    assert set(per.index) == set(emotions)
    assert per.min() >= 20
    assert len(c.neutral) >= 200
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["corpus_sha256"] == c.sha256  # provenance describes exactly this file
    # made by this code's prompts, or by an earlier wording recorded with the commit that holds it
    assert prov["prompts_hash"] == prompts_hash() or prov["prompts_hash"] in EARLIER_PROMPTS
    assert prov["counts"]["stories"] == len(c.stories)
    assert prov["model"]["name"] == "smollm2-135m-instruct"
    for key in ("temperature", "top_p", "max_new_tokens", "seed"):
        assert key in prov["sampling"]
