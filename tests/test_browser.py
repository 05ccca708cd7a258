"""vsae.browser: the data export on a hand-built SAE with values checkable by hand, the folder and its
errors, the CLI on the smoke profile, and the page itself in headless Chromium (skipped only when
Chromium is absent, as tests/browser_check.py's book check)."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vsae import assets, browser
from vsae.__main__ import main as cli
from vsae.assets import AssetError
from vsae.models import VSAE, TopKSAE, TopKSAEConfig, VSAEConfig
from vsae.paths import REPO_ROOT

sys.path.insert(0, str(Path(__file__).parent))
SHOTS = REPO_ROOT / "_build" / "screenshots"

# --------------------------------------------------------------------------------------------
# a hand-built TopK SAE (k = 1) on a hand-built cache of 2 contexts x 6 tokens
# --------------------------------------------------------------------------------------------
#: latent of the one-hot input at each token, and its activation (= the input's size)
FIRING = [0, 0, 1, 2, 0, 3, 1, 1, 0, 2, 2, 0]
SIZES = [1.0, 2.0, 0.5, 3.0, 1.5, 0.25, 4.0, 1.0, 2.5, 1.0, 2.0, 0.5]
TOKENS = [10, 11, 12, 13, 14, 15, 20, 21, 22, 23, 24, 25]
CTX = [0] * 6 + [1] * 6
#: decoder rows: 0 and 1 at 45 degrees, 2 and 3 at 135 degrees, 0/1 orthogonal to 2/3; 4 and 5 are dead
#: (4 is a copy of 0: a dead latent must never show up as a neighbour)
W_DEC = [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 2, 0], [0, 0, -1, 1], [1, 0, 0, 0], [0, 1, 0, 0]]
VOCAB = 30


class FakeTokenizer:
    """Token ``t`` is the string ``t<t>``; token 13 is a newline."""

    def decode(self, ids):
        return "\n" if ids[0] == 13 else f"t{ids[0]}"

    def __len__(self):
        return VOCAB


class FakeCache:
    """What vsae.interp reads of an ActivationCache: ``get``, ``acts``, ``tokens``, ``ctx_index``, ``len``."""

    def __init__(self, x: np.ndarray):
        self.acts = x
        self.tokens = np.asarray(TOKENS, np.int32)
        self.ctx_index = np.asarray(CTX, np.int32)
        self.norm_factor = 2.0

    def __len__(self):
        return len(self.acts)

    def get(self, idx):
        return torch.from_numpy(self.acts[np.asarray(idx)])


@pytest.fixture
def hand_sae():
    sae = TopKSAE(TopKSAEConfig(d_in=4, d_sae=6, k=1, seed=0))
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[torch.arange(4), torch.arange(4)] = 1.0
        sae.b_enc.copy_(torch.tensor([0.0, 0, 0, 0, -1, -1]))
        sae.b_dec.zero_()
        sae.W_dec.copy_(torch.tensor(W_DEC, dtype=torch.float32))
    return sae.eval()


@pytest.fixture
def cache():
    x = np.zeros((len(FIRING), 4), np.float32)
    x[np.arange(len(FIRING)), FIRING] = SIZES
    return FakeCache(x)


@pytest.fixture
def lm():
    W_U = torch.zeros(4, VOCAB)
    W_U[0, 7], W_U[0, 8] = 5.0, -3.0  # latent 0 (decoder e_0) boosts token 7, suppresses token 8
    return SimpleNamespace(W_U=W_U, tokenizer=FakeTokenizer())


@pytest.fixture
def data(hand_sae, lm, cache, one_thread):
    return browser.sae_data("hand", hand_sae, lm, cache, browser.BrowserOptions(n_logits=2))


def _latent(data, i):
    return next(r for r in data["latents"] if r["id"] == i)


def test_alive_latents_and_stats(data):
    assert [r["id"] for r in data["latents"]] == [0, 1, 2, 3]  # 4 and 5 never fire
    assert data["n_alive"] == 4 and data["n_latents_shown"] == 4 and data["n_tokens"] == 12
    r0 = _latent(data, 0)
    assert r0["n_fires"] == 5 and r0["density"] == 0.4167
    assert r0["max"] == 2.5 and r0["mean"] == 1.5  # (1 + 2 + 1.5 + 2.5 + 0.5) / 5
    r1 = _latent(data, 1)
    assert (r1["n_fires"], r1["max"], r1["mean"]) == (3, 4.0, 1.833)  # 4 significant digits
    assert _latent(data, 3)["density"] == 0.08333
    assert [_latent(data, i)["decoder_norm"] for i in range(4)] == [1.0, 1.414, 2.0, 1.414]


def test_contexts_one_per_context_with_token_activations(data):
    c = _latent(data, 0)["contexts"]
    assert len(c) == 2  # unique contexts: the peak of each
    peak_act, peak, ids, acts = c[0]
    assert (peak_act, peak) == (2.5, 2)  # token 8 = offset 2 of context 1
    assert ids == TOKENS[6:12]  # the window stops at the context's edges
    assert acts == [0, 0, 2.5, 0, 0, 0.5]
    assert c[1][:2] == [2.0, 1] and c[1][2] == TOKENS[0:6]
    assert data["vocab"]["13"] == "\u21b5"  # a newline is shown as the return sign
    assert data["vocab"]["22"] == "t22"


def test_logit_effects(data):
    r0 = _latent(data, 0)
    assert r0["boosted"][0] == [7, 5.0] and r0["suppressed"][0] == [8, -3.0]
    assert len(r0["boosted"]) == 2 and len(r0["suppressed"]) == 2
    assert {"7", "8"} <= set(data["vocab"])


def test_nearest_latents_by_decoder_cosine(data):
    nn0 = _latent(data, 0)["neighbours"]
    assert nn0[0] == [1, 0.7071]
    assert sorted(i for i, _ in nn0) == [1, 2, 3]  # only alive latents, never itself nor the dead copy 4
    assert [c for _, c in nn0[1:]] == [0, 0]
    nn2 = _latent(data, 2)["neighbours"]
    assert nn2[-1] == [3, -0.7071]


def test_nearest_latents_chunked_equals_unchunked():
    W = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    lat = list(range(0, 50, 2))
    a = browser.nearest_latents(W, lat, 5, chunk=7)
    b = browser.nearest_latents(W, lat, 5, chunk=1024)
    assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1])
    Wn = torch.nn.functional.normalize(W[lat], dim=-1)
    full = Wn @ Wn.T
    full.fill_diagonal_(-2)
    assert np.allclose(a[1][:, 0], full.max(1).values.numpy(), atol=1e-6)
    assert set(a[0].ravel()) <= set(lat)


def test_latent_chunks_fit_the_memory_budget():
    chunks = list(browser.latent_chunks(range(10), n_tokens=2**20, memory_mb=8))  # 2 latents of 4 MB each
    assert [c.tolist() for c in chunks] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert [c.tolist() for c in browser.latent_chunks([3, 1], n_tokens=12, memory_mb=1)] == [[3, 1]]


def test_cap_keeps_the_densest(hand_sae, lm, cache, one_thread):
    d = browser.sae_data("hand", hand_sae, lm, cache, browser.BrowserOptions(max_latents=2, n_contexts=1))
    assert [r["id"] for r in d["latents"]] == [0, 1]  # densities 5/12, then 3/12 (1 before 2 on the tie)
    assert d["n_alive"] == 4 and d["n_latents_shown"] == 2
    assert all(len(r["contexts"]) == 1 for r in d["latents"])
    assert all(i in (0, 1) for r in d["latents"] for i, _ in r["neighbours"])  # links stay inside the page


def test_schema(data):
    assert data["schema"] == browser.SCHEMA_VERSION
    for k in ("name", "architecture", "d_in", "d_sae", "k", "n_tokens", "n_alive", "n_latents_shown",
              "norm_factor", "units", "options", "latent_keys", "vocab", "latents"):
        assert k in data, k
    assert data["architecture"] == "topk" and (data["d_in"], data["d_sae"], data["k"]) == (4, 6, 1)
    assert data["norm_factor"] == 2.0 and "raw residual" in data["units"]
    for r in data["latents"]:
        assert tuple(r) == browser.LATENT_KEYS
        for c in r["contexts"]:
            assert len(c[2]) == len(c[3]) and 0 <= c[1] < len(c[2])
    assert browser.rounded(0.000123456) == 0.0001235 and browser.rounded(0.0) == 0


def test_options_validated():
    with pytest.raises(ValueError, match="n_contexts"):
        browser.BrowserOptions(n_contexts=0)
    with pytest.raises(ValueError, match="max_latents"):
        browser.BrowserOptions(max_latents=0)


# --------------------------------------------------------------------------------------------
# the folder
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tabulator():
    return assets.fetch_all(["tabulator"], verbose=False)["tabulator"]


def test_folder_roundtrip(hand_sae, lm, cache, tmp_path, tabulator, one_thread):
    out = browser.write_browser({"topk hand": hand_sae, "again": hand_sae}, lm, cache, tmp_path / "b",
                                title="Hand <built>")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["browser.css", "browser.js", "data_again.js", "data_topk_hand.js", "index.html", "tabulator"]
    assert sorted(p.name for p in (out / "tabulator").iterdir()) == ["LICENSE", "tabulator.min.css", "tabulator.min.js"]
    d = browser.load_data(out / "data_topk_hand.js")
    assert d["name"] == "topk hand" and [r["id"] for r in d["latents"]] == [0, 1, 2, 3]
    page = (out / "index.html").read_text()
    assert "Hand &lt;built&gt;" in page and "{{" not in page
    assert '"file": "data_topk_hand.js"' in page
    for text in (page, (out / "browser.js").read_text(), (out / "browser.css").read_text()):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text  # offline: no CDN


def test_missing_tabulator_says_fetch(hand_sae, lm, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("VSAE_HOME", str(tmp_path / "home"))
    with pytest.raises(AssetError, match=r"python -m vsae fetch"):
        browser.write_browser({"hand": hand_sae}, lm, cache, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_cli_bad_sae_dir(tmp_path, capsys, tabulator):
    assert cli(["browser", str(tmp_path / "nope"), "--out", str(tmp_path / "b"), "--profile", "smoke"]) == 1
    err = capsys.readouterr().err
    assert "nope is not a saved SAE folder" in err and "missing cfg.json" in err


def test_cli_missing_asset(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VSAE_HOME", str(tmp_path / "home"))
    assert cli(["browser", str(tmp_path), "--out", str(tmp_path / "b"), "--profile", "smoke"]) == 1
    assert "run `python -m vsae fetch`" in capsys.readouterr().err


def test_cli_wrong_profile(tmp_path, capsys, tabulator):
    sae = TopKSAE(TopKSAEConfig(d_in=512, d_sae=32, k=4, seed=1))
    sae.cfg.meta = {"name": "other", "cache": {"hook": "blocks.9.hook_resid_post", "model": {"name": "smollm2-135m"}}}
    sae.save(tmp_path / "other")
    assert cli(["browser", str(tmp_path / "other"), "--out", str(tmp_path / "b"), "--profile", "smoke"]) == 1
    assert "pass the matching --profile" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# the smoke profile end to end: CLI, then Chromium
# --------------------------------------------------------------------------------------------
SMOKE_META = {"cache": {"hook": "blocks.3.hook_resid_post", "model": {"name": "pythia-70m-random", "layer": 3}}}


@pytest.fixture(scope="module")
def smoke_browser(tmp_path_factory, tabulator):
    """A TopK SAE and a vSAE (random, 128 latents) on the smoke profile's evaluation tokens, via the CLI."""
    d = tmp_path_factory.mktemp("smoke_browser")
    for name, sae in (("topk_k8", TopKSAE(TopKSAEConfig(d_in=512, d_sae=128, k=8, seed=1))),
                      ("vsae_k8", VSAE(VSAEConfig(d_in=512, d_sae=128, k=8, seed=2)))):
        sae.fold_activation_scale(11.0)
        sae.cfg.meta = {"name": name, **SMOKE_META}
        sae.save(d / name)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = cli(["browser", str(d / "topk_k8"), str(d / "vsae_k8"), "--out", str(d / "out"), "--profile", "smoke",
                  "--contexts", "5", "--n-tokens", "2048"])
    finally:
        torch.set_num_threads(n)
    assert rc == 0
    return d / "out"


