"""SAE Bench's first-letter feature-absorption evaluation (``sae_bench/evals/absorption``).

Needs only the language model and its vocabulary, so it runs offline.

1. **Words**: single vocabulary tokens made of ASCII letters (an optional leading space allowed),
   ``n_words`` of them (SAE Bench uses all; a subset keeps the CPU cost modest), split 80/20.
2. **Prompts**: ``max_icl_examples`` in-context examples and the word, each as
   ``"{word} has the first letter: X"`` on its own line, the last without its answer; the residual
   is read at the word's token (SAE Bench's ``prompt_token_pos=-6`` for this template; computed from
   the template's tail here).
3. **Ground-truth probes**: a 26-way one-vs-rest logistic probe on those residuals (BCE with class
   weights, Adam lr 1e-2, weight decay 1e-4, 50 epochs, batch 64, lr decayed exponentially to 1e-5);
   its F1 per letter on the test words decides which letters are evaluated (``min_probe_f1``; SAE
   Bench 0.6, its Pythia-70M test uses 0.3), and at least ``min_feats_for_eval`` letters must pass.
4. **k-sparse probing** on the SAE codes: an L1-regularised 26-way probe on all latents ranks them;
   for k = 1..10 a logistic regression (class-balanced) on the top-k latents of each letter; the
   *main (split) latents* of a letter are those of the last k whose test F1 beat the previous best
   by more than ``f1_jump_threshold`` (0.03).
5. **Absorption**, on the test words the ground-truth probe gets right: with ``p`` the unit probe
   direction, ``a = x . p`` the residual's projection and ``s_i = f_i cos(W_dec[i], p)`` each latent's,
   * *absorption fraction*: 0 if the main latents already account for ``a`` or if the (at most 3)
     other latents with ``cos >= 0.1`` and ``s_i > 0`` carry less than 40% of ``a``; 1 if the main
     latents carry nothing; else ``A / (A + main)`` with ``A = min(sum of those s_i, a - main)``;
   * *full absorption*: no main latent fires, and the latent with the largest ``s_i`` has
     ``cos >= 0.025`` and carries at least 40% of ``a`` (and ``a >= 0``).
   Per letter: the mean fraction and the full-absorption rate over its true positives; the number
   of split latents. The scores are the means over evaluated letters.

Deviation: SAE Bench scores the true-positive words on freshly drawn prompts (new random
in-context examples); we reuse the test prompts' activations, which saves one pass of the LM.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .common import bos_id, encode, few_threads, pad_id, right_pad

LETTERS = "abcdefghijklmnopqrstuvwxyz"
_ALPHA = set(LETTERS + LETTERS.upper())
EPS = 1e-8


@dataclass(frozen=True)
class AbsorptionConfig:
    prompt_template: str = "{word} has the first letter:"
    #: token position of the word (negative, from the end); None: from the template's tail
    prompt_token_pos: int | None = None
    max_icl_examples: int = 10
    #: words drawn from the vocabulary (None: all alphabetic tokens, as SAE Bench)
    n_words: int | None = 3000
    train_fraction: float = 0.8
    llm_batch_size: int = 32
    # ground-truth probe
    probe_epochs: int = 50
    probe_lr: float = 1e-2
    probe_end_lr: float = 1e-5
    probe_weight_decay: float = 1e-4
    probe_batch_size: int = 64
    # k-sparse probing
    k_sparse_l1_decay: float = 0.01
    k_sparse_epochs: int = 50
    k_sparse_lr: float = 0.01
    #: SAE Bench: 4096, i.e. ~6 steps per epoch over its ~25k words; None keeps ~6 steps per epoch
    #: for however many words are used (with 4096 and a few thousand words the probe would take one
    #: step per epoch and stay undertrained)
    k_sparse_batch_size: int | None = None
    max_k_value: int = 10
    f1_jump_threshold: float = 0.03
    # letters evaluated
    min_probe_f1: float = 0.6
    min_feats_for_eval: int = 20
    # absorption thresholds (SAE Bench's FeatureAbsorptionCalculator)
    full_absorption_cos_threshold: float = 0.025
    absorption_fraction_cos_threshold: float = 0.1
    projection_proportion_threshold: float = 0.4
    max_absorbing_latents: int = 3
    topk_feats: int = 10
    seed: int = 42

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class AbsorptionResult(NamedTuple):
    #: one row per SAE: mean absorption fraction, full absorption, split latents, letters, status
    summary: pd.DataFrame
    #: one row per SAE and letter
    letters: pd.DataFrame


# --------------------------------------------------------------------------------------------
# Vocabulary and prompts
# --------------------------------------------------------------------------------------------


def alpha_tokens(tokenizer) -> list[str]:
    """Vocabulary tokens that read as one alphabetic word (an optional leading space allowed)."""
    vocab = tokenizer.get_vocab()
    out = []
    for tok, _id in sorted(vocab.items(), key=lambda kv: kv[1]):
        word = tokenizer.convert_tokens_to_string([tok])
        w = word[1:] if word.startswith(" ") else word
        if w and all(c in _ALPHA for c in w):
            out.append(word)
    return out


def first_letter(word: str) -> str:
    return next(c for c in word.strip() if c.isalpha()).lower()


def icl_prompt(word: str, examples: Sequence[str], template: str, max_examples: int, rng: random.Random,
               prepend_separator: bool = False) -> str:
    """In-context examples then the word, one ``template`` line each (SAE Bench's ``create_icl_prompt``)."""
    pool = [e for e in examples if e != word]
    ex = rng.sample(pool, min(max_examples, len(pool)))
    lines = [template.format(word=e) + " " + first_letter(e).upper() for e in ex]
    base = "\n".join(lines + [template.format(word=word)])
    return ("\n" + base) if prepend_separator else base


# --------------------------------------------------------------------------------------------
# LM side: prompts, activations, ground-truth probe (independent of the SAE)
# --------------------------------------------------------------------------------------------


@dataclass
class AbsorptionData:
    words_train: list[str]
    words_test: list[str]
    y_train: np.ndarray
    y_test: np.ndarray
    acts_train: torch.Tensor
    acts_test: torch.Tensor
    #: ground-truth probe: weights [26, d], biases [26]
    probe_w: torch.Tensor
    probe_b: torch.Tensor
    #: test-set F1 of the probe per letter [26]
    probe_f1: np.ndarray
    #: probe logits on the test words [n_test, 26]
    probe_scores_test: np.ndarray


def _word_position_offset(lm, cfg: AbsorptionConfig) -> int:
    if cfg.prompt_token_pos is not None:
        return int(cfg.prompt_token_pos)
    tail = cfg.prompt_template.split("{word}", 1)[1]
    n_tail = len(lm.to_tokens([tail])[0]) if tail else 0
    return -(n_tail + 1)


@torch.no_grad()
def prompt_activations(lm, prompts: Sequence[str], offset: int, batch_size: int = 32) -> torch.Tensor:
    """Residual at position ``len + offset`` of each prompt (right-padded batches), ``[n, d]``."""
    toks = lm.to_tokens(list(prompts))
    b = bos_id(lm)
    if b is not None:
        toks = [list(t) if t and t[0] == b else [b] + list(t) for t in toks]
    out = []
    for a in range(0, len(toks), batch_size):
        batch, lens = right_pad(toks[a : a + batch_size], pad_id(lm))
        r = lm.resid(batch).float().cpu()
        pos = lens + offset
        out.append(r[torch.arange(len(pos)), pos])
    return torch.cat(out) if out else torch.zeros(0, int(lm.d_model))


def _pos_weight(y1h: torch.Tensor) -> torch.Tensor:
    pos = y1h.sum(0).clamp_min(1)
    return (len(y1h) - pos) / pos


def train_multi_probe(x: torch.Tensor, y: np.ndarray, n_out: int, *, epochs: int, lr: float, end_lr: float,
                      weight_decay: float, batch_size: int, seed: int, l1: float = 0.0) -> nn.Linear:
    """One-vs-rest logistic probes trained jointly (SAE Bench's ``train_multi_probe``)."""
    x = x.float()
    y1h = torch.nn.functional.one_hot(torch.as_tensor(y).long(), n_out).float()
    with torch.random.fork_rng(devices=[]), few_threads(1 if x.shape[1] * batch_size < 2_000_000 else 2):
        torch.manual_seed(seed)
        probe = nn.Linear(x.shape[1], n_out)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
        gamma = math.exp(math.log(end_lr / lr) / max(epochs, 1))
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)
        crit = nn.BCEWithLogitsLoss(pos_weight=_pos_weight(y1h))
        with torch.enable_grad():
            for _ in range(epochs):
                perm = torch.randperm(len(x), generator=gen)
                for i in range(0, len(x), batch_size):
                    b = perm[i : i + batch_size]
                    loss = crit(probe(x[b]), y1h[b])
                    if l1:
                        loss = loss + l1 * probe.weight.abs().sum(-1).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                sched.step()
    return probe.eval()


