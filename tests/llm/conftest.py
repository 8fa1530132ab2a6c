"""A real OpenAI-compatible server for the LLM planner: llama-cpp-python's, built once by
``make llama`` into its own environment, serving the test's own tiny model (tests/llm/model.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.llm.model import write_constant_model, write_embedding_model
from tower.testing import serve_llama

CACHE_DIR = Path(os.environ.get("TOWER_CACHE_DIR", Path.home() / ".cache" / "tower"))
LLAMA_PYTHON = Path(os.environ.get("TOWER_LLAMA_PYTHON", CACHE_DIR / "llama-venv" / "bin" / "python"))
START_TIMEOUT_S = 60


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"llama_server", "embedding_server"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.llm)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API base URL (``.../v1``) of a running llama-cpp-python server for chat completions."""
    folder = tmp_path_factory.mktemp("llama")
    yield from _serve(folder, write_constant_model(folder / "constant.gguf"))


@pytest.fixture(scope="session")
def embedding_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API base URL (``.../v1``) of a llama-cpp-python server with ``--embedding``, serving
    :func:`tests.llm.model.write_embedding_model`'s model under the name ``tower-test``."""
    folder = tmp_path_factory.mktemp("llama-embedding")
    yield from _serve(folder, write_embedding_model(folder / "bag-of-characters.gguf"), "--embedding", "true")


def _serve(folder: Path, model: Path, *options: str) -> Iterator[str]:
    if not LLAMA_PYTHON.exists():
        pytest.skip(f"{LLAMA_PYTHON} is missing: `make llama` builds llama-cpp-python's server (make test does)")
    try:
        with serve_llama(LLAMA_PYTHON, model, folder / "server.log", *options, start_timeout_s=START_TIMEOUT_S) as base:
            yield base
    except RuntimeError as exc:
        pytest.fail(str(exc))