@pytest.mark.slow
def test_cli_smoke(smoke_browser):
    for name in ("topk_k8", "vsae_k8"):
        d = browser.load_data(smoke_browser / f"data_{name}.js")
        assert d["lm"] == "pythia-70m-random" and d["n_tokens"] == 2048 and d["d_sae"] == 128
        assert d["n_latents_shown"] == d["n_alive"] > 0
        assert all(1 <= len(r["contexts"]) <= 5 for r in d["latents"])
        assert all(len(r["neighbours"]) == min(5, d["n_alive"] - 1) for r in d["latents"])


def _chromium_or_skip():
    if not (shutil.which("chromium") or shutil.which("chromium-browser")) or not shutil.which("chromedriver"):
        pytest.skip("chromium and chromedriver are not installed (Debian chromium, chromium-driver; `make browser`)")
    pytest.importorskip("selenium")


def _wait(drv, js: str, timeout: float = 20.0):
    """Poll ``return <js>`` until it is truthy; return its value."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = drv.execute_script("return " + js)
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {js}")


def _open_latent(drv, latent: int) -> dict:
    """Type ``latent`` into the latent column's header filter, click the one row left, read the panel."""
    from selenium.webdriver.common.by import By

    box = drv.find_element(By.CSS_SELECTOR, '.tabulator-col[tabulator-field="id"] .tabulator-header-filter input')
    box.clear()
    box.send_keys(str(latent))
    _wait(drv, "document.querySelectorAll('#table .tabulator-row').length === 1")
    drv.find_element(By.CSS_SELECTOR, "#table .tabulator-row").click()
    _wait(drv, "document.querySelector('#detail .ctx .tok') !== null")
    return drv.execute_script("""
      const toks = Array.from(document.querySelectorAll('#detail .ctx .tok'));
      return {title: document.querySelector('#detail h2').textContent,
              tokens: toks.length,
              shaded: toks.filter(t => t.style.backgroundColor.startsWith('rgba(255, 140, 0')).length,
              peaks: document.querySelectorAll('#detail .tok.peak').length,
              contexts: document.querySelectorAll('#detail .ctx').length,
              effects: document.querySelectorAll('#detail table.effects tbody tr').length,
              neighbours: document.querySelectorAll('#detail button.nb').length,
              selected: document.querySelectorAll('#table .tabulator-row.tabulator-selected').length};""")


