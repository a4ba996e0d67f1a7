"""Data-file validation and the metrics.json helper."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emolib.config import VectorsConfig
from emolib.results import Run, read_metrics, write_metrics
from emolib.stimuli import check_emotions, load_emotions, load_topics


def test_real_files_load():
    emotions = load_emotions()
    assert len(emotions) == 171 and emotions[0] == "afraid" and "at ease" in emotions
    assert len(load_topics()) == 100


@pytest.mark.parametrize(
    "content,match",
    [
        ('["calm", "happy", "Calm"]', "duplicate"),
        ('{"calm": 1}', "list"),
        ('["calm", 3]', "not non-empty strings"),
        ('["calm",', "not valid JSON"),
        ("[]", "non-empty"),
    ],
)
def test_malformed_emotion_files(tmp_path, content, match):
    p = tmp_path / "e.json"
    p.write_text(content)
    with pytest.raises(ValueError, match=match):
        load_emotions(p)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_topics(tmp_path / "nope.json")


def test_unknown_emotion():
    with pytest.raises(ValueError, match="hangry"):
        check_emotions(["calm", "hangry"], load_emotions())
    assert check_emotions(["Calm "], load_emotions()) == ["calm"]


def test_metrics_merge_never_drops_keys(tmp_path):
    write_metrics("m", {"a": 1, "_provenance": {"nb1": {"x": 1}}}, tmp_path)
    write_metrics(
        "m",
        {"b": np.float32(0.5), "c": [np.int64(2)], "d": float("nan"), "_provenance": {"nb2": {"y": 2}}},
        tmp_path,
    )
    m = read_metrics("m", tmp_path)
    assert m["a"] == 1 and m["b"] == 0.5 and m["c"] == [2] and m["d"] is None
    assert set(m["_provenance"]) == {"nb1", "nb2"}


def test_malformed_metrics_is_not_overwritten(tmp_path):
    p = tmp_path / "m" / "metrics.json"
    p.parent.mkdir()
    p.write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        write_metrics("m", {"a": 1}, tmp_path)
    assert p.read_text() == "{broken"


def test_run_records_provenance_and_values(tmp_path):
    cfg = VectorsConfig(notebook="nbX", model="org/model", seed=3, quick=True)
    run = Run(cfg, root=tmp_path, glue=False)
    run.record("score", 0.25)
    data = json.loads((tmp_path / "org--model" / "metrics.json").read_text())
    assert data["score"] == 0.25
    recorded = data["_provenance"]["nbX"]["config"]
    assert recorded["seed"] == 3 and recorded["n_null"] == 5  # quick mode applied inside the config
    with pytest.raises(TypeError):
        run.record("bad", object())


class _Result:
    def metrics(self):
        return {"x_r": 0.5, "x_r_ci_low": 0.1, "x_r_ci_high": 0.8}


def test_record_result_in_one_call(tmp_path):
    run = Run(VectorsConfig(notebook="nbY", model="m"), root=tmp_path, glue=False)
    run.record_result(_Result())
    assert {"x_r", "x_r_ci_low", "x_r_ci_high"} <= set(read_metrics("m", tmp_path))


def test_a_key_recorded_twice_is_glued_once(tmp_path, monkeypatch):
    """The book build (-W) refuses a glue key seen twice in one page: a typed result's metrics() that repeat a
    key the notebook already recorded must not glue it again, and a second, different value is an error."""
    import myst_nb

    glued = []
    monkeypatch.setattr(myst_nb, "glue", lambda key, value, display=True: glued.append(key))
    run = Run(VectorsConfig(notebook="nbZ", model="m"), root=tmp_path)
    run.record("layer", 20)
    run.record_result(_Result())
    run.record("layer", 20)
    run.record_result(_Result())
    assert glued == ["layer", "x_r", "x_r_ci_low", "x_r_ci_high"]
    with pytest.raises(ValueError, match="recorded twice with different values"):
        run.record("layer", 21)
    assert read_metrics("m", tmp_path)["layer"] == 20


def _write_many(args):
    import time

    from emolib.results import write_metrics

    root, tag, start = args
    time.sleep(max(start - time.time(), 0))  # both processes begin together
    for i in range(200):
        write_metrics("m", {f"{tag}_{i}": i}, root)


def test_concurrent_writers_lose_no_keys(tmp_path):
    """Two chapters of one model running at once both merge into metrics.json: no key may be lost."""
    import multiprocessing as mp
    import time

    from emolib.results import read_metrics

    start = time.time() + 5
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_write_many, [(str(tmp_path), "a", start), (str(tmp_path), "b", start)], chunksize=1)
    got = read_metrics("m", tmp_path)
    assert {f"{t}_{i}" for t in "ab" for i in range(200)} <= set(got)
