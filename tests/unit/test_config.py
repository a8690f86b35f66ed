"""Configuration: defaults, layering, and one clear line for every kind of mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.procs import ROOT

from gateway.config import ConfigError, GatewayConfig, iter_settings, load_config, render_effective


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_without_file_or_env() -> None:
    cfg = load_config(None, environ={})
    assert cfg == GatewayConfig()
    assert cfg.server.port == 8000
    assert cfg.next.stop_grace == 10.0


def test_file_overrides_defaults_and_keeps_the_rest(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, "server:\n  port: 9000\nnext:\n  restart:\n    max_failures: 2\n"),
        environ={},
    )
    assert cfg.server.port == 9000
    assert cfg.next.restart.max_failures == 2
    assert cfg.server.host == "0.0.0.0"
    assert cfg.next.restart.backoff_max == 30.0


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 9000\n  host: 10.0.0.1\n")
    env = {"GATEWAY_PORT": "9100", "GATEWAY_NEXT_DIR": "/srv/app"}
    cfg = load_config(path, environ=env)
    assert (cfg.server.port, cfg.server.host, cfg.next.dir) == (9100, "10.0.0.1", "/srv/app")
    cfg = load_config(path, environ=env, overrides={"server.port": 9200, "next.dev": True})
    assert (cfg.server.port, cfg.next.dev) == (9200, True)


def test_secrets_come_from_env_and_are_masked() -> None:
    env = {
        "WS_SECRET": "s3cret-value",
        "GATEWAY_API_KEY": "k3y",
        "GATEWAY_REDIS_URL": "redis://user:hunter2@redis.internal:6379/1",
    }
    cfg = load_config(None, environ=env)
    assert cfg.auth.secret == "s3cret-value"
    shown = render_effective(cfg)
    for secret in ("s3cret-value", "k3y", "hunter2"):
        assert secret not in shown
    assert "redis://user:***@redis.internal:6379/1" in shown
    assert yaml.safe_load(shown)["auth"]["secret"] == "*** (12 characters)"


def test_int_is_accepted_where_a_float_is_expected(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "next:\n  stop_grace: 3\n"), environ={})
    assert cfg.next.stop_grace == 3.0 and isinstance(cfg.next.stop_grace, float)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "server:\n  prot: 80\n",
            "gateway.yaml:2: unknown key 'server.prot' (did you mean 'server.port'?)",
        ),
        ("sever:\n  port: 80\n", "gateway.yaml:1: unknown key 'sever' (did you mean 'server'?)"),
        (
            "server:\n  port: eighty\n",
            "gateway.yaml:2: server.port: expected an integer, got 'eighty'",
        ),
        ("server:\n  port: true\n", "gateway.yaml:2: server.port: expected an integer, got True"),
        (
            "server:\n\n  port: 70000\n",
            "gateway.yaml:3: server.port: 70000 is out of range (must be between 0 and 65535)",
        ),
        ("next:\n  stop_grace: -1\n", "gateway.yaml:2: next.stop_grace: -1.0 is out of range"),
        ("next:\n  dev: maybe\n", "gateway.yaml:2: next.dev: expected true or false, got 'maybe'"),
        ("next:\n  command: node\n", "gateway.yaml:2: next.command: expected a list of strings"),
        (
            "next:\n  env: {A: 1}\n",
            "gateway.yaml:2: next.env: expected a mapping of strings to strings",
        ),
        (
            "log:\n  level: loud\n",
            "gateway.yaml:2: log.level: 'loud' is not one of: debug, info, warning, error",
        ),
        ("server: 8000\n", "gateway.yaml:1: server: expected a mapping of settings, got 8000"),
        ("server:\n  port: 1\n  port: 2\n", "gateway.yaml:3: duplicate key 'port'"),
        ("server:\n  port: [1\n", "gateway.yaml:3: invalid YAML"),
        ("- a\n- b\n", "gateway.yaml: the top level must be a mapping"),
    ],
)
def test_bad_file_names_the_key_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_PORT": "http"}, "GATEWAY_PORT='http': server.port: expected an integer"),
        ({"GATEWAY_PORT": "99999"}, "GATEWAY_PORT='99999': server.port: 99999 is out of range"),
    ],
)
def test_bad_env_names_the_variable_and_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, environ=env)


def test_bad_flag_names_the_flag_and_key() -> None:
    with pytest.raises(ConfigError, match=r"--port 70000: server.port: 70000 is out of range"):
        load_config(None, environ={}, overrides={"server.port": 70000})


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"), environ={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(str(tmp_path), environ={})  # a directory


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing\n"), environ={}) == GatewayConfig()


def test_shipped_config_documents_every_key_with_its_default() -> None:
    shipped = ROOT / "config" / "gateway.yaml"
    loaded = load_config(str(shipped), environ={})
    assert set(loaded.realtime.namespaces) == {"chat", "typing", "feed", "user"}  # the demo's
    assert loaded.realtime.hooks.rpc == "/api/realtime/rpc"
    loaded.realtime.namespaces = {}
    loaded.realtime.hooks.rpc = ""
    assert loaded == GatewayConfig()  # everything else is the default, written out
    data = yaml.safe_load(shipped.read_text())
    lines = shipped.read_text().splitlines()
    for key, _, _ in iter_settings():
        node = data
        for part in key.split("."):
            assert part in node, f"{key} is missing from config/gateway.yaml"
            node = node[part]
        leaf = key.rsplit(".", 1)[-1]
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{leaf}:"))
        assert lines[index - 1].strip().startswith("#"), f"{key} has no comment above it"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def test_check_config_prints_effective_config_masked(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 9001\n")
    result = run_cli("check-config", path, env={"PATH": "/usr/bin:/bin", "WS_SECRET": "topsecret"})
    assert result.returncode == 0, result.stderr
    assert "topsecret" not in result.stdout
    shown = yaml.safe_load(result.stdout)
    assert shown["server"]["port"] == 9001
    assert shown["auth"]["secret"].startswith("***")


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_cli_config_errors_exit_2_with_one_line(tmp_path: Path, command: str) -> None:
    path = write(tmp_path, "server:\n  port: 70000\n")
    args = [command, path] if command == "check-config" else [command, "--config", path]
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "gateway.yaml:2: server.port: 70000 is out of range" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "listening" not in result.stderr  # nothing started
