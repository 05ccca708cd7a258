"""Language models through the transformer-lens bridge.

``pythia-70m-random`` (the exact Pythia-70M architecture, random weights) is checked against a plain
transformers ``GPTNeoXForCausalLM`` with the same weights. Tolerances (float32): log-probabilities
within 1e-4 (measured ~3e-6; compatibility mode centres the unembedding, which shifts every logit of
a position by the same constant, so raw logits are not compared), and the hook's residual equals
the Hugging Face hidden state minus its per-token mean within 1e-4 (relative: 1e-6 measured).
The SmolLM2 test (marked slow, still in ``make test``) loads the real pretrained model.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from vsae.hub import HubUnavailableError
from vsae.lm import PYTHIA_70M_CONFIG, load_lm

TEXT = "The quick brown fox jumps over the lazy dog. State of the Union addresses are long."


@pytest.fixture(scope="module")
def pythia():
    return load_lm("pythia-70m-random", 3, seed=0)  # the real 6-layer architecture


@pytest.fixture(scope="module")
def hf_reference():
    """A plain transformers GPTNeoX with the weights pythia-70m-random starts from (seed 0)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        hf = GPTNeoXForCausalLM(GPTNeoXConfig(**PYTHIA_70M_CONFIG))
    hf.set_attn_implementation("eager")
    return hf.eval()


def test_pythia_architecture(pythia, hf_reference):
    assert pythia.d_model == 512 and pythia.n_layers == 6 and pythia.d_vocab == 50304
    from vsae.lm import D_MODEL

    # what the parameter check of every chapter uses before loading anything
    assert D_MODEL["pythia-70m-random"] == D_MODEL["pythia-70m-deduped"] == pythia.d_model
    assert sum(p.numel() for p in hf_reference.parameters()) == 70_426_624  # Pythia-70M's exact count
    c = pythia.bridge.original_model.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (512, 6, 8, 2048)
    assert c.rope_parameters["partial_rotary_factor"] == 0.25  # rotary_dim 16 of head_dim 64
    assert c.use_parallel_residual and not c.tie_word_embeddings
    assert pythia.hook_name == "blocks.3.hook_resid_post"
    assert pythia.W_E.shape == (50304, 512) and pythia.W_U.shape == (512, 50304)
    assert pythia.processing.startswith("tl-compat")


def test_tokenizer_hello_world(pythia):
    assert pythia.to_tokens(["Hello world"]) == [[12092, 1533]]
    assert pythia.to_tokens("Hello world, this is Pythia.") == [[12092, 1533, 13, 436, 310, 8462, 36005, 15]]
    assert len(pythia.tokenizer) == 50277
    assert {0, 1} <= set(pythia.special_token_ids)


def test_bos_decision(pythia):
    """No BOS anywhere (the paper's buffer added none; TL 4.x adds none for Pythia)."""
    assert pythia.prepend_bos is False and pythia.describe()["prepend_bos"] is False
    ids = pythia.to_tokens([TEXT])[0]
    assert ids[0] != pythia.tokenizer.bos_token_id
    assert ids == pythia.tokenizer(TEXT, add_special_tokens=False)["input_ids"]


def test_logits_match_transformers(pythia, hf_reference):
    ids = torch.tensor(pythia.to_tokens(TEXT)[0])
    toks = torch.stack([ids, ids.roll(3)])  # [2, T]
    with torch.no_grad():
        ref = hf_reference(toks).logits.log_softmax(-1)
    got = pythia.logits(toks).log_softmax(-1)
    assert got.shape == ref.shape == (2, toks.shape[1], 50304)
    assert (got - ref).abs().max().item() < 1e-4


def test_hook_activations(pythia, hf_reference):
    toks = torch.tensor(pythia.to_tokens([TEXT]))
    resid = pythia.resid(toks)
    flat = resid.reshape(-1, pythia.d_model)
    assert flat.shape == (toks.numel(), 512)
    with torch.no_grad():
        hs = hf_reference(toks, output_hidden_states=True).hidden_states[4]  # after block 3
    centred = hs - hs.mean(-1, keepdim=True)  # compatibility mode centres the residual stream
    assert ((resid - centred).norm() / centred.norm()).item() < 1e-4
    assert resid.mean(-1).abs().max().item() < 1e-4


def test_resid_stops_at_layer(pythia):
    calls = []
    h = pythia.bridge.blocks[4].register_forward_hook(lambda *a: calls.append(1))
    try:
        pythia.resid(torch.tensor(pythia.to_tokens([TEXT])))
        assert calls == []  # blocks after the hook never run
        pythia.logits(torch.tensor(pythia.to_tokens([TEXT])))
        assert calls == [1]
    finally:
        h.remove()


