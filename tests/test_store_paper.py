import json

import pandas as pd
import pytest

from vsae import paper
from vsae.store import Store, canonical_json, config_key


def test_config_key_is_order_independent_and_sensitive():
    assert config_key({"a": 1, "b": [1, 2]}) == config_key({"b": (1, 2), "a": 1})
    assert config_key({"a": 1}) != config_key({"a": 2})
    assert canonical_json({"b": 1, "a": 2}) == '{"a":2,"b":1}'


def test_get_table_computes_once(tmp_path):
    s = Store(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"x": [1, 2]})

    a = s.get_table("t", {"n": 2}, compute)
    b = s.get_table("t", {"n": 2}, compute)
    assert calls == [1] and a.equals(b)
    assert json.loads((s.path("t", {"n": 2}) / "config.json").read_text()) == {"n": 2}


def test_killed_write_leaves_no_artifact(tmp_path):
    s = Store(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with s.writing("t", {"n": 1}) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise KeyboardInterrupt
    assert not s.exists("t", {"n": 1})
    assert not any(p for p in (tmp_path / "t").iterdir())


def test_corrupt_table_gives_clear_error(tmp_path):
    s = Store(tmp_path)
    s.get_table("t", {"n": 3}, lambda: pd.DataFrame({"x": [1]}))
    (s.path("t", {"n": 3}) / "table.parquet").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="delete .* and re-run"):
        s.get_table("t", {"n": 3}, lambda: pd.DataFrame({"x": [1]}))


def test_tables_are_parquet_and_a_legacy_pickle_is_migrated(tmp_path):
    s = Store(tmp_path)
    df = pd.DataFrame({"sae": ["a", "b"], "k": [64, 128], "v": [0.5, float("nan")]})
    s.get_table("t", {"n": 4}, lambda: df)
    folder = s.path("t", {"n": 4})
    assert sorted(p.name for p in folder.iterdir()) == ["COMPLETE", "config.json", "table.csv", "table.parquet"]
    # an artifact written by an older version holds table.pkl only: read once, rewritten as Parquet
    (folder / "table.parquet").unlink()
    df.to_pickle(folder / "table.pkl")
    pd.testing.assert_frame_equal(s.get_table("t", {"n": 4}, lambda: 1 / 0), df)
    assert (folder / "table.parquet").exists() and not (folder / "table.pkl").exists()
    # an unreadable legacy pickle is refused with the folder to delete
    (folder / "table.parquet").unlink()
    (folder / "table.pkl").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="older version.*delete"):
        s.get_table("t", {"n": 4}, lambda: df)


def test_paper_values_are_the_authors_tables():
    assert paper.paper_value("core", "frac_alive", "vsae", 64) == pytest.approx(0.0490)
    assert paper.paper_value("core", "ce_loss_score", "topk", 256) == pytest.approx(1.0294)
    assert paper.paper_value("scr", "scr_metric", "vsae", 256, n_ablated=50) == pytest.approx(0.2068)
    assert paper.paper_value("tpp", "tpp_unintended", "topk", 256, n_ablated=10) == pytest.approx(0.0858)
    t = paper.core_table()
    assert list(t.columns)[:2] == ["TopK k=64", "TopK k=128"] and t.loc["l0", "vSAE TopK k=512".replace("TopK ", "")] == 512
    with pytest.raises(KeyError):
        paper.paper_value("core", "frac_alive", "vsae", 1024)
    with pytest.raises(ValueError, match="unknown eval"):
        paper.paper_results("absorption")
