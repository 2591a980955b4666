"""Shared test fixtures: real tokenizers and a tiny LLaMA saved as a normal HF checkpoint."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Under pytest-xdist, each worker (and every command or kernel it starts) gets its share of the cores for torch's
# threads. With the default (every process using every core) two workers on 2 cores oversubscribe them: OpenMP's
# spinning threads made the DPO notebook take 170 s in the suite against 34 s alone. Must be set before torch loads.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

# Tests never reach a hub: everything is built from configs or read from local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Everything the suite and the commands it starts put in the temp dir (pytest's tmp_path, wandb's module-level
# `tempfile.TemporaryDirectory("wandb-media")`, which an xdist worker's exit never cleans up) goes into one folder
# per process, removed when the session ends: the suite leaves nothing behind in the system temp dir.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="tulu-lite-tests-"))
os.environ["TMPDIR"] = tempfile.tempdir = str(_SESSION_TMP)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)


from tulu_lite.tokenizer import BUNDLED_LLAMA_TOKENIZER, load_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
# ../shared/tokenizers beside the checkout (CI and developer machines); TULU_LITE_SHARED overrides.
SHARED_TOKENIZERS = Path(os.environ.get("TULU_LITE_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "tokenizers"


def tokenizer_dir(name: str) -> Path:
    """Directory of a real tokenizer; the large ones come from ../shared and skip when it is absent."""
    if name == "llama":
        return BUNDLED_LLAMA_TOKENIZER
    if name == "mistral":
        return FIXTURES / "tokenizers" / "mistral"
    path = SHARED_TOKENIZERS / name
    if not (path / "tokenizer.json").exists():
        pytest.skip(f"{name} tokenizer not available: {path} is absent (it ships in ../shared/tokenizers)")
    return path


@pytest.fixture(scope="session")
def llama_tokenizer():
    return load_tokenizer(tokenizer_dir("llama"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, llama_tokenizer):
    """A tiny random LLaMA (hidden 64, 2 layers, real 32k LLaMA vocab) saved with its tokenizer."""
    from tulu_lite.model.tiny import build_tiny_llama

    path = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_llama(llama_tokenizer).save_pretrained(path)
    llama_tokenizer.save_pretrained(path)
    return path
