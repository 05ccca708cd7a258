"""Tiny stand-ins for the SAE and LanguageModel interfaces (DESIGN.md), used by the eval tests only."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn


class TinySAE(nn.Module):
    """``f = TopK(ReLU((x - b_dec) W_enc + b_enc))`` (no TopK when k is None), ``x_hat = f W_dec + b_dec``."""

    def __init__(self, W_enc, W_dec, b_enc=None, b_dec=None, k=None):
        super().__init__()
        W_enc = torch.as_tensor(W_enc, dtype=torch.float32)
        W_dec = torch.as_tensor(W_dec, dtype=torch.float32)
        d_in, d_sae = W_enc.shape
        self.W_enc = nn.Parameter(W_enc.clone())
        self.W_dec = nn.Parameter(W_dec.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae) if b_enc is None else torch.as_tensor(b_enc, dtype=torch.float32))
        self.b_dec = nn.Parameter(torch.zeros(d_in) if b_dec is None else torch.as_tensor(b_dec, dtype=torch.float32))
        self.cfg = SimpleNamespace(k=k, architecture="topk", d_in=d_in, d_sae=d_sae)

    @property
    def d_sae(self):
        return self.W_enc.shape[1]

    @property
    def d_in(self):
        return self.W_enc.shape[0]

    def pre_acts(self, x):
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def encode(self, x):
        a = self.pre_acts(x)
        if self.cfg.k is None:
            return a
        vals, idx = a.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(a).scatter(-1, idx, vals)

    def encode_topk(self, x):
        a = self.pre_acts(x)
        k = self.cfg.k if self.cfg.k is not None else a.shape[-1]
        return a.topk(k, dim=-1)

    def decode(self, f):
        return f @ self.W_dec + self.b_dec


def perfect_sae(d: int) -> TinySAE:
    """Latents relu(x_i) and relu(-x_i): reconstructs every x exactly."""
    I = torch.eye(d)
    return TinySAE(torch.cat([I, -I], 1), torch.cat([I, -I], 0))


def zero_sae(d: int, d_sae: int = 8) -> TinySAE:
    return TinySAE(torch.randn(d, d_sae, generator=torch.Generator().manual_seed(0)), torch.zeros(d_sae, d))


class FakeTokenizer:
    """Word-level tokenizer with a fixed vocabulary; ``<bos>`` 0, ``<pad>`` 1, ``<unk>`` 2."""

    pattern = re.compile(r"\n| ?[A-Za-z]+| ?[^\sA-Za-z]")

    def __init__(self, words):
        toks = ["<bos>", "<pad>", "<unk>"] + sorted(set(words))
        self.vocab = {t: i for i, t in enumerate(toks)}
        self.inv = {i: t for t, i in self.vocab.items()}
        self.bos_token_id, self.pad_token_id, self.eos_token_id = 0, 1, None

    def __len__(self):
        return len(self.vocab)

    def get_vocab(self):
        return dict(self.vocab)

    def convert_tokens_to_string(self, tokens):
        return "".join(tokens)

    def encode(self, text):
        return [self.vocab.get(t, 2) for t in self.pattern.findall(text)]

    def decode(self, ids):
        return "".join(self.inv.get(int(i), "?") for i in ids)


class FakeLM(nn.Module):
    """Embedding -> causal running mean (the "layer" before the hook) -> hook -> MLP -> unembedding."""

    def __init__(self, tokenizer: FakeTokenizer, d_model: int = 16, seed: int = 0, embed=None, mix: bool = True):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        V = len(tokenizer)
        self.tokenizer = tokenizer
        self.name = "fake-lm"
        self.hook_name = "blocks.0.hook_resid_post"
        self.d_model = d_model
        self.prepend_bos = False
        self.special_token_ids = [0, 1]
        self.mix = mix
        E = torch.randn(V, d_model, generator=g) if embed is None else torch.as_tensor(embed, dtype=torch.float32)
        self.E = nn.Parameter(E)
        self.W1 = nn.Parameter(torch.randn(d_model, d_model, generator=g) / d_model**0.5)
        self.U = nn.Parameter(torch.randn(d_model, V, generator=g) / d_model**0.5)

    def describe(self):
        return {"name": self.name, "d_model": self.d_model}

    def to_tokens(self, texts):
        return [self.tokenizer.encode(t) for t in texts]

    @property
    def W_E(self):
        return self.E

    @property
    def W_U(self):
        return self.U

    def resid_from_embeds(self, e):
        if not self.mix:
            return e
        T = e.shape[1]
        cm = torch.cumsum(e, dim=1) / torch.arange(1, T + 1, dtype=e.dtype)[None, :, None]
        return 0.5 * e + 0.5 * cm

    def resid(self, tokens):
        return self.resid_from_embeds(self.E[torch.as_tensor(tokens).long()])

    def logits(self, tokens, replace=None):
        r = self.resid(tokens)
        if replace is not None:
            r = replace(r)
        h = r + torch.tanh(r @ self.W1)
        return h @ self.U


@dataclass
class FakeCache:
    """The parts of ``ActivationCache`` the evals read."""

    acts: np.ndarray
    tokens: np.ndarray
    ctx_index: np.ndarray
    positions: np.ndarray
    norm_factor: float = 1.0

    def __len__(self):
        return len(self.tokens)

    def get(self, idx):
        return torch.as_tensor(np.asarray(self.acts[idx], dtype=np.float32))


def cache_from_lm(lm: FakeLM, contexts: torch.Tensor) -> FakeCache:
    r = lm.resid(contexts).detach()
    n, T = contexts.shape
    return FakeCache(r.reshape(n * T, -1).numpy(), contexts.reshape(-1).numpy().astype(np.int32),
                     np.repeat(np.arange(n), T).astype(np.int32), np.tile(np.arange(T), n).astype(np.int16))


@dataclass
class Doc:
    text: str
    source: str
    doc_id: str
    meta: dict = field(default_factory=dict)


WORDS = ("nation congress people war peace union states law tax trade army navy whale ship sea captain ahab "
         "sail harpoon money free offer click buy now meeting schedule project python import class function "
         "module return value the of and to in a is it for on with as was").split()


def fake_documents(n_speech=60, n_novel=30, n_email=160, n_docs=30, seed=0):
    """A labelled corpus shaped like vsae.data.labelled_documents(): SOTU, Moby-Dick, emails, docs."""
    rng = np.random.default_rng(seed)

    def text(words, n):
        return " ".join(rng.choice(words, size=n))

    speech_w, novel_w = WORDS[:12] + WORDS[-10:], WORDS[12:20] + WORDS[-10:]
    spam_w, ham_w, doc_w = WORDS[20:25] + WORDS[-10:], WORDS[25:28] + WORDS[-10:], WORDS[28:33] + WORDS[-10:]
    docs = []
    for i in range(n_speech):
        party = ["Democratic", "Republican"][i % 2]
        year = 1800 + (i // 2) * 7
        docs.append(Doc(text(speech_w + (["old"] if year < 1900 else ["modern"]), 300), "sotu", f"sotu-{i}",
                        {"party": party, "year": year}))
    for i in range(n_novel):
        docs.append(Doc(text(novel_w, 300), "moby-dick", f"moby-{i}", {"novel": "Moby-Dick"}))
    for i in range(n_email):
        spam = i % 3 == 0
        body = text(spam_w if spam else ham_w, 60)
        if i % 2 == 0:
            body = "<html><body> " + body + " </body></html>"
        docs.append(Doc(f"From: someone\nSubject: hello\n\n{body}", "spamassassin", f"mail-{i}", {"spam": spam}))
    for i in range(n_docs):
        docs.append(Doc(text(doc_w, 300), "python-docs", f"doc-{i}", {}))
    return docs


def fake_lm_for_docs(d_model=16, seed=0) -> FakeLM:
    extra = [" " + w for w in WORDS + ["old", "modern", "html", "body", "From", "Subject", "someone", "hello"]]
    extra += WORDS + ["old", "modern", "From", "Subject"] + ["<", ">", "/", " <", " >", ":", "\n", " /"]
    return FakeLM(FakeTokenizer(extra), d_model=d_model, seed=seed)
