"""The optimizer of the trainer: Adam on parameters stored d_sae-major, without layout copies.

The trainer (:mod:`vsae.training`) stores ``W_enc`` (and ``W_var``) transposed so that the sparse
encoder gradient, naturally ``[d_sae, d_in]``, needs no transposing copy (:func:`transposed_storage`);
:class:`LayoutAdam` steps such parameters in place with the same functional Adam as
``torch.optim.Adam(fused=True)``, bit for bit.
"""

from __future__ import annotations

import torch


class LayoutAdam(torch.optim.Adam):
    """``torch.optim.Adam`` (fused kernel) that also runs without copies on parameters stored
    transposed.

    The sparse encoder gradient is naturally [d_sae, d_in]; the trainer therefore stores ``W_enc``
    (and ``W_var``) d_sae-major (``p.t()`` contiguous) so that the gradient needs no transposing
    copy. The stock fused Adam copies such non-contiguous parameters in and out; this subclass
    passes the contiguous transposed views to the same functional ``torch.optim.adam.adam``
    instead. Adam is elementwise, so results are bitwise those of ``torch.optim.Adam(fused=True)``;
    state and ``state_dict`` are the stock ones.
    """

    def __init__(self, params, lr: float, betas: tuple[float, float], eps: float):
        super().__init__(params, lr=lr, betas=betas, eps=eps, fused=True)

    @staticmethod
    def _flat(t: torch.Tensor) -> torch.Tensor:
        return t.t() if t.dim() == 2 and not t.is_contiguous() and t.t().is_contiguous() else t

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        assert closure is None
        from torch.optim.adam import adam

        for group in self.param_groups:
            ps, gs, ms, vs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.stride() != p.stride():
                    raise RuntimeError("gradient layout differs from its parameter's")
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                ps.append(self._flat(p))
                gs.append(self._flat(p.grad))
                ms.append(self._flat(st["exp_avg"]))
                vs.append(self._flat(st["exp_avg_sq"]))
                steps.append(st["step"])
            if ps:
                b1, b2 = group["betas"]
                adam(
                    ps, gs, ms, vs, [], steps, fused=True, amsgrad=False, beta1=b1, beta2=b2,
                    lr=group["lr"], weight_decay=0.0, eps=group["eps"], maximize=False,
                )


def make_adam(params, lr: float, betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
    """:class:`LayoutAdam`, or the stock foreach Adam where the fused kernel is not available."""
    try:
        return LayoutAdam(params, lr, betas, eps)
    except (RuntimeError, ValueError, TypeError):  # pragma: no cover - older torch / other device
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, foreach=True)


def transposed_storage(p: torch.nn.Parameter) -> None:
    """Re-lay a 2-D parameter d_sae-major in place (same values and shape, ``p.t()`` contiguous)."""
    with torch.no_grad():
        p.data = p.data.t().contiguous().t()
