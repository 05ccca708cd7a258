"""Validation of a chapter's papermill parameters.

Every chapter starts with a ``parameters`` cell and then calls :func:`validate` with the values and a
spec. A wrong name, type or value stops the chapter before any work, with a message that lists what
is allowed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterable


class ParameterError(ValueError):
    """A chapter parameter is unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class Param:
    """Spec of one parameter: its type(s) and optional allowed values / bounds / element type."""

    type: type | tuple[type, ...]
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    #: for list parameters: type of each element
    item: type | tuple[type, ...] | None = None
    #: allow None
    optional: bool = False
    #: for list parameters: no element may repeat
    unique: bool = False
    help: str = ""

    def describe(self) -> str:
        t = self.type if isinstance(self.type, tuple) else (self.type,)
        s = "/".join(x.__name__ for x in t)
        if self.item is not None:
            it = self.item if isinstance(self.item, tuple) else (self.item,)
            s += "[" + "/".join(x.__name__ for x in it) + "]"
        if self.unique:
            s += " of distinct values"
        if self.choices is not None:
            s += f" in {list(self.choices)}"
        if self.min is not None or self.max is not None:
            lo = f"[{self.min}" if self.min is not None else "(-inf"
            hi = f"{self.max}]" if self.max is not None else "inf)"
            s += f" in {lo}, {hi}"
        if float in t or (self.item is not None and float in (self.item if isinstance(self.item, tuple) else (self.item,))):
            s += " (finite)"
        if self.optional:
            s += " or None"
        return s + (f": {self.help}" if self.help else "")


#: the ``budget_fraction`` parameter of the chapters that train at part of the headline budget (11, 12)
BUDGET_FRACTION = Param(float, min=0.01, max=1.0, help="fraction of the headline training steps")


def _check_one(name: str, value: Any, p: Param) -> Any:
    if value is None:
        if p.optional:
            return None
        raise ParameterError(f"parameter {name!r} may not be None; expected {p.describe()}")
    types = p.type if isinstance(p.type, tuple) else (p.type,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in types:
        raise ParameterError(f"parameter {name!r}={value!r} has type bool; expected {p.describe()}")
    if tuple in types and isinstance(value, list):
        value = tuple(value)
    if list in types and isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, types):
        raise ParameterError(f"parameter {name!r}={value!r} has type {type(value).__name__}; expected {p.describe()}")
    items: Iterable = value if isinstance(value, (list, tuple)) else [value]
    for v in items:
        if p.item is not None and isinstance(value, (list, tuple)):
            it = p.item if isinstance(p.item, tuple) else (p.item,)
            if isinstance(v, bool) or not isinstance(v, it):
                raise ParameterError(f"parameter {name!r} element {v!r} is not {'/'.join(x.__name__ for x in it)}; expected {p.describe()}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ParameterError(f"parameter {name!r}={v!r} is not a finite number; expected {p.describe()}")
        if p.choices is not None and v not in p.choices:
            raise ParameterError(f"parameter {name!r}={v!r} is not allowed; expected {p.describe()}")
        if p.min is not None and isinstance(v, (int, float)) and v < p.min:
            raise ParameterError(f"parameter {name!r}={v!r} is below {p.min}; expected {p.describe()}")
        if p.max is not None and isinstance(v, (int, float)) and v > p.max:
            raise ParameterError(f"parameter {name!r}={v!r} is above {p.max}; expected {p.describe()}")
    if isinstance(value, (list, tuple)) and len(value) == 0:
        raise ParameterError(f"parameter {name!r} is empty; expected {p.describe()}")
    if p.unique and isinstance(value, (list, tuple)) and len(set(value)) != len(value):
        repeated = sorted({v for v in value if list(value).count(v) > 1})
        raise ParameterError(f"parameter {name!r}={list(value)!r} repeats {repeated}; expected {p.describe()}")
    return value


def validate(values: dict[str, Any], spec: dict[str, Param]) -> dict[str, Any]:
    """Check ``values`` against ``spec``; return the (lightly coerced) values or raise ``ParameterError``.

    ``values`` is typically ``{k: v for k, v in globals().items() if k in spec or k in injected}``:
    use :func:`chapter_params` in notebooks, which also catches misspelt injected names.
    """
    unknown = sorted(set(values) - set(spec))
    if unknown:
        allowed = "\n".join(f"  {k}: {p.describe()}" for k, p in sorted(spec.items()))
        raise ParameterError(f"unknown parameter(s) {unknown}. Allowed parameters:\n{allowed}")
    return {k: _check_one(k, v, spec[k]) for k, v in values.items()}


def chapter_params(namespace: dict[str, Any], spec: dict[str, Param]) -> dict[str, Any]:
    """Validate a notebook's parameters, including names injected by papermill that the chapter lacks.

    papermill writes injected values into a cell tagged ``injected-parameters`` and records them in
    the notebook metadata; inside the kernel we detect them as globals that are not Python builtins,
    modules or the chapter's own names. The chapter passes ``globals()``; names starting with ``_`` and
    modules/functions/classes are ignored.
    """
    import inspect

    candidates = {}
    for k, v in namespace.items():
        if k.startswith("_") or k in {"In", "Out", "get_ipython", "exit", "quit"}:
            continue
        if inspect.ismodule(v) or inspect.isfunction(v) or inspect.isclass(v) or callable(v):
            continue
        candidates[k] = v
    return validate(candidates, spec)


# --------------------------------------------------------------------------------------------
# constraints that depend on the profile: checked before any model, cache or SAE is touched
# --------------------------------------------------------------------------------------------
#: environment variable: memory (GB) a chapter may plan for (default: the machine's, or the GPU's, total)
MEMORY_ENV = "VSAE_MEMORY_GB"
#: memory of everything but the SAEs of a training pass (the language model, caches, the kernel)
BASE_MEMORY_BYTES = 2 * 1024**3


def train_pass_bytes(profile, d_model: int, expansion: int | None = None) -> int:
    """Estimated peak memory of training the headline SAEs of one seed (one pass: TopK and vSAE at every k).

    Per SAE, fp32: its parameters (``W_enc``, ``W_dec``: ``2 * d_model * d_sae``, and the biases), their
    gradients and Adam's two moments (4 copies), plus a batch's pre-activations, codes and their
    gradients (``4 * batch * d_sae``); :data:`BASE_MEMORY_BYTES` for the rest.
    """
    d_sae = (profile.expansion if expansion is None else expansion) * d_model
    per_sae = 4 * (4 * (2 * d_model * d_sae + d_sae + d_model) + 4 * profile.batch_size * d_sae)
    return BASE_MEMORY_BYTES + 2 * len(profile.k_values) * per_sae


def memory_limit_bytes(device: str = "cpu") -> tuple[int, str]:
    """``(bytes, where)``: what a chapter may plan for (``$VSAE_MEMORY_GB``, else the device's total)."""
    env = os.environ.get(MEMORY_ENV)
    if env:
        return int(float(env) * 1024**3), f"${MEMORY_ENV}={env}"
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(0).total_memory), "the GPU's memory"
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "this machine's memory"


