"""Fixtures shared by several test modules."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _work_ledger(tmp_path_factory):
    """Training passes and evaluations append to the work ledger (``vsae.buildlog``); the tests' go to a
    temporary file (inherited by the smoke book's kernels), not to the user's ``$VSAE_HOME``."""
    old = os.environ.get("VSAE_WORK_LEDGER")
    os.environ["VSAE_WORK_LEDGER"] = str(tmp_path_factory.mktemp("ledger") / "work.jsonl")
    yield
    if old is None:
        os.environ.pop("VSAE_WORK_LEDGER", None)
    else:
        os.environ["VSAE_WORK_LEDGER"] = old


@pytest.fixture
def one_thread():
    """Run the test's torch ops on one thread: on tiny tensors, one thread avoids OpenMP stalls when
    other jobs share the machine's two cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