def _f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    tp = float(np.sum(y_true & y_pred))
    fp = float(np.sum(~y_true & y_pred))
    fn = float(np.sum(y_true & ~y_pred))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def prepare_absorption(lm, cfg: AbsorptionConfig = AbsorptionConfig(), words: Sequence[str] | None = None) -> AbsorptionData:
    """Everything that depends on the LM only: words, prompts, activations and ground-truth probe."""
    rng = random.Random(cfg.seed)
    vocab = list(words) if words is not None else alpha_tokens(lm.tokenizer)
    vocab = [w for w in vocab if any(c.isalpha() for c in w)]
    if cfg.n_words is not None and len(vocab) > cfg.n_words:
        vocab = rng.sample(vocab, cfg.n_words)
    vocab = rng.sample(vocab, len(vocab))
    n_tr = int(len(vocab) * cfg.train_fraction)
    w_tr, w_te = vocab[:n_tr], vocab[n_tr:]
    offset = _word_position_offset(lm, cfg)
    p_tr = [icl_prompt(w, w_tr, cfg.prompt_template, cfg.max_icl_examples, rng) for w in w_tr]
    p_te = [icl_prompt(w, w_te, cfg.prompt_template, cfg.max_icl_examples, rng) for w in w_te]
    a_tr = prompt_activations(lm, p_tr, offset, cfg.llm_batch_size)
    a_te = prompt_activations(lm, p_te, offset, cfg.llm_batch_size)
    y_tr = np.array([LETTERS.index(first_letter(w)) for w in w_tr])
    y_te = np.array([LETTERS.index(first_letter(w)) for w in w_te])
    probe = train_multi_probe(a_tr, y_tr, 26, epochs=cfg.probe_epochs, lr=cfg.probe_lr, end_lr=cfg.probe_end_lr,
                              weight_decay=cfg.probe_weight_decay, batch_size=cfg.probe_batch_size, seed=cfg.seed)
    with torch.no_grad():
        scores = probe(a_te.float()).numpy()
    f1 = np.array([_f1(y_te == i, scores[:, i] > 0) for i in range(26)])
    return AbsorptionData(w_tr, w_te, y_tr, y_te, a_tr, a_te, probe.weight.detach().clone(),
                          probe.bias.detach().clone(), f1, scores)


