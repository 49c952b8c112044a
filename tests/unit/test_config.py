from __future__ import annotations

from pathlib import Path

import pytest

from config.errors import ConfigError
from config.settings import load_settings


def test_environment_nests_with_double_underscore() -> None:
    s = load_settings(
        environ={
            "XUELIANG_STORAGE__BACKEND": "s3",
            "XUELIANG_STORAGE__S3__ENDPOINT": "minio:9000",
            "XUELIANG_STORAGE__S3__SECRET_KEY": "very-secret",
            "XUELIANG_DATABASE__URL": "postgresql+psycopg://x@h/db",
        }
    )
    assert s.storage.backend == "s3"
    assert s.storage.s3.endpoint == "minio:9000"
    assert s.database_url == "postgresql+psycopg://x@h/db"
    assert "very-secret" not in repr(s) and "very-secret" not in str(s.model_dump())


def test_defaults_live_in_the_data_dir() -> None:
    s = load_settings(environ={"XUELIANG_DATA_DIR": "/srv/xl"})
    assert s.database_url == "sqlite:////srv/xl/xueliang.db"
    assert s.objects_path == Path("/srv/xl/objects")
    assert s.storage.s3.bucket == "xueliang" and s.storage.s3.secure is False


def test_yaml_file_with_environment_override(tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text("server:\n  port: 9001\n  host: 0.0.0.0\nrecording:\n  pre_s: 8\n")
    s = load_settings(f, environ={"XUELIANG_SERVER__PORT": "9100"})
    assert (s.server.host, s.server.port, s.recording.pre_s) == ("0.0.0.0", 9100, 8)


@pytest.mark.parametrize(
    ("yaml_text", "env", "named"),
    [
        ("storage:\n  bakend: s3\n", {}, "storage.bakend"),
        ("nonsense: 1\n", {}, "nonsense"),
        ("", {"XUELIANG_STORAGE__S3__ENDPIONT": "x"}, "XUELIANG_STORAGE__S3__ENDPIONT"),
        ("", {"XUELIANG_SERVER__PORT": "99999"}, "server.port"),
        ("server: [1, 2]\n", {}, "server"),
    ],
)
def test_bad_keys_and_values_name_the_key(
    tmp_path: Path, yaml_text: str, env: dict[str, str], named: str
) -> None:
    f = tmp_path / "x.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings(f, environ=env)
    assert named in str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_secret_value_is_not_echoed(tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text("auth:\n  bootstrap_token: [hunter2-secret]\n")
    with pytest.raises(ConfigError) as info:
        load_settings(f, environ={})
    assert "auth.bootstrap_token" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_missing_or_broken_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "absent.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad, environ={})
