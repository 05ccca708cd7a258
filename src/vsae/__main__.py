"""Command line: ``python -m vsae <command> ...`` (also installed as ``vsae``).

Commands::

    fetch     [--with-docs] [--only NAME ...]         fetch + verify the pinned offline assets
    assets                                              list the pinned assets and whether present
    harvest   --profile P [--split train|eval|both] [--n-tokens N] [--lm NAME --layer L --dtype D]
              [--corpus C] [--batch-size B]            harvest activations into the store
    verify    PATH [--full]                             check an activation cache (manifest, sizes, sha256)
    tokens    [--corpus C] [--lm NAME]                  token counts per source and split
    hub                                                 is the Hugging Face Hub reachable?
    train     [--profile P] [--device D] [--main-seed-only] [--k-values K,K] [--seeds S,S]
                                                        train the profile's headline SAEs into the store
    export    SAE_DIR --format saelens|saebench OUT [--normalize-decoder] [--hook-name H] [--model-name M]
                                                        write an SAE as SAELens / SAE Bench load it (vsae.export)
    tables    [--profile P] [--device D] [--k-values K,K] [--seeds S,S] [--format csv,parquet] OUT
                                                        write every per-seed result table as CSV / Parquet
    browser   SAE_DIR [SAE_DIR ...] --out OUT [--profile P] [--device D] [--contexts N] [--max-latents M]
              [--n-tokens N]                           write a static feature browser (vsae.browser)
    convergence [--profile P] [--device D] [--k K] [--seeds S,S] [--n-train-tokens N] [--out DIR]
                                                        TopK vs vSAE at the headline and the paper's budget

A command is added to :data:`COMMANDS` as ``name: (add_arguments, run)`` and a line in :data:`HELP`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int | None]]] = {}


def _error(e: BaseException, code: int) -> int:
    """Print ``error: <message>`` to stderr and return the command's exit status."""
    print(f"error: {e}", file=sys.stderr)
    return code


# -- fetch --------------------------------------------------------------------------------------
def _fetch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--with-docs", action="store_true", help="also the optional CPython docs (Debian python3.11-doc)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these assets (see `python -m vsae assets`)")


def _fetch(a: argparse.Namespace) -> int:
    from .assets import AssetError, fetch_all

    which = a.only if a.only else ("all" if a.with_docs else "default")
    try:
        fetch_all(which)
    except AssetError as e:
        return _error(e, 1)
    return 0


def _assets_args(p: argparse.ArgumentParser) -> None:
    pass


def _assets(a: argparse.Namespace) -> int:
    from .assets import describe_assets

    for r in describe_assets():
        print(f"{r['name']:12s} {r['client']:9s} {r['spec']:28s} {'present' if r['present'] else 'missing':8s} "
              f"{'(optional) ' if r['optional'] else ''}sha256 {r['sha256']}")
    return 0


# -- harvest ------------------------------------------------------------------------------------
def _harvest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="offline", help="paper | offline | smoke (default offline)")
    p.add_argument("--split", default="train", choices=["train", "eval", "both"])
    p.add_argument("--n-tokens", type=int, help="default: the profile's n_train_tokens / n_eval_tokens")
    p.add_argument("--lm", help="override the profile's language model")
    p.add_argument("--layer", type=int, help="override the profile's layer")
    p.add_argument("--dtype", help="override the profile's lm_dtype")
    p.add_argument("--corpus", help="override the profile's corpus")
    p.add_argument("--batch-size", type=int, default=None, help="contexts per forward pass (default 32)")
    p.add_argument("--no-progress", action="store_true")


def _harvest(a: argparse.Namespace) -> int:
    from .activations import DEFAULT_BATCH, harvest
    from .hub import HubUnavailableError
    from .lm import load_lm
    from .profiles import get_profile
    from .store import Store

    over = {k: v for k, v in {"lm": a.lm, "layer": a.layer, "lm_dtype": a.dtype}.items() if v is not None}
    prof = get_profile(a.profile, **over)
    try:
        lm = load_lm(prof.lm, prof.layer, dtype=prof.lm_dtype)
    except HubUnavailableError as e:
        return _error(e, 2)
    store = Store()
    for split in (["train", "eval"] if a.split == "both" else [a.split]):
        corpus = a.corpus or (prof.train_corpus if split == "train" else prof.eval_corpus)
        n = a.n_tokens or (prof.n_train_tokens if split == "train" else prof.n_eval_tokens)
        try:
            cache = harvest(lm, corpus, split, n, prof.ctx_len, store, batch_size=a.batch_size or DEFAULT_BATCH,
                            progress=not a.no_progress)
        except HubUnavailableError as e:
            return _error(e, 2)
        print(f"{cache!r}\n  {cache.path}")
    return 0


# -- verify -------------------------------------------------------------------------------------
def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="an activation-cache folder (store/acts/<key>)")
    p.add_argument("--full", action="store_true", help="also re-hash every data file")


