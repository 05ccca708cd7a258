"""Figures of the book: one palette for TopK and vSAE, labelled axes, legible at page width.

Every function returns a matplotlib ``Figure``; :func:`savefig` also writes it as a PNG beside the
executed chapter (``figures/<name>.png``). Paper values, where drawn, are open markers on dashed lines.
One module per part of the book: :mod:`.style` (palette, labels, saving, shared axis helpers),
:mod:`.overview` (chapters 1-3), :mod:`.core` (4), :mod:`.probing` (5), :mod:`.scr_tpp` (6-7),
:mod:`.features` (8-9), :mod:`.beyond` (11), :mod:`.attribution` (12).
"""

from .attribution import CURVE_LABELS, LADDER_LABELS, convergence_curves, ladder_bars
from .beyond import BEYOND_METRICS, kl_sweep, seed_intervals, sigma_sweep, variant_bars
from .core import METRIC_LABELS, alive_vs_tokens, density_histogram, metrics_vs_k, pareto
from .features import cosine_distributions, feature_pair, feature_tsne_panels, latent_summary, token_tsne_panels
from .overview import activation_norms, architecture_diagram, training_curves
from .probing import probing_2x2
from .scr_tpp import scr_1x4, tpp_1x4
from .style import LABELS, MARKERS, PAGE_WIDTH, PALETTE, color, label, savefig, setup

__all__ = [
    "CURVE_LABELS", "LADDER_LABELS", "convergence_curves", "ladder_bars",
    "BEYOND_METRICS", "kl_sweep", "seed_intervals", "sigma_sweep", "variant_bars",
    "METRIC_LABELS", "alive_vs_tokens", "density_histogram", "metrics_vs_k", "pareto",
    "cosine_distributions", "feature_pair", "feature_tsne_panels", "latent_summary", "token_tsne_panels",
    "activation_norms", "architecture_diagram", "training_curves",
    "probing_2x2", "scr_1x4", "tpp_1x4",
    "LABELS", "MARKERS", "PAGE_WIDTH", "PALETTE", "color", "label", "savefig", "setup",
]
