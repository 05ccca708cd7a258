"""Fast checks of the benchmark scripts' arithmetic and of their last-line formats (no timing runs,
no peer environments)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def tt():
    return _load("train_throughput")


@pytest.fixture(scope="module")
def peers():
    return _load("peers")


def test_floor_fraction_is_two_matmuls_per_sae(tt):
    # each SAE's floor is 4*d_in*d_sae FLOP/token = two [B, d_in] @ [d_in, d_sae] matmuls
    assert tt.floor_fraction(step_s=1.6, mm_s=0.1, n_saes=8, batch=192, d_in=576, d_sae=4608) == pytest.approx(1.0)
    assert tt.floor_fraction(step_s=3.2, mm_s=0.1, n_saes=8, batch=192, d_in=576, d_sae=4608) == pytest.approx(0.5)
    # independent of the shapes once the matmul time is given
    assert tt.floor_fraction(2.0, 0.25, 2, 4096, 512, 8192) == pytest.approx(0.5)


def test_book_shapes_line_format(tt):
    line = tt.book_shapes_line(0.61234)
    assert line == "book-shapes: floor_fraction=0.612"
    assert re.fullmatch(r"book-shapes: floor_fraction=\d+\.\d{2,3}", line)


def test_book_shapes_match_the_offline_profile(tt):
    from vsae.models import TopKSAEConfig, VSAEConfig
    from vsae.profiles import get_profile

    p = get_profile("offline")
    assert tt.BOOK_K == tuple(p.k_values)
    assert tt.BOOK_BATCH == p.batch_size
    assert tt.BOOK_D_SAE == tt.BOOK_D_IN * p.expansion == 4608
    specs = tt.book_specs()
    assert len(specs) == 8
    assert [type(c) for c in specs.values()] == [TopKSAEConfig] * 4 + [VSAEConfig] * 4
    assert sorted({c.k for c in specs.values()}) == list(p.k_values)


def test_peers_ratio_normalises_by_each_process_naive_step(peers):
    rounds = {
        "ours": [{"step_tok_s": 1000.0, "naive_tok_s": 500.0}, {"step_tok_s": 900.0, "naive_tok_s": 450.0}],
        "dictionary_learning": [{"step_tok_s": 200.0, "naive_tok_s": 400.0}, {"step_tok_s": 100.0, "naive_tok_s": 200.0}],
    }
    s = peers.summarise(rounds)
    assert s["ours"]["vs_naive"] == pytest.approx(2.0)
    assert s["dictionary_learning"]["vs_naive"] == pytest.approx(0.5)
    assert peers.ratio(s, "dictionary_learning") == pytest.approx(4.0)


def test_peers_line_format(peers):
    assert peers.peers_line(3.14159, 2.0) == "peers: ours/dictionary_learning=3.14 ours/sae_lens=2.00 at batch 192"


def test_peer_envs_pin_torch_first(peers):
    for spec in peers.ENVS.values():
        assert peers.TORCH_PIN in spec["pins"]
    assert peers.ENVS["sae_lens"]["packages"] == ["sae-lens==6.54.12"]
    assert peers.ENVS["dictionary_learning"]["packages"] == ["dictionary-learning==0.1.0"]


def test_eval_benchmark_runs_the_offline_profile_shapes():
    from vsae.profiles import get_profile

    ev = _load("eval_throughput")
    p = get_profile("offline")
    assert (ev.D_IN, ev.D_SAE) == (576, 576 * p.expansion) == (576, 4608)
    assert (ev.EVAL_TOKENS, ev.CE_CONTEXTS, ev.CTX_LEN) == (p.n_eval_tokens, p.n_ce_contexts, p.ctx_len) == (327_680, 64, 128)
    assert ev.PROFILE.layer == p.layer and ev.K in p.k_values
    saes = ev._saes(3)
    assert [s.cfg.architecture for s in saes.values()] == ["topk", "vsae", "topk"]
    assert all(s.cfg.d_sae == 4608 and s.cfg.k == 256 and not s.training for s in saes.values())