def _verify(a: argparse.Namespace) -> int:
    from .activations import ActivationCache, CacheError

    try:
        c = ActivationCache(a.path, verify="full" if a.full else "quick")
    except CacheError as e:
        return _error(e, 1)
    print(f"ok: {c!r}")
    return 0


# -- tokens -------------------------------------------------------------------------------------
def _tokens_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", default="offline")
    p.add_argument("--lm", default=None, help="tokenizer of this model (default: the Pythia / GPT-NeoX-20B one)")
    p.add_argument("--ctx-len", type=int, default=128)


def _tokens(a: argparse.Namespace) -> int:
    from .data import token_counts
    from .store import Store

    lm = None
    if a.lm:
        from .lm import load_lm

        lm = load_lm(a.lm, 0)
    df = token_counts(a.corpus, lm, a.ctx_len, store=Store())
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df.to_string(index=False))
        print(df.groupby("split")[["docs", "tokens", "context_tokens"]].sum().to_string())
    return 0


# -- hub ----------------------------------------------------------------------------------------
def _hub_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=3.0)


def _hub(a: argparse.Namespace) -> int:
    from .hub import hub_endpoint, hub_reachable

    ok, why = hub_reachable(a.timeout, path="EleutherAI/pythia-70m-deduped/resolve/main/config.json")
    print(json.dumps({"endpoint": hub_endpoint(), "reachable": ok, "detail": why}))
    return 0 if ok else 1


# -- train --------------------------------------------------------------------------------------
def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="offline", help="paper | offline | smoke (default offline)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--k-values", type=_ints, metavar="K,K", help="override the profile's k values, e.g. 64,128")
    p.add_argument("--seeds", type=_ints, metavar="S,S", help="override the profile's seeds (first = main), e.g. 42,43")


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _experiment(a: argparse.Namespace):
    from .pipeline import Experiment

    over = {k: v for k, v in {"k_values": a.k_values, "seeds": a.seeds}.items() if v is not None}
    return Experiment(a.profile, a.device, **over)


def _train_args(p: argparse.ArgumentParser) -> None:
    _profile_args(p)
    p.add_argument("--main-seed-only", action="store_true",
                   help="only the main seed's runs (default: every seed of the profile, as chapter 03)")
    p.add_argument("--no-progress", action="store_true")


def _train(a: argparse.Namespace) -> int:
    from .hub import HubUnavailableError

    try:
        ex = _experiment(a)
        variants = ex.headline_variants() if a.main_seed_only else ex.seed_variants()
        ex.train(variants, progress=not a.no_progress)
    except HubUnavailableError as e:
        return _error(e, 2)
    for v in variants:
        print(f"{v.name:24s} {ex.sae_dir(v)}")
    return 0


# -- export -------------------------------------------------------------------------------------
def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sae_dir", help="a saved SAE folder (cfg.json + sae.safetensors), e.g. a path printed by `train`")
    p.add_argument("out", help="folder to write")
    p.add_argument("--format", required=True, choices=["saelens", "saebench"],
                   help="saelens: cfg.json + sae_weights.safetensors for sae_lens.SAE.load_from_disk; "
                        "saebench: the state dict of sae_bench.custom_saes.topk_sae.TopKSAE + load_saebench.py")
    p.add_argument("--normalize-decoder", action="store_true",
                   help="unit-norm decoder rows first (changes a vSAE's TopK selection; see vsae.export)")
    p.add_argument("--hook-name", help="default: the hook recorded in the SAE's cfg.json")
    p.add_argument("--model-name", help="the peers' model name (default: from the recorded language model)")
    p.add_argument("--layer", type=int, help="default: the recorded layer")


def _export(a: argparse.Namespace) -> int:
    from .export import export_sae

    try:
        out = export_sae(a.sae_dir, a.out, a.format, normalize_decoder=a.normalize_decoder,
                         hook_name=a.hook_name, model_name=a.model_name, layer=a.layer)
    except (OSError, ValueError) as e:
        return _error(e, 1)
    print(f"{a.format}: {out}")
    return 0


# -- tables -------------------------------------------------------------------------------------
def _tables_args(p: argparse.ArgumentParser) -> None:
    _profile_args(p)
    p.add_argument("out", help="folder to write <table>.csv / .parquet, SCHEMA.txt, schema.json, manifest.json")
    p.add_argument("--format", type=lambda t: [f.strip() for f in t.split(",") if f.strip()], default=["csv", "parquet"],
                   metavar="csv,parquet", help="which files to write (default both)")


def _tables(a: argparse.Namespace) -> int:
    from .export import export_tables
    from .hub import HubUnavailableError

    try:
        manifest = export_tables(_experiment(a), a.out, formats=a.format)
    except ValueError as e:
        return _error(e, 1)
    except HubUnavailableError as e:
        return _error(e, 2)
    print(f"{len(manifest['tables'])} tables in {a.out}:")
    from pathlib import Path

    print((Path(a.out) / "SCHEMA.txt").read_text(), end="")
    return 0


