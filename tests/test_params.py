import pytest

from vsae.book import parse_params
from vsae.chapter import COMMON
from vsae.params import Param, ParameterError, chapter_params, validate
from vsae.profiles import PROFILES, get_profile


def test_validate_accepts_and_coerces():
    out = validate({"profile": "smoke", "device": "cpu", "kl_coeff": 1, "k_values": (8, 16)}, COMMON)
    assert out["kl_coeff"] == 1.0 and isinstance(out["kl_coeff"], float)
    assert out["k_values"] == [8, 16]


@pytest.mark.parametrize("values, msg", [
    ({"kl_coef": 0.1}, "unknown parameter(s) ['kl_coef']"),
    ({"profile": "tiny"}, "is not allowed"),
    ({"kl_coeff": "big"}, "has type str"),
    ({"kl_coeff": -1.0}, "is below 0.0"),
    ({"k_values": [8, "a"]}, "element 'a'"),
    ({"k_values": []}, "is empty"),
    ({"expansion": True}, "has type bool"),
    ({"profile": None}, "may not be None"),
])
def test_validate_refuses_with_a_message_listing_what_is_allowed(values, msg):
    with pytest.raises(ParameterError) as e:
        validate(values, COMMON)
    assert msg in str(e.value)


def test_unknown_name_lists_allowed_parameters():
    with pytest.raises(ParameterError) as e:
        validate({"kl_coef": 0.1}, COMMON)
    for name in COMMON:
        assert name in str(e.value)


def test_chapter_params_ignores_modules_functions_and_private_names():
    import math

    ns = {"profile": "offline", "device": "cpu", "math": math, "f": lambda: 1, "_x": 3, "In": [], "Param": Param}
    assert chapter_params(ns, {"profile": COMMON["profile"], "device": COMMON["device"]}) == {"profile": "offline", "device": "cpu"}


def test_get_profile_overrides_and_refusals():
    p = get_profile("smoke", k_values=[8], kl_coeff=0.5)
    assert p.k_values == (8,) and p.kl_coeff == 0.5 and p.name == "smoke"
    assert p.steps == p.n_train_tokens // p.batch_size and p.hook_name == "blocks.3.hook_resid_post"
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("nope")
    with pytest.raises(ValueError, match="unknown profile field"):
        get_profile("smoke", kl=1)
    assert set(PROFILES) == {"paper", "offline", "smoke"}


def test_paper_profile_is_the_papers_recipe():
    p = PROFILES["paper"]
    assert (p.lm, p.layer, p.expansion, p.batch_size, p.steps, p.kl_coeff, p.ctx_len) == (
        "pythia-70m-deduped", 3, 16, 192, 10_001, 1.0, 128)
    assert p.k_values == (64, 128, 256, 512)


def test_parse_params_cli():
    assert parse_params(["--", "-p", "k_values", "[128]", "-p", "kl_coeff", "0.1", "-p", "profile", "smoke"]) == {
        "k_values": [128], "kl_coeff": 0.1, "profile": "smoke"}
    with pytest.raises(SystemExit):
        parse_params(["-p", "k_values"])
    with pytest.raises(SystemExit):
        parse_params(["k_values", "1"])


def test_collapse_progress_keeps_each_bars_final_line():
    from vsae.chapter_outputs import collapse_progress

    t = ("note\ntrain:   0%|          | 0/500 [00:00<?, ?step/s]\ntrain:   1%|          | 5/500 [00:20<27:33,  3.34s/step]\n"
         "harvest a:  50%|##  | 2.05k/18.4k [00:03<00:30, 529tok/s]\rharvest a: 100%|##| 18.4k/18.4k [00:25<00:00, 777tok/s]\nend")
    assert collapse_progress(t).split("\n") == [
        "note", "train:   1%|          | 5/500 [00:20<27:33,  3.34s/step]",
        "harvest a: 100%|##| 18.4k/18.4k [00:25<00:00, 777tok/s]", "end"]


def test_seeds_parameter_and_profile_field():
    assert validate({"seeds": [1, 2, 3]}, COMMON)["seeds"] == [1, 2, 3]
    with pytest.raises(ParameterError, match="is empty"):
        validate({"seeds": []}, COMMON)
    p = get_profile("offline", seeds=[7, 8])
    assert p.seeds == (7, 8) and p.main_seed == 7 and p.to_dict()["seeds"] == [7, 8]
    with pytest.raises(ValueError, match="distinct"):
        get_profile("smoke", seeds=[7, 7])
    assert PROFILES["offline"].seeds == (42, 43, 44) and PROFILES["paper"].seeds == (42, 43, 44)


