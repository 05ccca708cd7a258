import string

import numpy as np
import pytest
import torch

from _eval_fixtures import FakeLM, FakeTokenizer, TinySAE
from vsae.evals.absorption import (LETTERS, AbsorptionConfig, alpha_tokens, icl_prompt, prepare_absorption,
                                   run_absorption, split_features, word_absorption)

TAIL = [" has", " the", " first", " letter", ":", "\n"] + [" " + c for c in string.ascii_uppercase]


def test_word_absorption_by_hand():
    cfg = AbsorptionConfig()
    cos = np.array([0.9, 0.8, 0.05, 0.5])
    # the main latent (0) carries the whole projection: no absorption
    codes = np.array([1.0, 0.0, 0.0, 0.0])
    assert word_absorption(0.9, codes * cos, cos, codes, [0], cfg) == (0.0, False)
    # main silent, latent 1 carries it all: full absorption
    codes = np.array([0.0, 1.0, 0.0, 0.0])
    assert word_absorption(0.8, codes * cos, cos, codes, [0], cfg) == (1.0, True)
    # partial: main 0.6 of 1.0, absorbers (cos >= 0.1) carry 0.5: A = min(0.5, 0.4) -> 0.4 / (0.4 + 0.6)
    sae_proj = np.array([0.6, 0.3, 0.0, 0.2])
    codes = sae_proj / cos
    frac, full = word_absorption(1.0, sae_proj, cos, codes, [0], cfg)
    assert frac == pytest.approx(0.4) and not full
    # absorbers below 40% of the projection do not count
    sae_proj = np.array([0.6, 0.3, 0.0, 0.0])
    assert word_absorption(1.0, sae_proj, cos, sae_proj / cos, [0], cfg)[0] == 0.0
    # a latent with cos < 0.1 is never an absorber
    sae_proj = np.array([0.0, 0.0, 0.9, 0.0])
    assert word_absorption(1.0, sae_proj, cos, sae_proj / cos, [0], cfg)[0] == 0.0


def test_split_features_rule():
    feats = [[1], [1, 2], [1, 2, 3], [1, 2, 3, 4]]
    assert split_features([0.5, 0.6, 0.61, 0.9], feats) == [1, 2]
    assert split_features([0.5, 0.52, 0.9, 0.95], feats) == [1]


def test_alpha_tokens_and_prompt():
    tok = FakeTokenizer([" cat", "dog", " x1", " has"] + TAIL)
    words = alpha_tokens(tok)
    assert " cat" in words and "dog" in words and " x1" not in words and "<bos>" not in words
    import random

    p = icl_prompt(" cat", [" dog", " eel"], "{word} has the first letter:", 2, random.Random(0))
    lines = p.split("\n")
    assert lines[-1] == " cat has the first letter:"
    assert sorted(lines[:2]) == [" dog has the first letter: D", " eel has the first letter: E"]


def _toy(n_a=30, n_absorbed=10, n_other=10, seed=0):
    """Words whose residual is 3 e_letter (+ 3 e_marker for absorbed 'a' words); two SAEs."""
    rng = np.random.default_rng(seed)
    words, absorbed = [], []
    for li, L in enumerate(LETTERS):
        n = n_a if L == "a" else n_other
        ws = set()
        while len(ws) < n:
            ws.add(" " + L + "".join(rng.choice(list(LETTERS), 3)))
        ws = sorted(ws)
        words += ws
        if L == "a":
            absorbed = ws[:n_absorbed]
    d = 26 + n_absorbed + 2
    tok = FakeTokenizer(words + TAIL)
    E = np.zeros((len(tok), d), dtype=np.float32)
    E[:, -2:] = rng.normal(0, 0.3, size=(len(tok), 2))  # every other token lives in two noise dims
    for w in words:
        i = tok.vocab[w]
        E[i, :] = 0
        E[i, LETTERS.index(w.strip()[0])] = 3.0
        if w in absorbed:
            E[i, 26 + absorbed.index(w)] = 3.0
    lm = FakeLM(tok, d_model=d, embed=E, mix=False)
    I = torch.eye(d)
    markers = I[:, 26:26 + n_absorbed]
    # absorbing SAE: letter latents switched off by any marker; one latent per absorbed word whose
    # decoder carries the 'a' direction
    enc_letters = I[:, :26] - 10 * markers.sum(1, keepdim=True)
    W_enc = torch.cat([enc_letters, markers], 1)
    dec_abs = torch.nn.functional.normalize(I[26:26 + n_absorbed] + I[0], dim=-1)
    absorbing = TinySAE(W_enc, torch.cat([I[:26], dec_abs], 0))
    clean = TinySAE(torch.cat([I[:, :26], markers], 1), torch.cat([I[:26], I[26:26 + n_absorbed]], 0))
    return lm, words, set(absorbed), {"absorbing": absorbing, "clean": clean}


def test_absorption_on_a_toy_absorbing_sae():
    lm, words, absorbed, saes = _toy()
    cfg = AbsorptionConfig(n_words=None, max_icl_examples=3, min_probe_f1=0.5, min_feats_for_eval=20, seed=1,
                           probe_epochs=60, probe_batch_size=16, k_sparse_epochs=40)
    data = prepare_absorption(lm, cfg, words=words)
    assert (data.probe_f1 > 0.9).sum() >= 22  # the word position was found: letters are linear there
    res = run_absorption(saes, cfg=cfg, data=data)
    lets = res.letters.set_index(["sae", "letter"])
    # precondition: some absorbed 'a' words are true positives of the probe on the test split
    tp = [w for w, y, s in zip(data.words_test, data.y_test, data.probe_scores_test[:, 0]) if y == 0 and s > 0]
    n_abs = sum(w in absorbed for w in tp)
    assert 0 < n_abs < len(tp)
    a = lets.loc[("absorbing", "a")]
    assert a["split_features"] == [0]  # the 'a' latent is the main latent
    assert a["mean_absorption_fraction"] == pytest.approx(n_abs / len(tp))
    assert a["full_absorption_rate"] == pytest.approx(n_abs / len(tp))
    others = res.letters[(res.letters["sae"] == "absorbing") & (res.letters["letter"] != "a") & res.letters["evaluated"]]
    assert (others["mean_absorption_fraction"] == 0).all()
    clean = res.letters[res.letters["sae"] == "clean"]
    assert (clean["mean_absorption_fraction"].fillna(0) == 0).all()
    summ = res.summary.set_index("sae")
    assert summ.loc["absorbing", "status"] == "ok"
    n_eval = summ.loc["absorbing", "n_letters_evaluated"]
    assert summ.loc["absorbing", "mean_absorption_fraction_score"] == pytest.approx(n_abs / len(tp) / n_eval)
    assert summ.loc["clean", "mean_absorption_fraction_score"] == 0
    assert summ.loc["clean", "mean_num_split_features"] == pytest.approx(1.0)


def test_too_few_letters_reports_status():
    lm, words, _, saes = _toy(n_other=4)
    cfg = AbsorptionConfig(n_words=None, max_icl_examples=2, min_probe_f1=0.99, min_feats_for_eval=27,
                           probe_epochs=5, k_sparse_epochs=5, max_k_value=2)
    res = run_absorption({"clean": saes["clean"]}, lm, cfg=cfg, words=words)
    row = res.summary.iloc[0]
    assert row["status"].startswith("too few") and np.isnan(row["mean_absorption_fraction_score"])
