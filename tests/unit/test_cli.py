"""The headroom command line: env-backed flags, usage errors for bad values, help text,
and the two log formats."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import subprocess
import sys

import pytest
from headroom import agentcli, cli, logs
from headroom.controller import cli as operator_cli

ENV_PREFIXES = ("HEADROOM_", "NODE_NAME")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES):
            monkeypatch.delenv(name)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="headroom")
    sub = parser.add_subparsers(dest="command", required=True)
    agentcli.add_parser(sub)
    operator_cli.add_parser(sub)
    return parser.parse_args(argv)


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def run_headroom(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    return subprocess.run([sys.executable, "-m", "headroom.cli", *args], env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def test_bad_env_value_does_not_break_version() -> None:
    r = run_headroom(["--version"], {"HEADROOM_DEBOUNCE_SECONDS": "abc"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("headroom ")


def test_bad_env_value_is_a_usage_error_naming_the_variable() -> None:
    r = run_headroom(["operator"], {"HEADROOM_DEBOUNCE_SECONDS": "abc"})
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "HEADROOM_DEBOUNCE_SECONDS='abc'" in r.stderr and "not a number" in r.stderr
    assert "usage: headroom operator" in r.stderr


@pytest.mark.parametrize(("env", "value", "words"), [
    ("HEADROOM_METRICS_PORT", "http", "not an integer port"),
    ("HEADROOM_METRICS_PORT", "70000", "not a port"),
    ("HEADROOM_CPU_BUDGET", "-1", "must be >= 0"),
    ("HEADROOM_DRY_RUN", "maybe", "not a boolean"),
    ("HEADROOM_CGROUP_DRIVER", "docker", "not one of auto, systemd, cgroupfs"),
    ("HEADROOM_LOG_FORMAT", "xml", "not one of json, text"),
])
def test_each_kind_of_bad_agent_env_value(
    env: str, value: str, words: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(env, value)
    err = usage_error(["agent"], capsys)
    assert f"{env}={value!r}" in err and words in err


def test_a_flag_overrides_a_bad_env_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment is read only for flags not given on the command line."""
    monkeypatch.setenv("HEADROOM_DEBOUNCE_SECONDS", "abc")
    assert parse(["operator", "--debounce", "2"]).debounce == 2.0


def test_bad_command_line_value_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(["agent", "--cpu-budget", "lots"], capsys)
    assert "argument --cpu-budget: 'lots': not a number" in err


@pytest.mark.parametrize(("raw", "expected"), [
    ("1", True), ("true", True), ("True", True), ("TRUE", True), ("yes", True), ("on", True),
    ("0", False), ("false", False), ("False", False), ("no", False), ("off", False), ("", False),
])
def test_boolean_spellings(raw: str, expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADROOM_DRY_RUN", raw)
    assert parse(["agent"]).dry_run is expected


def test_switches_and_their_negation(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse(["agent"]).dry_run is False
    assert parse(["agent", "--dry-run"]).dry_run is True
    monkeypatch.setenv("HEADROOM_DRY_RUN", "true")
    assert parse(["agent", "--no-dry-run"]).dry_run is False


def test_env_values_are_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADROOM_METRICS_PORT", "9100")
    monkeypatch.setenv("HEADROOM_CPU_BUDGET", "0.25")
    monkeypatch.setenv("HEADROOM_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("HEADROOM_KUBECONFIG", "/etc/kube.conf")
    a = parse(["agent"])
    assert (a.metrics_port, a.cpu_budget, a.log_level, a.kubeconfig) == (
        9100, 0.25, "debug", "/etc/kube.conf")
    defaults = parse(["operator"])
    assert (defaults.debounce, defaults.max_delay, defaults.log_format) == (0.5, 5.0, "json")


def help_of(command: str) -> str:
    r = run_headroom([command, "--help"], {})
    assert r.returncode == 0, r.stderr
    return " ".join(r.stdout.split())   # argparse wraps lines anywhere


@pytest.mark.parametrize("command", ["agent", "operator"])
def test_every_flag_shows_its_env_var_and_default(command: str) -> None:
    text = help_of(command)
    parser = argparse.ArgumentParser(prog="headroom")
    sub = parser.add_subparsers()
    p = (agentcli if command == "agent" else operator_cli).add_parser(sub)
    flags = [a for a in p._actions if a.option_strings and a.dest != "help"]
    assert len(flags) >= 6
    for a in flags:
        assert a.help and "(env " in a.help and ", default " in a.help, a.option_strings
        env = a.help.split("(env ")[1].split(",")[0]
        assert f"(env {env}, default" in text, (a.option_strings, env)


def test_agent_has_kubeconfig_and_log_format() -> None:
    text = help_of("agent")
    assert "--kubeconfig FILE" in text and "--log-format {json,text}" in text


def record(logger: str = "headroom.test", fmt: str = "json", **fields: object) -> str:
    out = io.StringIO()
    logs.setup("info", stream=out, fmt=fmt)
    try:
        logs.event(logging.getLogger(logger), "reclaim_backoff", **fields)
        logging.getLogger("kopf.objects").info(
            "Handler succeeded.", extra={"k8s_ref": {"namespace": "ns", "name": "p"}})
    finally:
        logs.setup("warning")
    return out.getvalue()


def test_json_log_puts_the_message_under_msg() -> None:
    first, second = (json.loads(line) for line in record(key="web", level2=1).splitlines())
    assert first["msg"] == "reclaim_backoff" and first["key"] == "web"
    assert first["level"] == "info" and first["logger"] == "headroom.test"
    assert first["time"].endswith("Z") and "event" not in first
    assert second["msg"] == "Handler succeeded." and second["object"] == "ns/p"


def test_a_field_named_like_a_reserved_key_does_not_replace_it() -> None:
    doc = json.loads(record(msg="mine").splitlines()[0])
    assert doc["msg"] == "reclaim_backoff" and doc["field.msg"] == "mine"


def test_text_log_is_one_line_per_event() -> None:
    first, second = record(fmt="text", key="web", why="two words").splitlines()
    assert " info headroom.test: reclaim_backoff key=web why=\"two words\"" in first
    assert second.endswith("kopf.objects: Handler succeeded. object=ns/p")


def test_main_dispatches_to_the_subcommand(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[argparse.Namespace] = []
    monkeypatch.setattr(operator_cli, "run", lambda a: seen.append(a) or 0)
    monkeypatch.setenv("HEADROOM_LOG_FORMAT", "text")
    assert cli.main(["operator", "--debounce", "1"]) == 0
    (args,) = seen
    assert (args.debounce, args.log_format) == (1.0, "text")