# --------------------------------------------------------------------------------------------
# SAE side
# --------------------------------------------------------------------------------------------


def split_features(f1_by_k: Sequence[float], feats_by_k: Sequence[Sequence[int]], jump: float = 0.03) -> list[int]:
    """SAE Bench's feature-split rule: follow k = 1, 2, ... while F1 improves by more than ``jump``."""
    best, feats = -100.0, []
    for f1, fk in zip(f1_by_k, feats_by_k):
        if f1 > best + jump:
            best, feats = f1, list(fk)
        else:
            break
    return feats


def word_absorption(act_proj: float, sae_proj: np.ndarray, cos: np.ndarray, codes: np.ndarray,
                    main_ids: Sequence[int], cfg: AbsorptionConfig = AbsorptionConfig()) -> tuple[float, bool]:
    """Absorption fraction and full-absorption flag of one word (SAE Bench's calculator)."""
    main_ids = np.asarray(list(main_ids), dtype=int)
    main_proj = float(sae_proj[main_ids].sum()) if main_ids.size else 0.0
    mask = np.ones(sae_proj.shape[0], dtype=bool)
    mask[main_ids] = False
    mask &= cos >= cfg.absorption_fraction_cos_threshold
    mask &= sae_proj > 0
    cand = np.sort(sae_proj[mask])[::-1][: cfg.max_absorbing_latents]
    total = float(cand.sum())
    prop = total / act_proj if act_proj != 0 else (np.inf if total > 0 else 0.0)
    if main_proj >= act_proj or prop < cfg.projection_proportion_threshold:
        frac = 0.0
    elif main_proj <= 0.0:
        frac = 1.0
    else:
        absorbed = min(total, act_proj - main_proj)
        frac = float(np.clip(absorbed / (absorbed + main_proj), 0.0, 1.0))
    # full absorption by a single latent
    top = int(np.argmax(sae_proj))
    full = True
    if main_ids.size and not np.all(np.abs(codes[main_ids]) < EPS):
        full = False  # a main latent fired
    elif cos[top] < cfg.full_absorption_cos_threshold:
        full = False  # the top latent is not aligned with the probe
    elif act_proj <= 0:
        full = False  # the probe is not activated
    elif sae_proj[top] / act_proj < cfg.projection_proportion_threshold:
        full = False  # the top latent carries too little of the projection
    return frac, bool(full)