# -- browser ------------------------------------------------------------------------------------
def _browser_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sae_dirs", nargs="+", metavar="SAE_DIR",
                   help="saved SAE folders (cfg.json + sae.safetensors), e.g. a TopK SAE and a vSAE printed by `train`")
    p.add_argument("--out", required=True, help="folder to write (index.html, data_<name>.js, browser.js/.css, tabulator/)")
    p.add_argument("--profile", default="offline", help="whose LM and evaluation activations: paper | offline | smoke")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--contexts", type=int, default=10, metavar="N", help="top activating contexts per latent (default 10)")
    p.add_argument("--max-latents", type=int, default=None, metavar="M",
                   help="at most M latents per SAE, the densest (default: every alive latent)")
    p.add_argument("--n-tokens", type=int, default=None, metavar="N",
                   help="evaluation tokens looked at (default: the whole evaluation cache)")


def _browser(a: argparse.Namespace) -> int:
    from .assets import AssetError
    from .browser import BrowserOptions, browser_from_dirs, folder_bytes
    from .hub import HubUnavailableError

    try:
        opts = BrowserOptions(n_contexts=a.contexts, max_latents=a.max_latents, n_tokens=a.n_tokens)
        out = browser_from_dirs(a.sae_dirs, a.out, profile=a.profile, device=a.device, opts=opts)
    except (AssetError, FileNotFoundError, ValueError) as e:
        return _error(e, 1)
    except HubUnavailableError as e:
        return _error(e, 2)
    print(f"feature browser: {out / 'index.html'} ({folder_bytes(out) / 1e6:.2f} MB; opens from file://, offline)")
    return 0


# -- convergence --------------------------------------------------------------------------------
def _convergence_args(p: argparse.ArgumentParser) -> None:
    from .design import PAPER_TRAIN_TOKENS

    p.add_argument("--profile", default="offline")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--k", type=int, default=None, help="TopK k (default: the profile's showcase k)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the profile's)")
    p.add_argument("--n-train-tokens", type=int, default=None,
                   help=f"training tokens of the cache (default: the profile's n_convergence_tokens, offline and "
                        f"paper {PAPER_TRAIN_TOKENS:,}); the long budget is this over the batch size")
    p.add_argument("--out", default=None, help="folder for core.csv, logs.csv, comparison.csv")


def _convergence(a: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from .convergence import budget_sentence, budget_wide
    from .hub import HubUnavailableError
    from .pipeline import Experiment

    t0 = time.time()
    try:
        seeds = [int(x) for x in a.seeds.split(",")] if a.seeds else None
        ex = Experiment(a.profile, a.device)
        res = ex.convergence(k=a.k, seeds=seeds, n_train_tokens=a.n_train_tokens)
    except (FileNotFoundError, ValueError) as e:
        return _error(e, 1)
    except HubUnavailableError as e:
        return _error(e, 2)
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(budget_wide(res["comparison"]).to_string())
    print(budget_sentence(res["comparison"], "headline", "paper"))
    print("evaluation noise (bootstrap 95% half-width) beside the seed interval's half-width:")
    with pd.option_context("display.width", 200):
        print(res["noise"].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("core", "logs", "comparison", "noise"):
            res[name].to_csv(out / f"{name}.csv", index=False)
        print(f"tables: {out}/{{core,logs,comparison,noise}}.csv")
    print(f"convergence: {len(res['core'])} SAEs at {res['core'].steps.nunique()} budgets in {time.time() - t0:.0f} s")
    return 0


COMMANDS.update({
    "fetch": (_fetch_args, _fetch),
    "assets": (_assets_args, _assets),
    "harvest": (_harvest_args, _harvest),
    "verify": (_verify_args, _verify),
    "tokens": (_tokens_args, _tokens),
    "hub": (_hub_args, _hub),
    "train": (_train_args, _train),
    "export": (_export_args, _export),
    "tables": (_tables_args, _tables),
    "browser": (_browser_args, _browser),
    "convergence": (_convergence_args, _convergence),
})

HELP = {
    "fetch": "fetch, verify and unpack the pinned offline assets (idempotent)",
    "assets": "list the pinned assets",
    "harvest": "harvest residual activations of a profile into the store (resumable)",
    "verify": "verify an activation cache",
    "tokens": "token counts of a corpus per source and split",
    "hub": "check whether the Hugging Face Hub is reachable (3 s)",
    "train": "train the profile's headline SAEs (all seeds) into the store; prints their folders",
    "export": "export a saved SAE for SAELens or SAE Bench",
    "convergence": "TopK vs vSAE at the headline and the paper's training budget (trains what is missing)",
    "tables": "write every per-seed result table of a profile as CSV / Parquet with a schema",
    "browser": "write a static, offline feature browser of saved SAEs (e.g. a TopK SAE and a vSAE)",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vsae", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name, (add, _) in COMMANDS.items():
        add(sub.add_parser(name, help=HELP.get(name, "")))
    a = ap.parse_args(argv)
    return int(COMMANDS[a.command][1](a) or 0)


if __name__ == "__main__":
    sys.exit(main())
