"""Fixtures for the task-data tests: the shared benchmark folder and small files written here."""

from __future__ import annotations

import pytest

from ia2.errors import IA2Error
from ia2.paths import data_dir
from ia2.tasks import registry
from task_files import qasc_rows, sciq_rows, write_jsonl


@pytest.fixture(scope="session")
def shared_data():
    """The read-only benchmark folder; tests that need it are skipped where it is absent."""
    try:
        root = data_dir()
    except IA2Error as e:
        pytest.skip(f"no benchmark data: {e}")
    if not (root / "sst2" / "train.tsv").is_file():
        pytest.skip(f"{root} lacks the benchmark files")
    return root


@pytest.fixture(autouse=True)
def fresh_cache():
    """Every test parses its files anew (tmp files are reused across tests by name)."""
    registry._CACHE.clear()
    yield
    registry._CACHE.clear()


@pytest.fixture
def offline_only(tmp_path):
    """A data directory with the benchmarks that are not in the shared folder (SciQ, QASC,
    GSM-Symbolic) in their documented local layout."""
    write_jsonl(tmp_path / "sciq" / "train.jsonl", sciq_rows(40))
    write_jsonl(tmp_path / "sciq" / "test.jsonl", sciq_rows(12))
    write_jsonl(tmp_path / "qasc" / "validation.jsonl", qasc_rows(16))
    write_jsonl(tmp_path / "gsm_symbolic" / "test.jsonl",
                [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}
                 for i in range(10)])
    return tmp_path
