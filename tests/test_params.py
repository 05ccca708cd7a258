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
    from vsae.book import collapse_progress

    t = ("note\ntrain:   0%|          | 0/500 [00:00<?, ?step/s]\ntrain:   1%|          | 5/500 [00:20<27:33,  3.34s/step]\n"
         "harvest a:  50%|##  | 2.05k/18.4k [00:03<00:30, 529tok/s]\rharvest a: 100%|##| 18.4k/18.4k [00:25<00:00, 777tok/s]\nend")
    assert collapse_progress(t).split("\n") == [
        "note", "train:   1%|          | 5/500 [00:20<27:33,  3.34s/step]",
        "harvest a: 100%|##| 18.4k/18.4k [00:25<00:00, 777tok/s]", "end"]
