"""Shared fixtures: offline environment, seeds, a tiny random model and the real packaged one."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# the result store (emolib.store) is off unless a test turns it on: tests count forwards and hooks, and must
# never read an entry another run left behind
os.environ.setdefault("EMOLIB_STORE", "off")
os.environ.pop("EMOLIB_CORPUS_DIR", None)  # the tests read the committed corpora in data/corpus

import random  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from tiny import make_tiny_model_dir  # noqa: E402

torch.set_num_threads(1)  # tiny models: one thread is faster than two fighting over a shared machine


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    from emolib.models import load_model

    return load_model(str(tiny_dir))


@pytest.fixture(scope="session")
def smollm():
    """The real packaged default (converted once into the user cache)."""
    from emolib.models import load_model

    return load_model("smollm2-135m-instruct")
