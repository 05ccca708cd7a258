"""Build and load SAEs through one registry: ``architecture`` (the field every config carries and
``cfg.json`` records) -> (config class, module class)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import config as _config
from .base import SAEBase
from .topk import TopKSAE
from .vsae import VSAE

#: architecture name -> (config dataclass, SAE module); a new architecture registers here
REGISTRY: dict[str, tuple[type, type[SAEBase]]] = {
    "topk": (_config.TopKSAEConfig, TopKSAE),
    "vsae": (_config.VSAEConfig, VSAE),
}


def config_from_dict(d: dict) -> _config.TopKSAEConfig | _config.VSAEConfig:
    """Rebuild a config from its ``cfg.json`` dict (dispatch on ``architecture``)."""
    import dataclasses

    arch = d.get("architecture")
    if arch not in REGISTRY:
        raise ValueError(f"unknown SAE architecture {arch!r} (expected one of {sorted(REGISTRY)})")
    cls = REGISTRY[arch][0]
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown fields for {cls.__name__}: {sorted(unknown)}")
    return cls(**d)


def build_sae(cfg: _config.TopKSAEConfig | _config.VSAEConfig) -> TopKSAE | VSAE:
    """Instantiate the SAE described by ``cfg``."""
    for cfg_cls, sae_cls in REGISTRY.values():
        if isinstance(cfg, cfg_cls):
            return sae_cls(cfg)
    raise TypeError(f"not an SAE config: {type(cfg).__name__}")


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> TopKSAE | VSAE:
    """Load an SAE saved by ``save`` (dispatch on ``cfg.json`` "architecture"); eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = config_from_dict(json.loads((path / "cfg.json").read_text()))
    sae = build_sae(cfg)
    state = load_file(str(path / "sae.safetensors"))
    sae.load_state_dict(state, strict=True)
    return sae.to(device).eval()