def test_seed_variants_names_and_seeds(tmp_path):
    from types import SimpleNamespace

    from vsae.pipeline import Experiment
    from vsae.store import Store

    ex = Experiment("smoke", store=Store(tmp_path), seeds=[5, 6], k_values=[8, 16])
    ex.__dict__["train_acts"] = SimpleNamespace(manifest={"d_model": 16, "checksum": "x"})  # no harvest
    vs = ex.seed_variants()
    assert [v.name for v in vs] == ["topk_k8", "topk_k16", "vsae_k8", "vsae_k16",
                                    "topk_k8_s6", "topk_k16_s6", "vsae_k8_s6", "vsae_k16_s6"]
    assert [v.seed for v in vs] == [5] * 4 + [6] * 4
    assert all(v.model_cfg.seed == v.seed == v.train_overrides["seed"] for v in vs)
    assert ex.train_config(**vs[-1].train_overrides).seed == 6 and ex.train_config().seed == 5
    # the same SAE under two seeds is two different artifacts; the main seed's keys do not depend on the others
    assert len({ex.sae_dir(v) for v in vs}) == 8
    main_only = Experiment("smoke", store=Store(tmp_path), seeds=[5], k_values=[8, 16])
    main_only.__dict__["train_acts"] = ex.train_acts
    assert [main_only.sae_dir(v) for v in main_only.seed_variants()] == [ex.sae_dir(v) for v in vs[:4]]
    # beyond-the-paper runs: main seed, no seeds group (the seed question uses the headline runs)
    groups = ex.beyond_variants(16)
    assert "seeds" not in groups and {v.seed for g in groups.values() for v in g} == {5}


def test_per_sae_tables_reads_back_under_the_callers_names(tmp_path, monkeypatch):
    import dataclasses
    from types import SimpleNamespace

    import pandas as pd
    import torch

    from vsae.pipeline import Experiment
    from vsae.store import Store

    ex = Experiment("smoke", store=Store(tmp_path), seeds=[5, 6], k_values=[8])
    ex.__dict__["train_acts"] = SimpleNamespace(manifest={"d_model": 16, "checksum": "x"})
    ex.train = lambda variants, load=True: {}  # no training and no SAEs: the tables are made up
    loaded = []
    monkeypatch.setattr("vsae.models.load_sae", lambda path: loaded.append(path) or torch.nn.Identity())
    calls = []

    def compute(saes):
        calls.append(sorted(saes))
        return {"t": pd.DataFrame({"sae": list(saes), "value": [float(len(n)) for n in saes]})}

    vs = ex.seed_variants()
    first = ex.per_sae_tables("demo", vs, {"x": 1}, compute)["t"]
    assert list(first["sae"]) == [v.name for v in vs] and list(first["seed"]) == [5, 5, 6, 6]
    renamed = [dataclasses.replace(v, name=f"run {i}") for i, v in enumerate(vs)]
    again = ex.per_sae_tables("demo", renamed, {"x": 1}, compute)["t"]
    assert len(calls) == 1  # read back, not recomputed
    assert len(loaded) == 4  # each SAE loaded once, for the one computation
    assert list(again["sae"]) == [f"run {i}" for i in range(4)]
    assert list(again["value"]) == list(first["value"]) and list(again["sae_k"]) == [8] * 4


@pytest.mark.parametrize("values, msg", [
    ({"kl_coeff": float("inf")}, "parameter 'kl_coeff'=inf is not a finite number; expected float in [0.0, inf) (finite)"),
    ({"kl_coeff": float("nan")}, "parameter 'kl_coeff'=nan is not a finite number"),
    ({"k_values": [8, 8]}, "parameter 'k_values'=[8, 8] repeats [8]; expected list[int] of distinct values"),
    ({"seeds": [3, 4, 3]}, "parameter 'seeds'=[3, 4, 3] repeats [3]; expected list[int] of distinct values"),
])
def test_non_finite_floats_and_repeated_values_are_refused(values, msg):
    with pytest.raises(ParameterError) as e:
        validate(values, COMMON)
    assert msg in str(e.value)


def test_parse_params_reads_inf_and_nan_as_floats():
    import math

    p = parse_params(["-p", "kl_coeff", "inf", "-p", "a", "-inf", "-p", "b", "nan", "-p", "c", "1e999", "-p", "d", "info"])
    assert p["kl_coeff"] == math.inf and p["a"] == -math.inf and math.isnan(p["b"]) and p["c"] == math.inf
    assert p["d"] == "info"


