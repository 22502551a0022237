import pytest

from skillrouter.config import ConfigError, PipelineConfig, is_override, load_config, parse_override


def test_defaults_are_the_papers_settings():
    c = PipelineConfig()
    assert c.encoder.temperature == 0.05 and c.encoder.learning_rate == 2e-5
    assert c.encoder.batch_size == 8 and c.encoder.grad_accum_steps == 4 and c.encoder.max_length == 2048
    assert c.reranker.temperature == 1.0 and c.reranker.learning_rate == 1e-5 and c.reranker.max_length == 4096
    m = c.mining
    assert (m.dense_negatives, m.bm25_negatives, m.category_negatives, m.random_negatives) == (4, 3, 2, 1)
    assert m.jaccard_threshold == 0.6 and m.cosine_threshold == 0.92
    assert c.routing.retrieve_k == 20 and c.eval.top_k == 50


def test_shipped_profiles_load(repo_root):
    for path in sorted((repo_root / "configs").glob("*.yaml")):
        load_config(path)


def test_overrides_are_typed_and_nested(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("eval:\n  top_k: 10\n")
    c = load_config(p, ["eval.top_k=20", "corpus.strict=true", "eval.systems=[bm25]", "run_dir=/x"])
    assert c.eval.top_k == 20 and c.corpus.strict is True and c.eval.systems == ["bm25"] and c.run_dir == "/x"


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    p = tmp_path / "typo.yaml"
    p.write_text("eval:\n  topk: 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "typo.yaml" in str(err.value) and "eval.topk" in str(err.value) and "unknown key" in str(err.value)


def test_wrong_type_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("bm25:\n  k1: fast\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "bad.yaml" in str(err.value) and "bm25.k1" in str(err.value) and "'fast'" in str(err.value)


def test_bad_override_names_the_override():
    with pytest.raises(ConfigError, match=r"override 'eval.top_k=many'.*eval.top_k"):
        load_config(None, ["eval.top_k=many"])
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        load_config(None, ["nope=1"])
    with pytest.raises(ConfigError, match=r"override 'eval.top_k.x=1'.*eval.top_k"):
        load_config(None, ["eval.top_k.x=1"])


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")


def test_override_parsing():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("x=hello world") == (["x"], "hello world")
    assert is_override("eval.top_k=3") and not is_override("what is x=5") and not is_override("/tmp/a=b")
