"""vsae.export in the main environment: file formats, weight round trips, the vSAE as a TopK-style SAE,
the result-table export and the CLI commands (the peers themselves: tests/interop/)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from vsae import export
from vsae.__main__ import main as cli
from vsae.models import VSAE, TopKSAE, TopKSAEConfig, VSAEConfig, load_sae

D_IN, D_SAE, K = 16, 64, 6


def _meta():
    return {"name": "r", "norm_factor": 2.5,
            "cache": {"hook": "blocks.3.hook_resid_post", "checksum": "c" * 16,
                      "model": {"name": "pythia-70m-random", "layer": 3, "prepend_bos": True}}}


def _rand(sae, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sae.named_parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        if isinstance(sae, VSAE):
            sae.W_dec.mul_(torch.rand(sae.d_sae, 1, generator=g) + 0.3)
        else:
            sae.normalize_decoder_rows_()
    sae.fold_activation_scale(2.5)
    sae.cfg.meta = _meta()
    return sae.eval()


@pytest.fixture
def topk():
    return _rand(TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, seed=1)), 1)


@pytest.fixture(params=["fixed", "unit", "learned"])
def vsae(request):
    return _rand(VSAE(VSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, seed=2, var_mode=request.param)), 2)


@pytest.fixture
def x():
    return 2.5 * torch.randn(300, D_IN, generator=torch.Generator().manual_seed(9))


def _peer_topk(W_enc, b_enc, W_dec, b_dec, k, apply_b_dec, x):
    """The peers' TopK SAE written out (SAELens topk_sae.TopKSAE / SAE Bench custom_saes.topk_sae.TopKSAE)."""
    pre = (x - b_dec * apply_b_dec) @ W_enc + b_enc
    v, i = pre.topk(k, dim=-1)
    f = torch.zeros_like(pre).scatter_(-1, i, v.relu())
    return f, f @ W_dec + b_dec


def test_saelens_cfg_and_weights(topk, tmp_path):
    out = export.export_sae(topk, tmp_path / "e", "saelens")
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and (cfg["d_in"], cfg["d_sae"], cfg["k"]) == (D_IN, D_SAE, K)
    assert cfg["apply_b_dec_to_input"] is True and cfg["normalize_activations"] == "none"
    assert cfg["reshape_activations"] == "none" and cfg["rescale_acts_by_decoder_norm"] is False
    assert cfg["dtype"] == "float32"
    md = cfg["metadata"]
    assert md["sae_lens_version"] == export.SAELENS_VERSION  # >= 6: the loader's 6.x path
    assert md["hook_name"] == "blocks.3.hook_resid_post" and md["hook_layer"] == 3
    assert md["model_name"] == "pythia-70m-deduped" and md["vsae"]["lm"] == "pythia-70m-random"
    w = load_file(str(out / "sae_weights.safetensors"))
    assert set(w) == {"W_enc", "b_enc", "W_dec", "b_dec"}
    for n, t in w.items():
        assert t.dtype == torch.float32
        assert torch.equal(t, getattr(topk, n).detach()), n


def test_saelens_vsae_is_exact_without_b_dec(vsae, x, tmp_path):
    out = export.export_sae(vsae, tmp_path / "e", "saelens")
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["apply_b_dec_to_input"] is False
    prov = cfg["metadata"]["vsae"]
    assert prov["architecture"] == "vsae" and prov["var_mode"] == vsae.cfg.var_mode
    w = load_file(str(out / "sae_weights.safetensors"))
    assert set(w) == {"W_enc", "b_enc", "W_dec", "b_dec"}  # the variance head is dropped
    for n, t in w.items():
        assert torch.equal(t, getattr(vsae, n).detach()), n
    with torch.no_grad():
        f, xh = _peer_topk(w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], K, False, x)
        assert torch.allclose(f, vsae.encode(x), atol=1e-6, rtol=0)
        assert torch.allclose(xh, vsae.decode(vsae.encode(x)), atol=1e-5, rtol=0)


def test_saebench_state_dict_and_loader(vsae, x, tmp_path):
    out = export.export_sae(vsae, tmp_path / "e", "saebench")
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["sae_bench_version"] == export.SAEBENCH_VERSION
    assert {"d_in", "d_sae", "k", "model_name", "hook_layer", "hook_name"} <= set(cfg)
    assert cfg["decoder_unit_norm"] is False
    w = load_file(str(out / "sae_weights.safetensors"))
    assert set(w) == {"W_enc", "W_dec", "b_enc", "b_dec", "k"}
    assert w["k"].dtype == torch.int32 and w["k"].shape == () and int(w["k"]) == K
    assert "from sae_bench.custom_saes.topk_sae import TopKSAE" in (out / "load_saebench.py").read_text()
    compile((out / "load_saebench.py").read_text(), "load_saebench.py", "exec")
    with torch.no_grad():  # SAE Bench's encoder subtracts b_dec: the bias absorbs it
        f, xh = _peer_topk(w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], K, True, x)
        assert torch.allclose(f, vsae.encode(x), atol=1e-5, rtol=0)
        assert torch.allclose(xh, vsae.decode(vsae.encode(x)), atol=1e-5, rtol=0)