def test_logits_replace(pythia):
    toks = torch.tensor(pythia.to_tokens([TEXT]))
    clean = pythia.logits(toks)
    assert torch.equal(pythia.logits(toks, replace=lambda x: x.clone()), clean)
    seen = {}

    def spy(x):
        seen["x"] = x
        return torch.zeros_like(x)

    ablated = pythia.logits(toks, replace=spy)
    assert torch.equal(seen["x"], pythia.resid(toks))  # replace() receives the hook's residual
    assert (ablated - clean).abs().max() > 1e-3
    with pytest.raises(ValueError, match="shape"):
        pythia.logits(toks, replace=lambda x: x[:, :1])


def test_resid_from_embeds(pythia):
    toks = torch.tensor(pythia.to_tokens([TEXT]))
    emb = pythia.W_E[toks].clone().requires_grad_(True)
    r = pythia.resid_from_embeds(emb)
    assert torch.allclose(r, pythia.resid(toks), atol=1e-5)
    r.pow(2).sum().backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in pythia.bridge.parameters())


def test_small_variant_seed_and_last_layer():
    a = load_lm("pythia-70m-random", 1, n_layers=2, seed=1)
    assert a.n_layers == 2 and a.describe()["weights"]["seed"] == 1
    # hooking the last block: the pass is cut at the hook (no unembedding) and matches a full run
    toks = torch.tensor(a.to_tokens([TEXT]))
    got = {}
    a.bridge.run_with_hooks(toks, fwd_hooks=[(a.hook_name, lambda x, hook: got.setdefault("x", x))])
    assert torch.equal(a.resid(toks), got["x"])
    emb = a.W_E[toks].clone().requires_grad_(True)
    a.resid_from_embeds(emb).sum().backward()
    assert emb.grad is not None
    assert torch.isfinite(a.logits(toks)).all()  # the bridge is still usable afterwards
    with pytest.raises(ValueError, match="out of range"):
        load_lm("pythia-70m-random", 2, n_layers=2)
    with pytest.raises(ValueError, match="unknown language model"):
        load_lm("gpt2", 0)


def test_pythia_hub_fails_fast(monkeypatch, tmp_path):
    """With no Hub (a closed port stands in for it) and nothing cached: a clear error within 10 s."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    t = time.time()
    with pytest.raises(HubUnavailableError) as e:
        load_lm("pythia-70m-deduped", 3)
    assert time.time() - t < 10
    assert "'offline'" in str(e.value) and "profile" in str(e.value)


def test_pythia_hub_offline_flag_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setattr("vsae.hub._saved_env", {"HF_HUB_OFFLINE": "1"})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    t = time.time()
    with pytest.raises(HubUnavailableError, match="offline profile"):
        load_lm("pythia-70m-deduped", 3)
    assert time.time() - t < 10


@pytest.mark.slow
def test_smollm2_real_model():
    """SmolLM2 from the fetched wheel: finite loss on held-out offline text, far below uniform."""
    import json

    import torch.nn.functional as F

    from vsae.activations import plan_contexts
    from vsae.assets import smollm2_dir

    lm = load_lm("smollm2-135m", 9)
    assert lm.d_model == 576 and lm.n_layers == 30 and lm.d_vocab == 49152
    from vsae.lm import D_MODEL

    assert D_MODEL["smollm2-135m"] == lm.d_model
    assert lm.describe()["processing"] == "none" and lm.prepend_bos is False
    # the cached plain checkpoint reproduces the GGUF load's logits recorded at conversion
    conv = json.loads((smollm2_dir() / "convert.json").read_text())
    probe = lm.logits(torch.tensor([conv["probe_token_ids"]]))[0]
    assert probe.argmax(-1).tolist() == conv["probe_argmax"]
    assert math.isclose(float(probe.double().sum()), conv["probe_logits_sum"], rel_tol=1e-5)
    assert lm.tokenizer.decode(conv["probe_last_logits_top5"][0]).strip() == "Berlin"
    # held-out text: the smoke corpus's eval documents (a subset of the offline eval split)
    ctx, _, _ = plan_contexts(lm, "smoke", "eval", 4 * 128, 128)
    toks = torch.from_numpy(ctx.astype(np.int64))
    logits = lm.logits(toks)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, lm.d_vocab), toks[:, 1:].reshape(-1)).item()
    assert math.isfinite(ce)
    assert ce < 0.6 * math.log(lm.d_vocab)  # uniform would be log(49152) = 10.8 nats
    r = lm.resid(toks)
    assert r.shape == (4, 128, 576) and torch.isfinite(r).all()
