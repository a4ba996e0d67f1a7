"""The post-training pipeline on a tiny random Llama: data rendering and masking, the seeded held-out split,
resumable teacher data, LoRA training (loss falls, checkpoints and provenance, resume, determinism) and
loading an adapter through ``load_model``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from emolib import posttrain as pt
from emolib.chat import encode

torch.set_num_threads(1)

DATA = [
    pt.Dialogue(f"d{i}", p, r)
    for i, (p, r) in enumerate(
        [
            ("What time is it?", "It is three o'clock in the afternoon."),
            ("Tell me about the fox.", "The quick brown fox jumps over the lazy dog."),
            ("How did she feel?", "She felt her heart race as the storm rolled over the town."),
            ("Where did he go?", "He walked slowly home, thinking about the letter."),
        ]
    )
]


@pytest.fixture(scope="module")
def plain_dir(tiny_dir, tmp_path_factory):
    """A template-less copy of the tiny model (the base-model path)."""
    d = tmp_path_factory.mktemp("plain") / "tiny-plain"
    shutil.copytree(tiny_dir, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    for extra in d.glob("chat_template.*"):
        extra.unlink()
    # Random init ties logits to tiny embeddings (|logit| < 1, loss stuck near ln(vocab)); larger embeddings
    # let a few LoRA steps move the loss, as on a real model.
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(d)
    with torch.no_grad():
        hf.get_input_embeddings().weight.mul_(30)
    hf.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def plain_tok(plain_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(plain_dir)
    assert not tok.chat_template
    return tok


def _cfg(plain_dir, **kw):
    base = dict(base=str(plain_dir), steps=4, lr=5e-3, batch_size=2, max_len=64, seed=0, rank=4, alpha=8)
    return pt.TrainConfig(**{**base, **kw})


def test_encode_dialogue_masks_the_prompt(plain_tok):
    ex = pt.encode_dialogue(plain_tok, "What time is it?", "It is three.")
    text = "Human: What time is it?\n\nAssistant: It is three."
    assert list(ex.ids[:-1]) == encode(plain_tok, text)
    assert ex.ids[-1] == plain_tok.eos_token_id and ex.labels[-1] == plain_tok.eos_token_id
    n_prompt = sum(label == pt.IGNORE for label in ex.labels)
    assert all(label == pt.IGNORE for label in ex.labels[:n_prompt])
    assert plain_tok.decode(ex.ids[n_prompt:-1]).strip() == "It is three."
    assert "Assistant:" in plain_tok.decode(ex.ids[:n_prompt])
    short = pt.encode_dialogue(plain_tok, "What time is it?", "It is three. " * 40, max_len=20)
    assert len(short.ids) == len(short.labels) == 20
    with pytest.raises(ValueError, match="max_len"):
        pt.encode_dialogue(plain_tok, "What time is it? " * 30, "Yes.", max_len=10)
    with pytest.raises(ValueError, match="Empty"):
        pt.encode_dialogue(plain_tok, "Hi", "  ")
    cut = pt.encode_dialogue(plain_tok, "What time is it?", "It is three.", ended=False)
    assert cut.ids == ex.ids[:-1] and plain_tok.eos_token_id not in cut.labels  # no "stop here" target


def test_load_sft_keeps_whether_the_teacher_stopped(tmp_path):
    rows = [
        {"id": "a", "prompt": "p", "response": "r.", "split": "train", "hit_eos": True, "degenerate": None},
        {
            "id": "b",
            "prompt": "p",
            "response": "r r",
            "split": "heldout",
            "hit_eos": False,
            "degenerate": None,
        },
        {
            "id": "c",
            "prompt": "p",
            "response": "x x x",
            "split": "train",
            "hit_eos": False,
            "degenerate": "looping",
        },
    ]
    f = tmp_path / "sft.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = pt.load_sft(f)
    assert [(d.id, d.split, d.ended) for d in ds] == [("a", "train", True), ("b", "heldout", False)]


def test_collate_pads_with_ignored_labels(plain_tok):
    exs = [pt.encode_dialogue(plain_tok, d.prompt, d.response) for d in DATA[:2]]
    b = pt.collate(exs, plain_tok.pad_token_id)
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape
    short = min(range(2), key=lambda j: len(exs[j].ids))
    n = len(exs[short].ids)
    assert (b["labels"][short, n:] == pt.IGNORE).all() and (b["attention_mask"][short, n:] == 0).all()


def test_heldout_split_is_seeded_and_order_free():
    ids = [f"train_{i:03d}" for i in range(434)]
    a = pt.heldout_ids(ids, 0.1, seed=0)
    assert len(a) == 43 and a == pt.heldout_ids(list(reversed(ids)), 0.1, seed=0)
    assert a != pt.heldout_ids(ids, 0.1, seed=1)


def test_batch_order_covers_epochs():
    o = pt.batch_order(5, steps=5, per_step=2, seed=3)
    assert o.shape == (5, 2)
    flat = o.ravel()
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))
    assert (o == pt.batch_order(5, 5, 2, 3)).all()


def test_sft_data_is_resumable(tiny, tmp_path):
    from emolib.generate import Sampling
    from emolib.prompt_sets import TrainingPrompt

    prompts = [
        TrainingPrompt(f"train_{i}", "everyday", f"Tell me about the fox number {i}.") for i in range(5)
    ]
    s = Sampling(temperature=0.7, top_p=0.9, max_new_tokens=6, batch_size=2, seed=0)
    held = pt.heldout_ids([p.id for p in prompts], 0.2, 0)
    whole = tmp_path / "whole.jsonl"
    pt.generate_sft(tiny.hf_model, tiny.tokenizer, prompts, whole, s, heldout=held, progress=False)
    part = tmp_path / "part.jsonl"
    r1 = pt.generate_sft(
        tiny.hf_model, tiny.tokenizer, prompts, part, s, heldout=held, max_batches=1, progress=False
    )
    assert r1.n_generated == 2
    with open(part, "a") as f:
        f.write('{"id": "torn')  # a run killed mid-write
    r2 = pt.generate_sft(tiny.hf_model, tiny.tokenizer, prompts, part, s, heldout=held, progress=False)
    assert r2.n_done_before == 2 and r2.n_generated == 3
    strip = [{k: v for k, v in r.items()} for r in pt.read_jsonl(part)]
    assert strip == pt.read_jsonl(whole)
    assert sum(r["split"] == "heldout" for r in strip) == 1
    assert all(r["prompt"].startswith("Tell me") for r in strip)


def test_chat_loss_is_a_mean_over_answer_tokens(plain_dir, plain_tok):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(plain_dir)
    one = pt.chat_loss(hf, plain_tok, DATA[:1])
    both = pt.chat_loss(hf, plain_tok, [(d.prompt, d.response) for d in DATA[:2]], batch_size=1)
    assert one > 0 and both > 0 and abs(pt.chat_loss(hf, plain_tok, DATA[:2], batch_size=2) - both) < 1e-4


@pytest.fixture(scope="module")
def trained(plain_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapters")
    cfg = _cfg(plain_dir)
    rep = pt.train(cfg, out, dialogues=DATA, progress=False)
    return cfg, out, rep


def test_training_lowers_the_loss_and_saves_checkpoints(trained, plain_tok):
    cfg, out, rep = trained
    assert cfg.checkpoint_steps() == [0, 1, 2, 4]
    assert sorted(rep.checkpoints) == [0, 1, 2, 4] and rep.resumed_from is None
    assert len(rep.losses) == 4 and rep.losses[-1] < rep.losses[0]
    for k in (0, 1, 2, 4):
        prov = json.loads((out / f"step_{k}" / "provenance.json").read_text())
        assert prov["step"] == k and len(prov["loss_curve"]) == k
        assert prov["run"]["seed"] == 0 and prov["run"]["steps"] == 4 and prov["run"]["lr"] == 5e-3
        assert len(prov["script_sha256"]) == 64 and len(prov["run"]["data_sha256"]) == 64
        assert prov["device"] == "cpu" and "wall_seconds_total" in prov
        assert (out / f"step_{k}" / "adapter_model.safetensors").stat().st_size < 5e6
        assert not list((out / f"step_{k}").glob("*.bin")) and not list((out / f"step_{k}").glob("*.pt"))
        conf = json.loads((out / f"step_{k}" / "adapter_config.json").read_text())
        assert conf["base_model_name_or_path"] == cfg.base and not (out / f"step_{k}" / "README.md").exists()
    assert pt.list_checkpoints(out) == {k: out / f"step_{k}" for k in (0, 1, 2, 4)}


def test_longer_training_fits_the_tiny_data(plain_dir, plain_tok, tmp_path):
    from emolib.models import load_model

    rep = pt.train(
        _cfg(plain_dir, steps=30, lr=5e-2, checkpoints=(0.0, 1.0)), tmp_path, dialogues=DATA, progress=False
    )
    assert sum(rep.losses[-3:]) / 3 < 0.7 * sum(rep.losses[:3]) / 3
    before = pt.chat_loss(load_model(str(plain_dir), adapter=tmp_path / "step_0"), plain_tok, DATA)
    after = pt.chat_loss(load_model(str(plain_dir), adapter=tmp_path / "step_30"), plain_tok, DATA)
    assert after < 0.8 * before


def test_rerun_skips_and_resume_matches(trained, plain_dir, tmp_path):
    cfg, out, rep = trained
    again = pt.train(cfg, out, dialogues=DATA, progress=False)
    assert again.skipped == [0, 1, 2, 4] and again.tokens == 0 and again.losses == rep.losses
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "step_4")
    resumed = pt.train(cfg, copy, dialogues=DATA, progress=False)
    assert resumed.resumed_from == 2 and resumed.skipped == [0, 1, 2]
    assert resumed.losses == pytest.approx(rep.losses, rel=1e-4, abs=1e-5)
    from safetensors.torch import load_file

    a = load_file(str(out / "step_4" / "adapter_model.safetensors"))
    b = load_file(str(copy / "step_4" / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    with pytest.raises(ValueError, match="other settings"):
        pt.train(_cfg(plain_dir, lr=1e-3), out, dialogues=DATA, progress=False)


def test_same_seed_same_curve(trained, plain_dir, tmp_path):
    cfg, _, rep = trained
    again = pt.train(cfg, tmp_path / "a", dialogues=DATA, progress=False)
    assert again.losses == pytest.approx(rep.losses, rel=1e-5)
    other = pt.train(_cfg(plain_dir, seed=1), tmp_path / "b", dialogues=DATA, progress=False)
    assert other.losses != pytest.approx(rep.losses, rel=1e-5)


def _sft_file(folder: Path) -> Path:
    f = folder / "sft.jsonl"
    rows = [
        {
            "id": d.id,
            "prompt": d.prompt,
            "response": d.response,
            "split": "train",
            "hit_eos": True,
            "degenerate": None,
        }
        for d in DATA
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def test_until_stops_at_a_checkpoint_and_resumes(plain_dir, tmp_path):
    cfg = _cfg(plain_dir, data=str(_sft_file(tmp_path)))
    part = pt.train(cfg, tmp_path / "a", progress=False, until=2)
    assert sorted(part.checkpoints) == [0, 1, 2] and len(part.losses) == 2
    assert pt.train(cfg, tmp_path / "a", progress=False, until=2).tokens == 0  # already there
    rest = pt.train(cfg, tmp_path / "a", progress=False)
    whole = pt.train(cfg, tmp_path / "b", progress=False)
    assert rest.resumed_from == 2 and rest.losses == pytest.approx(whole.losses, rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="checkpoint steps"):
        pt.train(cfg, tmp_path / "c", progress=False, until=3)


def test_verify_reproduces_and_catches_a_different_run(plain_dir, tmp_path):
    cfg = _cfg(plain_dir, data=str(_sft_file(tmp_path)))
    pt.train(cfg, tmp_path / "ref", progress=False)
    v = pt.verify(cfg, tmp_path / "ref", 2, progress=False)
    assert (
        v.ok
        and v.loss_max_abs_diff < 1e-4
        and v.adapter_rel_diff < 1e-3
        and "reproduced to step 2" in v.text()
    )
    # a checkpoint whose curve was tampered with is not reproduced
    prov_file = tmp_path / "ref" / "step_2" / "provenance.json"
    prov = json.loads(prov_file.read_text())
    prov["loss_curve"][1] += 0.5
    prov_file.write_text(json.dumps(prov))
    bad = pt.verify(cfg, tmp_path / "ref", 2, progress=False)
    assert (
        not bad.ok
        and bad.loss_max_abs_diff == pytest.approx(0.5, abs=1e-3)
        and "NOT reproduced" in bad.text()
    )
    with pytest.raises(ValueError, match="other settings"):
        pt.verify(_cfg(plain_dir, data=cfg.data, lr=1e-3), tmp_path / "ref", 2, progress=False)
    with pytest.raises(FileNotFoundError, match="step_3"):
        pt.verify(cfg, tmp_path / "ref", 3, progress=False)


def test_adapter_loads_and_changes_logits(trained, plain_dir):
    from emolib.models import load_model

    _, out, _ = trained
    base = load_model(str(plain_dir))
    step0 = load_model(str(plain_dir), adapter=out / "step_0")
    post = load_model(str(plain_dir), adapter=out / "step_4")
    ids = torch.tensor([encode(base.tokenizer, "Human: What time is it?\n\nAssistant:")])
    with torch.no_grad():
        lb, l0, lp = (m.hf_model(ids).logits for m in (base, step0, post))
    assert torch.allclose(lb, l0, atol=1e-5)  # LoRA starts as the identity
    assert (lb - lp).abs().max() > 1e-3
    assert post.info.adapter_hash and post.info.weights_hash != base.info.weights_hash


def test_cli_parses(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(
        pt,
        "train",
        lambda cfg, out, until=None: (
            seen.update(cfg=cfg, out=out)
            or pt.TrainReport(Path(out), {0: Path(out)}, None, [0], [1.0, 0.5], 10, 1.0)
        ),
    )
    assert pt.main(["train", "--base", "x/y", "--steps", "8", "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert (
        seen["cfg"].steps == 8
        and seen["cfg"].base == "x/y"
        and seen["cfg"].checkpoint_steps() == [0, 2, 4, 8]
    )


def test_run_data_writes_provenance(tiny, tmp_path):
    from emolib.generate import Sampling
    from emolib.prompt_sets import load_posttrain_prompts

    prompts = load_posttrain_prompts().training[:6]
    s = Sampling(temperature=0.7, top_p=0.9, max_new_tokens=5, batch_size=4, seed=0)
    out, rep = pt.run_data(tmp_path, sampling=s, loaded=tiny, prompts=prompts, progress=False)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["counts"]["records"] == 6 and prov["counts"]["train"] + prov["counts"]["heldout"] == 6
    assert prov["sampling"]["temperature"] == 0.7 and len(prov["prompts_sha256"]) == 64
    assert prov["teacher"]["weights_hash"] == tiny.info.weights_hash
    assert prov["sft_sha256"] == pt.file_sha256(out / pt.SFT_FILE)
    assert prov["prompts_file"] == "data/prompts/posttrain_prompts.json"
    assert len(pt.load_sft(out / pt.SFT_FILE, usable_only=False)) == 6


def test_chat_loss_of_a_loaded_model_is_stored_and_read_back(tiny, tmp_path, monkeypatch):
    from emolib import store

    monkeypatch.setenv("EMOLIB_STORE", "on")
    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EMOLIB_STORE_DIR", str(tmp_path / "committed"))
    store.COUNTS.clear()
    direct = pt.chat_loss(tiny.hf_model, tiny.tokenizer, DATA)  # a bare transformers model: no store
    assert store.COUNTS["computed"] == 0
    first = pt.chat_loss(tiny, tiny.tokenizer, DATA)
    again = pt.chat_loss(tiny, tiny.tokenizer, DATA)
    assert store.COUNTS["computed"] == 1 and store.COUNTS["cache"] == 1
    assert first == again == direct
    pt.chat_loss(tiny, tiny.tokenizer, DATA[:1])  # other dialogues: another entry
    assert store.COUNTS["computed"] == 2
    store.COUNTS.clear()
