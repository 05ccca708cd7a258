"""Our TopK training step against the field's trainers, in one run, on the same inputs.

Peers (each in its own virtual environment, created once under ``.peers/`` at the repository root,
git-ignored):

- ``dictionary_learning``: ``dictionary-learning==0.1.0`` (the paper's trainer),
  ``TopKTrainer.update(step, x)``;
- ``sae_lens``: ``sae-lens==6.54.12``, its ``TopKTrainingSAE`` (default config) stepped by its own
  ``SAETrainer.step`` as ``SAETrainer.fit`` does (``training_forward_pass`` with the dead-neuron
  mask, firing statistics, backward, clip 1.0, Adam, lr scheduler step; wandb off);
- ``ours``: :meth:`vsae.training.SAETrainer.update` of a :class:`vsae.models.TopKSAEConfig` SAE,
  in the project's ``.venv``.

Every environment gets ``torch==2.13.0`` (the CPU build pip finds on this machine) installed first
and pinned by a constraints file while the package is installed, so no package can swap it for
another build. Each measurement is one child process (``benchmarks/peer_worker.py``) that sets
``torch.set_num_threads``, builds the same seeded random activations (d_in 576, d_sae 4608, k 256
by default: the offline book's shapes at the paper's k 256), and alternates the implementation's
step with the naive dense TopK step of ``benchmarks/naive_topk.py`` (also used by
``train_throughput.py``), so each implementation is reported both in tokens/s and relative to the
naive step of its own process. Rounds are interleaved (round 1: ours, dictionary_learning,
sae_lens; round 2: ...), and the median over rounds is reported, so that load from other
processes falls on all of them alike.

The ratio ``ours/<peer>`` is ``(ours / naive in our process) / (peer / naive in its process)``:
a ratio of speeds, each normalised by the same naive step timed in the same process.
The last line is exactly ``peers: ours/dictionary_learning=<x> ours/sae_lens=<y> at batch 192``.

Usage: ``python benchmarks/peers.py [--quick] [--threads N] [--batches 192,4096] [--rounds R]
[--setup-only]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS_DIR = ROOT / ".peers"
WORKER = Path(__file__).resolve().parent / "peer_worker.py"
TORCH_PIN = "torch==2.13.0"

#: the environments: folder under .peers/, the packages to install, the pins that keep them on
#: torch 2.13.0, and what to remove afterwards. dictionary-learning 0.1.0 pulls nnsight 0.3.x, which
#: lists torchvision: the newest torchvision wants torch 2.14.1 (and would swap torch for a CUDA
#: build), so it is held at 0.28.0, the release for torch 2.13; the registry's torchvision wheels are
#: built against the CUDA torch, and with the CPU torch their C operators fail to register, which
#: breaks ``import transformers``. Neither peer imports torchvision, so it is uninstalled again.
ENVS: dict[str, dict] = {
    "dictionary_learning": {
        "dir": "dictionary-learning",
        "packages": ["dictionary-learning==0.1.0"],
        "pins": [TORCH_PIN, "torchvision==0.28.0"],
        "module": "dictionary_learning",
        "remove": ["torchvision"],
    },
    "sae_lens": {
        "dir": "sae-lens",
        "packages": ["sae-lens==6.54.12"],
        "pins": [TORCH_PIN, "torchvision==0.28.0"],
        "module": "sae_lens",
        "remove": ["torchvision"],
    },
}
PEER_ORDER = ["ours", "dictionary_learning", "sae_lens"]


def env_python(peer: str) -> Path:
    if peer == "ours":
        return ROOT / ".venv" / "bin" / "python"
    return PEERS_DIR / ENVS[peer]["dir"] / "bin" / "python"


def _pip(py: Path, *args: str) -> None:
    cmd = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    print("  $", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)


def _freeze(py: Path) -> str:
    return subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout


def ensure_env(peer: str) -> Path:
    """Create ``.peers/<dir>`` with torch 2.13.0 and the peer's package, once (a stamp file marks
    a finished install; delete the folder to rebuild it)."""
    spec = ENVS[peer]
    env = PEERS_DIR / spec["dir"]
    py = env / "bin" / "python"
    want = json.dumps({k: spec[k] for k in ("packages", "pins", "remove")}, sort_keys=True)
    stamp = env / ".vsae-peer-stamp"
    if stamp.exists() and stamp.read_text() == want and py.exists():
        return py
    print(f"creating the {peer} environment in {env.relative_to(ROOT)} (once)", flush=True)
    env.parent.mkdir(parents=True, exist_ok=True)
    if not py.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(env)], check=True)
    cons = env / "constraints.txt"
    cons.write_text("\n".join(spec["pins"]) + "\n")
    _pip(py, TORCH_PIN)  # first: the local CPU build of exactly this version
    _pip(py, "-c", str(cons), *spec["packages"])
    installed = {ln.split("==")[0].lower() for ln in _freeze(py).splitlines()}
    remove = [p for p in spec["remove"] if p.lower() in installed]
    if remove:
        print("  $ -m pip uninstall -y", " ".join(remove), flush=True)
        subprocess.run([str(py), "-m", "pip", "uninstall", "-y", "-q", *remove], check=True)
    (env / "freeze.txt").write_text(_freeze(py))
    subprocess.run([str(py), "-c", f"import torch, {spec['module']}; assert torch.__version__.startswith('2.13.0')"], check=True)
    stamp.write_text(want)
    return py


def versions(peer: str) -> dict:
    dist = {"ours": "vsae", "dictionary_learning": "dictionary-learning", "sae_lens": "sae-lens"}[peer]
    code = (
        "import json, importlib.metadata as m, torch\n"
        f"print(json.dumps({{'torch': torch.__version__, 'package': m.version({dist!r})}}))"
    )
    out = subprocess.run([str(env_python(peer)), "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_worker(peer: str, batch: int, threads: int, steps: int, args) -> dict:
    cmd = [
        str(env_python(peer)), str(WORKER), peer, "--batch", str(batch), "--threads", str(threads),
        "--steps", str(steps), "--d-in", str(args.d_in), "--d-sae", str(args.d_sae), "--k", str(args.k),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{peer} worker failed (batch {batch}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(rounds: dict[str, list[dict]]) -> dict[str, dict]:
    """Median over rounds of each implementation's tokens/s, its naive step's, and their ratio."""
    out = {}
    for peer, rs in rounds.items():
        out[peer] = {
            "step_tok_s": statistics.median(r["step_tok_s"] for r in rs),
            "naive_tok_s": statistics.median(r["naive_tok_s"] for r in rs),
            "vs_naive": statistics.median(r["step_tok_s"] / r["naive_tok_s"] for r in rs),
        }
    return out


def ratio(summary: dict[str, dict], peer: str) -> float:
    """ours/peer, each normalised by the naive step of its own process."""
    return summary["ours"]["vs_naive"] / summary[peer]["vs_naive"]


def peers_line(r_dl: float, r_sl: float, batch: int = 192) -> str:
    return f"peers: ours/dictionary_learning={r_dl:.2f} ours/sae_lens={r_sl:.2f} at batch {batch}"


def _load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of every worker (default: the usable cores)")
    ap.add_argument("--batches", default="192,4096")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, --quick 2)")
    ap.add_argument("--d-in", type=int, default=576)
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--setup-only", action="store_true", help="create the environments and stop")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    rounds = args.rounds or (2 if args.quick else 3)
    print(f"start: {_load()} ({os.cpu_count()} CPUs)", flush=True)
    for peer in ENVS:
        ensure_env(peer)
    if args.setup_only:
        return
    for peer in PEER_ORDER:
        v = versions(peer)
        print(f"{peer}: package {v['package']}, torch {v['torch']}  ({env_python(peer).relative_to(ROOT)})")
    print(f"d_in {args.d_in}, d_sae {args.d_sae}, k {args.k}, fp32, {threads} threads, {rounds} interleaved rounds")
    batches = [int(b) for b in args.batches.split(",")]
    t_all = time.perf_counter()
    results = {}
    for batch in batches:
        steps = (4 if args.quick else 6) if batch >= 2048 else (12 if args.quick else 24)
        per: dict[str, list[dict]] = {p: [] for p in PEER_ORDER}
        for r in range(rounds):
            for peer in PEER_ORDER:
                per[peer].append(run_worker(peer, batch, threads, steps, args))
        s = summarise(per)
        results[batch] = {"summary": s, "rounds": per, "steps": steps}
        print(f"\nbatch {batch} ({steps} timed steps per process, median of {rounds} rounds; {_load()})")
        print(f"{'implementation':>20} {'tokens/s':>10} {'naive tok/s':>12} {'vs naive':>9} {'ours/this':>10} {'raw ours/this':>14}")
        for peer in PEER_ORDER:
            x = s[peer]
            rat = ratio(s, peer)
            raw = s["ours"]["step_tok_s"] / x["step_tok_s"]
            print(f"{peer:>20} {x['step_tok_s']:>10,.0f} {x['naive_tok_s']:>12,.0f} {x['vs_naive']:>9.2f} {rat:>10.2f} {raw:>14.2f}", flush=True)
    print("\n(ours/this: speeds normalised by the naive dense step of their own process; raw: plain tokens/s ratio)")
    print(f"benchmark took {time.perf_counter() - t_all:.0f} s; end: {_load()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": threads, "results": results, "args": vars(args)}, f, indent=2)
    if 192 in results:
        s = results[192]["summary"]
        print(peers_line(ratio(s, "dictionary_learning"), ratio(s, "sae_lens"), 192))


if __name__ == "__main__":
    main()