def test_vsae_as_topk_equals_mean_path(vsae, x):
    t = export.as_topk_sae(vsae)
    assert isinstance(t, TopKSAE)
    with torch.no_grad():
        f = vsae.encode(x)
        assert torch.allclose(t.encode(x), f, atol=1e-5, rtol=0)
        assert (t.encode(x) != 0).eq(f != 0).all()
        assert torch.equal(t.decode(f), vsae.decode(f))
        # the mean path: mu = ReLU(x @ W_enc + b_enc), TopK of mu, no b_dec subtraction
        mu = (x @ vsae.W_enc + vsae.b_enc).relu()
        v, i = mu.topk(K, dim=-1)
        assert torch.allclose(torch.zeros_like(mu).scatter_(-1, i, v), f, atol=1e-6, rtol=0)


def test_normalized_decoder_export_is_the_normalized_vsae(vsae, x, tmp_path):
    out = export.export_sae(vsae, tmp_path / "e", "saebench", normalize_decoder=True)
    w = load_file(str(out / "sae_weights.safetensors"))
    assert torch.allclose(w["W_dec"].norm(dim=1), torch.ones(D_SAE), atol=1e-5)
    assert json.loads((out / "cfg.json").read_text())["decoder_unit_norm"] is True
    ref = vsae.normalized_decoder().eval()
    with torch.no_grad():
        f, _ = _peer_topk(w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], K, True, x)
        assert torch.allclose(f, ref.encode(x), atol=1e-5, rtol=0)


def test_topk_saebench_maps_directly(topk, x, tmp_path):
    out = export.export_sae(topk, tmp_path / "e", "saebench")
    w = load_file(str(out / "sae_weights.safetensors"))
    for n in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(w[n], getattr(topk, n).detach()), n
    assert json.loads((out / "cfg.json").read_text())["decoder_unit_norm"] is True
    with torch.no_grad():
        f, xh = _peer_topk(w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], K, True, x)
        assert torch.allclose(f, topk.encode(x), atol=1e-5, rtol=0)


def test_cli_export_from_saved_dir(topk, tmp_path):
    d = topk.save(tmp_path / "sae")
    assert load_sae(d).cfg.meta["cache"]["hook"] == "blocks.3.hook_resid_post"
    assert cli(["export", str(d), "--format", "saelens", str(tmp_path / "a")]) == 0
    assert cli(["export", str(d), "--format", "saebench", str(tmp_path / "b"), "--hook-name", "blocks.2.hook_resid_post"]) == 0
    assert json.loads((tmp_path / "b" / "cfg.json").read_text())["hook_layer"] == 2
    assert cli(["export", str(tmp_path / "missing"), "--format", "saelens", str(tmp_path / "c")]) == 1


def test_missing_hook_is_an_error(topk, tmp_path):
    topk.cfg.meta = {}
    with pytest.raises(ValueError, match="hook"):
        export.export_sae(topk, tmp_path / "e", "saelens")
    export.export_sae(topk, tmp_path / "e", "saelens", hook_name="blocks.1.hook_resid_post", model_name="m")
    md = json.loads((tmp_path / "e" / "cfg.json").read_text())["metadata"]
    assert (md["hook_layer"], md["model_name"]) == (1, "m")


# ------------------------------------------------------------------------------------- tables
class FakeExperiment:
    """The Experiment methods result_tables reads, on two hand-made runs."""

    profile = SimpleNamespace(to_dict=lambda: {"name": "fake"})

    def __init__(self):
        self.variants = [SimpleNamespace(name="topk_k8", architecture="topk", k=8, seed=42),
                         SimpleNamespace(name="vsae_k8_s43", architecture="vsae", k=8, seed=43)]
        self.calls = []

    def _df(self, **extra):
        return pd.DataFrame({"sae": [v.name for v in self.variants], "architecture": ["topk", "vsae"],
                             "sae_k": [8, 8], "seed": [42, 43]} | extra)

    def seed_variants(self):
        self.calls.append("seed_variants")
        return self.variants

    def training_summary(self, vs):
        return self._df(mse=[0.1, 0.2])

    def logs(self, vs):
        return self._df(step=[1, 1])

    def core(self, vs):
        return {"metrics": self._df(explained_variance=[0.9, 0.8], alive=[True, False]),
                "density": self._df(latent=[0, 1]), "noise": self._df(score=["ev", "ev"])}

    def pool_evals(self, vs):
        return {"probing": self._df(dataset=["a", "ALL"]), "scr": self._df(pair=["p", "ALL"]),
                "tpp": self._df(n=[2, 2], meta=[{"x": 1}, None])}

    def tasks(self):
        return pd.DataFrame({"task": ["t"], "n": [3]})