def _chapter_profile(**params):
    from vsae.chapter import PROFILE_FIELDS
    from vsae.params import chapter_profile

    return chapter_profile({"profile": "smoke", "device": "cpu", **params}, PROFILE_FIELDS)


def test_every_profile_passes_its_own_check():
    from vsae.params import check_profile

    for p in PROFILES.values():
        check_profile(p)
    assert _chapter_profile(k_values=[1024], n_train_tokens=101_696).k_values == (1024,)


@pytest.mark.parametrize("params, msg", [
    ({"k_values": [8, 4096]}, "parameter 'k_values'=[8, 4096] has k [4096] above the dictionary size of profile 'smoke': "
                              "d_sae = expansion x d_model = 2 x 512 = 1024; allowed: every k in [1, 1024], or -p expansion 8 or more"),
    ({"k_values": [4096], "expansion": 4}, "allowed: every k in [1, 2048]"),
    ({"n_train_tokens": 10**12}, "parameter 'n_train_tokens'=1,000,000,000,000 is more than corpus 'smoke' (train split) "
                                 "supplies to pythia-70m-random in 64-token contexts: at most 101,696 tokens (1,589 contexts); "
                                 "allowed: n_train_tokens in [1000, 101696]"),
    ({"n_train_tokens": 101_697}, "at most 101,696 tokens"),
    ({"seeds": [1, 1]}, "distinct"),
])
def test_profile_constraints_are_refused_with_what_is_allowed(params, msg):
    with pytest.raises(ParameterError) as e:
        _chapter_profile(**params)
    assert msg in str(e.value)


def test_memory_of_a_training_pass_is_checked(monkeypatch):
    from vsae.params import MEMORY_ENV, train_pass_bytes

    p = PROFILES["smoke"]
    # 8 SAEs of d_sae 1024 on d_model 512: parameters, gradients, Adam moments and a batch's activations
    assert train_pass_bytes(p, 512) - 2 * 1024**3 == 8 * 4 * (4 * (2 * 512 * 1024 + 1024 + 512) + 4 * 192 * 1024)
    monkeypatch.setenv(MEMORY_ENV, "2.5")
    assert _chapter_profile(expansion=2).expansion == 2
    with pytest.raises(ParameterError) as e:
        _chapter_profile(expansion=32)
    assert "parameter 'expansion'=32 needs about 4.4 GB to train the 8 SAEs of a pass" in str(e.value)
    assert f"more than ${MEMORY_ENV}=2.5 (2.5 GB); allowed: expansion in [1, 6]" in str(e.value)


def test_context_supply_of_the_smoke_profile_is_what_the_corpus_yields(monkeypatch):
    """The recorded supply equals a recount with the model's tokenizer (as plan_contexts chunks); it is
    recorded for the corpus data of today (a change makes it unknown until recounted)."""
    from vsae import data
    from vsae.lm import pythia_tokenizer

    assert data._supply_data() == data.CONTEXT_SUPPLY_DATA, "the corpus data changed: recount CONTEXT_SUPPLY"
    monkeypatch.setattr(data, "DATA_VERSION", data.DATA_VERSION + 1)
    assert data.context_supply("smoke", "train", "pythia-70m-random", 64) is None
    assert data.context_supply("paper", "train", "pythia-70m-deduped", 128) == 2_120_000
    monkeypatch.undo()

    tok = pythia_tokenizer()
    p = PROFILES["smoke"]
    for corpus, split in ((p.train_corpus, "train"), (p.eval_corpus, "eval")):
        n = data.count_contexts(corpus, split, lambda t: tok(t, add_special_tokens=False, verbose=False)["input_ids"], p.ctx_len)
        assert data.context_supply(corpus, split, p.lm, p.ctx_len) == n


@pytest.mark.slow
def test_context_supply_of_the_offline_profile_is_what_the_corpus_yields():
    """The offline corpus recounted with SmolLM2's tokenizer (~30 s: the whole corpus is tokenised)."""
    from transformers import AutoTokenizer

    from vsae import data
    from vsae.assets import smollm2_dir

    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    p = PROFILES["offline"]
    for corpus, split in ((p.train_corpus, "train"), (p.eval_corpus, "eval")):
        n = data.count_contexts(corpus, split, lambda t: tok(t, add_special_tokens=False, verbose=False)["input_ids"], p.ctx_len)
        assert data.context_supply(corpus, split, p.lm, p.ctx_len) == n
