"""config.yaml parsing: every common field accepted, unknown keys warned, bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from impasto import ConfigError, load_config, parse_config

PACKAGES = Path(__file__).parent / "packages"


def test_full_config_loads_every_field_without_warnings(caplog):
    config = load_config(PACKAGES / "full_config" / "config.yaml")
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []
    assert config.model_name == "full-config"
    assert config.resources.accelerator == "A10G:1"
    assert config.resources.memory == "30Gi"
    assert config.resources.use_gpu is True
    assert config.runtime.predict_concurrency == 2
    assert config.model_cache[0].repo_id == "some-org/some-model"
    assert config.model_cache[0].allow_patterns == ["*.json", "*.safetensors"]
    assert config.external_data[0].local_data_path == "weights.bin"
    assert config.secrets == {"hf_access_token": None}
    assert config.python_version == "py311"
    assert config.spec_version == "2.0"
    assert config.system_packages == ["ffmpeg"]
    assert config.environment_variables == {"FULL_CONFIG_FLAG": "1"}


def test_unknown_keys_warn_and_name_them(caplog):
    config = parse_config({"brand_new_key": 1, "runtime": {"turbo": True}})
    assert config.runtime.predict_concurrency == 1
    assert [r.getMessage() for r in caplog.records] == [
        "config.yaml: unknown key `brand_new_key` ignored",
        "config.yaml: unknown key `runtime.turbo` ignored",
    ]


def test_a_typo_gets_one_line_with_the_closest_key(caplog):
    parse_config({"batchng": {"enabled": False}, "runtime": {"predict_concurency": 2}})
    assert [r.getMessage() for r in caplog.records] == [
        "config.yaml: unknown key `batchng` ignored (did you mean `batching`?)",
        "config.yaml: unknown key `runtime.predict_concurency` ignored "
        "(did you mean `runtime.predict_concurrency`?)",
    ]


@pytest.mark.parametrize(
    ("data", "key", "shown"),
    [
        ({"runtime": {"predict_concurrency": 0}}, "runtime.predict_concurrency", "0"),
        ({"resources": {"memory": "lots"}}, "resources.memory", "'lots'"),
        ({"python_version": "python3"}, "python_version", "'python3'"),
        ({"secrets": 5}, "secrets", "5"),
        ({"runtime": {"max_queue": "many"}}, "runtime.max_queue", "'many'"),
    ],
)
def test_invalid_values_name_key_value_and_rule(data, key, shown):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    message = info.value.message
    assert f"`{key}`" in message
    assert shown in message
    assert info.value.field == key


def test_secrets_as_list_and_numbers_as_strings():
    config = parse_config(
        {"secrets": ["a", "b"], "resources": {"cpu": 2}, "environment_variables": {"N": 3}}
    )
    assert config.secrets == {"a": None, "b": None}
    assert config.resources.cpu == "2"
    assert config.environment_variables == {"N": "3"}


def test_invalid_yaml_is_a_config_error(tmp_path):
    (tmp_path / "config.yaml").write_text("model_name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "config.yaml")