def _k_sparse(codes_tr: torch.Tensor, y_tr, codes_te: torch.Tensor, y_te, cfg: AbsorptionConfig):
    """Top-k latents per letter from an L1 probe, then a balanced LR per k; test F1 and latents."""
    bs = cfg.k_sparse_batch_size or min(4096, max(16, math.ceil(len(codes_tr) / 6)))
    l1_probe = train_multi_probe(codes_tr, y_tr, 26, epochs=cfg.k_sparse_epochs, lr=cfg.k_sparse_lr,
                                 end_lr=1e-5, weight_decay=1e-6, batch_size=bs,
                                 seed=cfg.seed, l1=cfg.k_sparse_l1_decay)
    W = l1_probe.weight.detach()
    Xtr, Xte = codes_tr.numpy().astype(np.float64), codes_te.numpy().astype(np.float64)
    f1 = np.full((26, cfg.max_k_value), np.nan)
    feats: dict[int, list[list[int]]] = {}
    _fit_k_probes(Xtr, y_tr, Xte, y_te, W, cfg, f1, feats)
    return f1, feats


def balanced_logreg(X: np.ndarray, y: np.ndarray, C: float = 1.0, iters: int = 50, tol: float = 1e-10):
    """scikit-learn's ``LogisticRegression(class_weight="balanced")`` (L2 on the weights, C=1,
    intercept unpenalised) solved by Newton's method: the same convex optimum, much faster for the
    few-feature probes fitted 260 times per SAE. Returns ``(coef [k], intercept)``."""
    X = np.asarray(X, np.float64)
    y = np.asarray(y).astype(bool)
    n, k = X.shape
    sw = np.where(y, n / (2.0 * max(y.sum(), 1)), n / (2.0 * max((~y).sum(), 1)))
    A = np.c_[X, np.ones(n)]
    t = np.where(y, 1.0, -1.0)
    beta = np.zeros(k + 1)
    reg = np.r_[np.ones(k), 0.0] / C
    for _ in range(iters):
        z = A @ beta
        p = 1.0 / (1.0 + np.exp(t * z))  # sigma(-t z)
        grad = reg * beta - A.T @ (sw * t * p)
        h = sw * p * (1 - p)
        H = (A * h[:, None]).T @ A + np.diag(reg + 1e-12)
        step = np.linalg.solve(H, grad)
        # backtracking on the objective keeps Newton stable on separable data
        f0 = 0.5 * (reg * beta) @ beta + np.sum(sw * np.logaddexp(0, -t * z))
        lr = 1.0
        while lr > 1e-6:
            b2 = beta - lr * step
            f1 = 0.5 * (reg * b2) @ b2 + np.sum(sw * np.logaddexp(0, -t * (A @ b2)))
            if f1 <= f0:
                break
            lr /= 2
        beta = b2
        if np.abs(lr * step).max() < tol:
            break
    return beta[:k], float(beta[k])


def _fit_k_probes(Xtr, y_tr, Xte, y_te, W, cfg, f1, feats):
    for letter in range(26):
        ytr_b = y_tr == letter
        yte_b = y_te == letter
        feats[letter] = []
        for k in range(1, cfg.max_k_value + 1):
            fk = W[letter].topk(k).indices.tolist()
            feats[letter].append(fk)
            if ytr_b.all() or not ytr_b.any():
                f1[letter, k - 1] = 0.0
                continue
            coef, icpt = balanced_logreg(Xtr[:, fk], ytr_b)
            score = Xte[:, fk] @ coef + icpt
            f1[letter, k - 1] = _f1(yte_b, score > 0)