def test_export_tables_writes_csv_parquet_and_schema(tmp_path):
    ex = FakeExperiment()
    man = export.export_tables(ex, tmp_path / "t")
    assert set(man["tables"]) == set(export.TABLE_DOCS)
    assert man["profile"] == {"name": "fake"} and ex.calls == ["seed_variants"]
    lines = (tmp_path / "t" / "SCHEMA.txt").read_text().splitlines()
    assert len(lines) == len(export.TABLE_DOCS)
    assert "core_metrics (2 rows): sae:str, architecture:str, sae_k:int, seed:int, explained_variance:float, alive:bool" in lines
    schema = json.loads((tmp_path / "t" / "schema.json").read_text())
    for name in export.TABLE_DOCS:
        csv = pd.read_csv(tmp_path / "t" / f"{name}.csv")
        pq = pd.read_parquet(tmp_path / "t" / f"{name}.parquet")
        assert len(csv) == len(pq) == schema[name]["rows"]
        assert list(pq.columns) == [c for c, _ in schema[name]["columns"]]
        assert f"{name}.csv" in man["files"] and len(man["files"][f"{name}.parquet"]["sha256"]) == 64
    meta = pd.read_parquet(tmp_path / "t" / "tpp.parquet")["meta"]  # a dict cell becomes its JSON text
    assert meta[0] == '{"x": 1}' and pd.isna(meta[1])


def test_export_tables_csv_only_and_bad_format(tmp_path):
    export.export_tables({"a": pd.DataFrame({"x": [1.5]})}, tmp_path / "c", formats=["csv"])
    assert (tmp_path / "c" / "a.csv").exists() and not (tmp_path / "c" / "a.parquet").exists()
    assert (tmp_path / "c" / "SCHEMA.txt").read_text() == "a (1 rows): x:float\n"
    with pytest.raises(ValueError):
        export.export_tables({"a": pd.DataFrame({"x": [1]})}, tmp_path / "d", formats=["xlsx"])


def test_cli_tables_and_train_go_through_experiment(monkeypatch, tmp_path, capsys):
    import vsae.pipeline as pipeline

    made = []

    class Ex(FakeExperiment):
        def __init__(self, profile, device, **over):
            super().__init__()
            made.append((profile, device, over))
            self.trained = None

        def headline_variants(self):
            return self.variants[:1]

        def train(self, variants, progress=True):
            made.append(("train", [v.name for v in variants]))

        def sae_dir(self, v):
            return tmp_path / v.name

    monkeypatch.setattr(pipeline, "Experiment", Ex)
    assert cli(["tables", "--profile", "smoke", "--k-values", "8", "--format", "parquet,csv", str(tmp_path / "t")]) == 0
    assert made[0] == ("smoke", "cpu", {"k_values": [8]}) and (tmp_path / "t" / "core_metrics.parquet").exists()
    assert "core_metrics (2 rows)" in capsys.readouterr().out
    assert cli(["tables", "--format", "xlsx", str(tmp_path / "u")]) == 1
    made.clear()
    assert cli(["train", "--profile", "smoke", "--seeds", "1,2", "--no-progress"]) == 0
    assert made == [("smoke", "cpu", {"seeds": [1, 2]}), ("train", ["topk_k8", "vsae_k8_s43"])]
    assert "topk_k8" in capsys.readouterr().out
    made.clear()
    assert cli(["train", "--profile", "smoke", "--main-seed-only", "--k-values", "8", "--no-progress"]) == 0
    assert made == [("smoke", "cpu", {"k_values": [8]}), ("train", ["topk_k8"])]


@pytest.mark.parametrize("arch", ["topk", "vsae"])
def test_flipped_b_dec_recipe_is_exported_as_it_encodes(arch, x):
    """A ladder rung with the other architecture's b_dec choice keeps its own encoder in the export."""
    cfg = (TopKSAEConfig(D_IN, D_SAE, K, subtract_b_dec=False) if arch == "topk"
           else VSAEConfig(D_IN, D_SAE, K, subtract_b_dec=True))
    sae = _rand(TopKSAE(cfg) if arch == "topk" else VSAE(cfg), 3).eval()
    form = export.topk_form(sae)
    assert form["apply_b_dec_to_input"] == cfg.subtract_b_dec
    with torch.no_grad():
        f = sae.encode(x)
        assert torch.allclose(export.as_topk_sae(sae).encode(x), f, atol=1e-5, rtol=0)
        got = _peer_topk(form["W_enc"], form["b_enc"], form["W_dec"], form["b_dec"], K, form["apply_b_dec_to_input"], x)
        assert torch.allclose(got[0] if isinstance(got, tuple) else got, f, atol=1e-5, rtol=0)
