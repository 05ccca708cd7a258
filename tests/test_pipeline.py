"""How :class:`vsae.pipeline.Experiment` runs per-SAE evals: chunks, what is stored when, what is recomputed."""

from __future__ import annotations

import json
import types

import pandas as pd
import pytest

from vsae import buildlog, pipeline
from vsae.design import Variant
from vsae.models import TopKSAEConfig
from vsae.store import Store


def _variants(n: int) -> list[Variant]:
    return [Variant(f"topk_k4_s{i}", TopKSAEConfig(d_in=8, d_sae=16, k=4, seed=i))
            for i in range(n)]


@pytest.fixture
def ex(monkeypatch, tmp_path):
    monkeypatch.setenv("VSAE_WORK_LEDGER", str(tmp_path / "work.jsonl"))
    ex = pipeline.Experiment("smoke", store=Store(tmp_path / "store"))
    trained = []
    monkeypatch.setattr(pipeline.Experiment, "train",
                        lambda self, vs, progress=True, load=True: trained.append((len(vs), load)) or {})
    monkeypatch.setattr("vsae.models.load_sae", lambda d: types.SimpleNamespace(to=lambda dev: types.SimpleNamespace(eval=lambda: d)))
    ex.trained = trained
    return ex


def test_chunked_evals_store_each_chunk_before_the_next_and_resume_after_a_kill(ex):
    vs = _variants(5)
    calls = []

    def compute(saes):
        calls.append(sorted(saes))
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed in the third chunk
        return {"t": pd.DataFrame({"sae": list(saes), "value": [float(n[-1]) for n in saes]})}

    with pytest.raises(KeyboardInterrupt):
        ex.per_sae_tables("fake", vs, {"e": 1}, compute, chunk=2)
    assert [len(c) for c in calls] == [2, 2, 1]
    assert ex.trained == [(5, False)]  # trained (not loaded) once, loaded chunk by chunk
    calls.clear()
    out = ex.per_sae_tables("fake", vs, {"e": 1}, compute, chunk=2)
    assert calls == [["topk_k4_s4"]]  # the four stored before the kill are read back
    assert out["t"]["sae"].tolist() == [v.name for v in vs]
    assert out["t"]["value"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert out["t"]["seed"].tolist() == [0, 1, 2, 3, 4]


def test_unchunked_evals_get_every_missing_sae_in_one_call(ex):
    vs = _variants(3)
    calls = []

    def compute(saes):
        calls.append(sorted(saes))
        return {"t": pd.DataFrame({"sae": list(saes), "value": 1.0})}

    ex.per_sae_tables("fake", vs[:1], {"e": 2}, compute)
    ex.per_sae_tables("fake", vs, {"e": 2}, compute)
    assert calls == [["topk_k4_s0"], ["topk_k4_s1", "topk_k4_s2"]]


def test_each_eval_call_is_entered_in_the_work_ledger(ex):
    """Every compute call adds one ledger line: its kind, its SAEs and their tokens; stored SAEs add none."""
    vs = _variants(5)

    def compute(saes):
        return {"t": pd.DataFrame({"sae": list(saes), "value": 1.0})}

    ex.per_sae_tables("fake", vs, {"e": 3}, compute, chunk=2, tokens_per_sae=10)
    ex.per_sae_tables("fake", vs, {"e": 3}, compute, chunk=2, tokens_per_sae=10)  # all stored now
    ex.per_sae_tables("other", vs[:1], {"e": 3}, compute)  # no token count
    lines = [json.loads(x) for x in buildlog.work_ledger_path().read_text().splitlines() if x]
    assert [(r["kind"], r["n_saes"], r["sae_tokens"]) for r in lines] == [
        ("fake", 2, 20), ("fake", 2, 20), ("fake", 1, 10), ("other", 1, None)]
    assert all(r["seconds"] >= 0 for r in lines)
    assert buildlog.work_between(0, 1e12)["fake"] == {"n_saes": 5, "sae_tokens": 50, "seconds": sum(r["seconds"] for r in lines[:3])}