@torch.no_grad()
def absorption_for_sae(sae, data: AbsorptionData, cfg: AbsorptionConfig = AbsorptionConfig()) -> tuple[dict, pd.DataFrame]:
    """Absorption scores of one SAE from prepared data: (summary dict, per-letter table)."""
    codes_tr = encode(sae, data.acts_train)
    codes_te = encode(sae, data.acts_test)
    f1, feats = _k_sparse(codes_tr, data.y_train, codes_te, data.y_test, cfg)
    W_dec = sae.W_dec.detach().float().cpu()
    P = torch.nn.functional.normalize(data.probe_w.float(), dim=-1)  # unit probe directions [26, d]
    COS = (P @ torch.nn.functional.normalize(W_dec, dim=-1).T).numpy()  # [26, d_sae]
    rows = []
    for letter in range(26):
        main = split_features(f1[letter], feats[letter], cfg.f1_jump_threshold)
        p = P[letter]
        cos = COS[letter]
        tp = np.flatnonzero((data.y_test == letter) & (data.probe_scores_test[:, letter] > 0))
        fracs, fulls = [], []
        for i in tp:
            x = data.acts_test[i].float()
            c = codes_te[i].numpy()
            fr, fu = word_absorption(float(x @ p), c * cos, cos, c, main, cfg)
            fracs.append(fr)
            fulls.append(fu)
        n_tp = len(tp)
        rows.append({"letter": LETTERS[letter], "probe_f1": float(data.probe_f1[letter]),
                     "num_probe_true_positives": n_tp, "num_split_features": len(main), "split_features": main,
                     "mean_absorption_fraction": float(np.sum(fracs) / n_tp) if n_tp else np.nan,
                     "full_absorption_rate": float(np.sum(fulls) / n_tp) if n_tp else np.nan,
                     "num_full_absorption": int(np.sum(fulls)),
                     "k_sparse_f1": f1[letter].tolist()})
    letters = pd.DataFrame(rows)
    n_ok = int((letters["probe_f1"] > cfg.min_probe_f1).sum())
    ev = letters[(letters["probe_f1"] > cfg.min_probe_f1) & (letters["num_probe_true_positives"] > 0)]
    letters["evaluated"] = letters["letter"].isin(ev["letter"])
    summary = {"n_letters_probe_ok": n_ok, "n_letters_evaluated": len(ev)}
    if n_ok < cfg.min_feats_for_eval or len(ev) == 0:
        summary.update({"status": f"too few first-letter features: {n_ok} letters with probe F1 > "
                                  f"{cfg.min_probe_f1} (need {cfg.min_feats_for_eval})",
                        "mean_absorption_fraction_score": np.nan, "mean_full_absorption_score": np.nan,
                        "mean_num_split_features": np.nan})
    else:
        sd = lambda s: float(s.std(ddof=1)) if len(s) > 1 else np.nan  # noqa: E731
        summary.update({
            "status": "ok",
            "mean_absorption_fraction_score": float(ev["mean_absorption_fraction"].mean()),
            "mean_full_absorption_score": float(ev["full_absorption_rate"].mean()),
            "mean_num_split_features": float(ev["num_split_features"].mean()),
            "std_dev_absorption_fraction_score": sd(ev["mean_absorption_fraction"]),
            "std_dev_full_absorption_score": sd(ev["full_absorption_rate"]),
            "std_dev_num_split_features": sd(ev["num_split_features"]),
        })
    return summary, letters


def run_absorption(saes: dict[str, Any], lm=None, cfg: AbsorptionConfig = AbsorptionConfig(),
                   data: AbsorptionData | None = None, words: Sequence[str] | None = None) -> AbsorptionResult:
    """First-letter absorption of each SAE; the LM-side work is done once (or pass ``data``)."""
    if data is None:
        if lm is None:
            raise ValueError("pass lm= or data=")
        data = prepare_absorption(lm, cfg, words)
    summ, lets = [], []
    for name, sae in saes.items():
        s, l = absorption_for_sae(sae, data, cfg)
        summ.append({"sae": name, **s, "n_words_train": len(data.words_train), "n_words_test": len(data.words_test),
                     "min_probe_f1": cfg.min_probe_f1})
        lets.append(l.assign(sae=name))
    letters = pd.concat(lets, ignore_index=True) if lets else pd.DataFrame()
    if len(letters):
        letters = letters[["sae"] + [c for c in letters.columns if c != "sae"]]
    return AbsorptionResult(pd.DataFrame(summ), letters)