def _gb(b: float) -> str:
    return f"{b / 1024**3:.1f} GB"


def check_profile(profile, device: str = "cpu") -> None:
    """Refuse a profile (with the chapter's overrides applied) that cannot run, before any work.

    Checked from the profile alone, without loading the language model or touching the store:
    every k fits the dictionary (``k <= d_sae = expansion * d_model``), the corpora supply the token
    budgets (:func:`vsae.data.context_supply`), and the SAEs of one training pass fit in memory
    (:func:`train_pass_bytes` against :func:`memory_limit_bytes`). Raises :class:`ParameterError`
    naming the parameter and what is allowed.
    """
    from .data import context_supply
    from .lm import D_MODEL

    p = profile
    d_model = D_MODEL[p.lm]
    d_sae = p.expansion * d_model
    too_big = [k for k in p.k_values if k > d_sae]
    if too_big:
        need = -(-max(p.k_values) // d_model)
        raise ParameterError(
            f"parameter 'k_values'={list(p.k_values)} has k {too_big} above the dictionary size of profile "
            f"{p.name!r}: d_sae = expansion x d_model = {p.expansion} x {d_model} = {d_sae}; allowed: every k in "
            f"[1, {d_sae}]" + (f", or -p expansion {need} or more" if need <= 64 else ""))
    for field, corpus, split in (("n_train_tokens", p.train_corpus, "train"), ("n_eval_tokens", p.eval_corpus, "eval")):
        n = getattr(p, field)
        n_ctx = context_supply(corpus, split, p.lm, p.ctx_len)
        if n_ctx is not None and n > n_ctx * p.ctx_len:
            supply = (f"is more than corpus {corpus!r} ({split} split) supplies to {p.lm} in {p.ctx_len}-token "
                      f"contexts: at most {n_ctx * p.ctx_len:,} tokens ({n_ctx:,} contexts)")
            if field == "n_train_tokens":
                raise ParameterError(f"parameter {field!r}={n:,} {supply}; allowed: {field} in "
                                     f"[1000, {n_ctx * p.ctx_len}] for profile {p.name!r}")
            raise ParameterError(f"profile field {field!r}={n:,} of profile {p.name!r} {supply}")
    need = train_pass_bytes(p, d_model)
    limit, where = memory_limit_bytes(device)
    if need > limit:
        per_unit = train_pass_bytes(p, d_model, 1) - BASE_MEMORY_BYTES
        e_max = max(0, (limit - BASE_MEMORY_BYTES) // per_unit)
        allowed = (f"expansion in [1, {e_max}] with {len(p.k_values)} k value(s) on this machine (fewer k_values "
                   "also need less)" if e_max >= 1 else
                   f"no expansion fits {len(p.k_values)} k value(s) on this machine: pass fewer k_values, or set "
                   f"${MEMORY_ENV} to the memory you can give")
        raise ParameterError(
            f"parameter 'expansion'={p.expansion} needs about {_gb(need)} to train the {2 * len(p.k_values)} SAEs of a "
            f"pass (d_sae = expansion x d_model = {p.expansion} x {d_model} = {d_sae}), more than {where} "
            f"({_gb(limit)}); allowed: {allowed}")


def chapter_profile(params: dict[str, Any], fields: Iterable[str]):
    """The chapter's :class:`~vsae.profiles.Profile`: ``params["profile"]`` with the non-None ``fields``
    of ``params`` applied, checked by :func:`check_profile` (a :class:`ParameterError` otherwise)."""
    from .profiles import get_profile

    overrides = {k: params[k] for k in fields if params.get(k) is not None}
    try:
        prof = get_profile(params["profile"], **overrides)
    except ValueError as e:
        raise ParameterError(str(e)) from None
    check_profile(prof, params.get("device", "cpu"))
    return prof