@pytest.mark.slow
def test_page_in_chromium(smoke_browser):
    _chromium_or_skip()
    from browser_check import _chrome, _requested_urls, external_requests, serve
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    SHOTS.mkdir(parents=True, exist_ok=True)
    topk = browser.load_data(smoke_browser / "data_topk_k8.js")
    vs = browser.load_data(smoke_browser / "data_vsae_k8.js")
    latent = max(topk["latents"], key=lambda r: len(r["contexts"]))["id"]
    drv = _chrome()
    try:
        with serve(smoke_browser) as base:
            t0 = time.time()
            drv.get(base + "index.html")
            ready = _wait(drv, "window.VSAE_READY")
            load_s = time.time() - t0
            assert ready["sae"] == "topk_k8" and ready["rows"] == topk["n_latents_shown"]
            rows = drv.execute_script("return document.querySelectorAll('#table .tabulator-row').length")
            assert rows > 0
            drv.save_screenshot(str(SHOTS / "feature_browser_list.png"))
            panel = _open_latent(drv, latent)
            assert panel["title"] == f"topk_k8 · latent {latent}"
            assert panel["contexts"] == len(_latent(topk, latent)["contexts"]) and panel["peaks"] == panel["contexts"]
            assert panel["shaded"] >= panel["contexts"], "every context should shade at least its peak token"
            assert panel["effects"] == 2 * topk["options"]["n_logits"] and panel["neighbours"] == 5
            assert panel["selected"] == 1
            drv.save_screenshot(str(SHOTS / "feature_browser_topk.png"))
            # the neighbour buttons open another latent
            drv.find_element(By.CSS_SELECTOR, "#detail button.nb").click()
            nb = _latent(topk, latent)["neighbours"][0][0]
            _wait(drv, f"document.querySelector('#detail h2').textContent.endsWith('latent {nb}')")
            # switch SAE: its data script is loaded on demand
            Select(drv.find_element(By.ID, "sae-select")).select_by_value("vsae_k8")
            _wait(drv, "document.getElementById('summary').textContent.startsWith('vsae')")
            v_latent = max(vs["latents"], key=lambda r: len(r["contexts"]))["id"]
            panel = _open_latent(drv, v_latent)
            assert panel["title"] == f"vsae_k8 · latent {v_latent}" and panel["shaded"] >= 1
            drv.save_screenshot(str(SHOTS / "feature_browser_vsae.png"))
            external = external_requests(_requested_urls(drv))
            assert not external, f"the browser must work offline, it requested {external}"
            assert drv.execute_script("return document.querySelector('.error')") is None
        # no server at all: the same page from file://
        drv.get((smoke_browser / "index.html").resolve().as_uri())
        _wait(drv, "window.VSAE_READY")
        assert _open_latent(drv, latent)["shaded"] >= 1
    finally:
        drv.quit()
    print(f"feature browser: {browser.folder_bytes(smoke_browser) / 1e6:.2f} MB, loaded in Chromium in "
          f"{load_s:.2f} s (page ready at {ready['ms']:.0f} ms after navigation start)")


def test_book_pair_default_and_more_k():
    from vsae.pipeline import Experiment

    class Ex(Experiment):  # the design only: no LM, no cache
        d_model = 512

    ex = Ex("smoke")
    pair = browser.book_pair(ex)
    assert [v.architecture for v in pair] == ["topk", "vsae"] and {v.k for v in pair} == {ex.showcase_k()}
    assert all(v.seed == ex.profile.main_seed for v in pair)
    more = browser.book_pair(ex, [8, 64])
    assert [(v.architecture, v.k) for v in more] == [("topk", 8), ("vsae", 8), ("topk", 64), ("vsae", 64)]
    with pytest.raises(ValueError, match=r"k \[7\] is not a headline k of profile smoke"):
        browser.book_pair(ex, [7])
