"""The data committed with the repository: unmodified third-party files, and a complete corpus for the
embedded default model with honest provenance."""

from __future__ import annotations

import json

from emolib.constants import DATA_DIR
from emolib.corpus import (
    EARLIER_PROMPTS,
    _read_bytes,
    _recorded_prompts_hash,
    corpus_dir_for,
    corpus_file,
    load_corpus,
    prompts_hash,
)
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
    assert per.min() >= 60  # the crossed design of issue #8: 60 topics per emotion
    assert len(c.usable_neutral()) >= 500  # enough clean neutral dialogues for a stable denoising subspace
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["corpus_sha256"] == c.sha256  # provenance describes exactly this file
    # made by this code's prompts, or by an earlier wording recorded with the commit that holds it
    recorded = _recorded_prompts_hash(prov)
    assert recorded == prompts_hash(chat=True) or recorded in EARLIER_PROMPTS
    assert prov["counts"]["stories"] == len(c.stories)
    assert prov["model"]["name"] == "smollm2-135m-instruct"
    for key in ("temperature", "top_p", "max_new_tokens", "seed"):
        assert key in prov["sampling"]


def test_default_corpus_file_is_complete_in_job_order():
    """data/corpus/<default>: written by a resumable, append-only run. Its provenance counts and hash describe
    the whole file, every job of the design is there, and the run says it is complete."""
    import hashlib

    folder = corpus_dir_for("smollm2-135m-instruct")
    prov = json.loads((folder / "provenance.json").read_text())
    n = prov["counts"]["stories"] + prov["counts"]["neutral"]
    lines = _read_bytes(corpus_file(folder)).splitlines(keepends=True)
    assert len(lines) == n
    assert hashlib.sha256(b"".join(lines)).hexdigest() == prov["corpus_sha256"]
    recs = [json.loads(x) for x in lines]
    assert len({r["id"] for r in recs}) == n
    jobs = prov["jobs"]
    n_jobs = 171 * (jobs["n_per_emotion"] + jobs.get("n_rounds_extra", 0)) + jobs["n_neutral"]
    n_jobs += jobs.get("n_neutral_extra", 0)
    assert n == n_jobs and prov["complete"] is True


def test_committed_corpus_files_stay_small():
    """A corpus file above 20 MB is committed compressed (python -m emolib.corpus --compress DIR)."""
    for f in sorted(DATA_DIR.glob("corpus/*/corpus.jsonl*")):
        assert f.stat().st_size < 20_000_000, f"{f} is {f.stat().st_size / 1e6:.0f} MB: compress it"


def test_posttrain_data_and_adapters_are_documented():
    folder = DATA_DIR / "posttrain"
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["sft_sha256"] == file_sha256(folder / "sft.jsonl")
    ckpts = sorted((folder / "adapters").glob("step_*/provenance.json"))
    assert len(ckpts) >= 2
    for p in ckpts:
        a = json.loads(p.read_text())
        assert a["run"]["data_sha256"] == prov["sft_sha256"], p
        assert len(a["loss_curve"]) == a["step"], p
        assert (p.parent / "adapter_model.safetensors").stat().st_size < 5_000_000, p


def test_committed_vectors_match_the_committed_corpus():
    """Chapter 01's vectors committed for the steering chapters (results/<model>/vectors/layer_*.json) were
    fitted on exactly the corpus in data/corpus/<model>/: a corpus swap must come with refitted vectors."""
    from emolib.constants import REPO_ROOT

    sidecars = sorted((REPO_ROOT / "results").glob("*/vectors/layer_*.json"))
    assert sidecars, "no committed vectors"
    for path in sidecars:
        meta = json.loads(path.read_text())
        c = load_corpus(corpus_dir_for(meta["model"]), load_emotions())
        assert meta["corpus_sha256"] == c.sha256, path
        assert path.with_suffix(".safetensors").exists(), path
        assert meta["hook"] == f"blocks.{meta['layer']}.hook_resid_post"
        assert len(meta["emotions"]) == 171
