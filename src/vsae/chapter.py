"""What every chapter does first: validate its parameters, build the experiment, print its header."""

from __future__ import annotations

import warnings

from .params import Param, chapter_params, chapter_profile
from .pipeline import Experiment
from .profiles import PROFILES
from .report import ChapterTimer, header

#: parameters every chapter accepts; ``None`` means "the profile's value"
COMMON = {
    "profile": Param(str, choices=tuple(PROFILES), help="named setting: paper, offline or smoke"),
    "device": Param(str, choices=("cpu", "cuda"), help="where the LM and the SAEs run"),
    "k_values": Param(list, item=int, min=1, optional=True, unique=True,
                      help="TopK values of the headline runs (each at most d_sae = expansion x d_model)"),
    "kl_coeff": Param(float, min=0.0, optional=True, help="vSAE KL weight (the paper: 1.0)"),
    "n_train_tokens": Param(int, min=1000, optional=True,
                            help="SAE training tokens (at most what the profile's training corpus supplies)"),
    "expansion": Param(int, min=1, max=64, optional=True, help="d_sae / d_model"),
    "seeds": Param(list, item=int, min=0, optional=True, unique=True,
                   help="seeds of the headline SAEs (the first is the main one); metrics: mean and 95% interval"),
}
PROFILE_FIELDS = ("k_values", "kl_coeff", "n_train_tokens", "expansion", "seeds")


def text_progress() -> None:
    """Make ``tqdm.auto`` (used by vsae, transformers, transformer-lens) draw plain-text bars in a kernel.

    Under ipykernel ``tqdm.auto`` wants the ipywidgets progress widget; without ipywidgets it warns
    (``TqdmWarning: IProgress not found``, with a machine path) and falls back to text, and with it the
    executed chapters would store widget outputs no static page can show. Either way the chapters want
    text bars on stderr, which the book collapses to each bar's final line. Idempotent; call it before
    anything imports ``tqdm.auto`` (importing :mod:`vsae.chapter` does).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*IProgress not found.*")
        import tqdm.autonotebook as autonotebook
        import tqdm.auto as auto
    from tqdm.asyncio import tqdm as text_tqdm
    from tqdm.std import tqdm as std_tqdm

    def trange(*args, **kwargs):
        return text_tqdm(range(*args), **kwargs)

    autonotebook.tqdm, autonotebook.trange = std_tqdm, trange
    auto.tqdm, auto.trange = text_tqdm, trange


text_progress()


def start(chapter: str, namespace: dict, extra: dict[str, Param] | None = None):
    """Validate ``namespace``'s parameters, return ``(experiment, params, timer)`` and show the header.

    Every refusal (:class:`~vsae.params.ParameterError`: a wrong name, type or value, or a profile
    constraint of :func:`~vsae.params.check_profile`) happens before the store or a model is touched.

    Call it in the cell right after the ``parameters`` cell, before assigning anything else.
    """
    spec = COMMON | (extra or {})
    params = chapter_params(namespace, spec)
    missing = sorted(set(spec) - set(params))
    if missing:
        raise NameError(f"chapter {chapter} does not define parameter(s) {missing} in its parameters cell")
    if params["device"] == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device; use -p device cpu")
    # every constraint that depends on the profile (k <= d_sae, token budgets, memory) is checked here,
    # before the experiment touches a model, a cache or the store
    profile = chapter_profile(params, PROFILE_FIELDS)
    ex = Experiment(profile, params["device"])
    try:
        from IPython.display import Markdown, display

        display(Markdown(header(ex.profile)))
    except ImportError:  # pragma: no cover - outside notebooks
        print(header(ex.profile))
    return ex, params, ChapterTimer(chapter, ex.profile.name)
