"""The kube-controller-manager unit: flags per Kubernetes minor, systemd escaping, snapshots."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kcmbundle.cli import app
from kcmbundle.config import load_config
from kcmbundle.errors import ConfigError
from kcmbundle.unit import CLASSIC_FLAGS, command_flags, plan_flags, render_unit, systemd_quote
from kcmbundle.versions import SUPPORTED_MINORS

from support import require_tool, starter_config, write_config

runner = CliRunner()

SNAPSHOTS = Path(__file__).parent / "snapshots" / "unit"


def config_for(tmp_path: Path, minor: int, extra_args: dict | None = None, **changes):
    """Load the starter config for Kubernetes 1.``minor`` with ``extra_args`` replacing its extraArgs."""
    document = starter_config(cluster={"kubernetesVersion": f"1.{minor}"}, **changes)
    if extra_args is not None:
        document["controllerManager"]["extraArgs"] = extra_args
    return load_config(write_config(tmp_path / f"cluster-1.{minor}", document, with_ca=False))


def emitted(plan) -> dict[str, str]:
    return {flag.name: flag.value for flag in plan.flags}


def problem_text(problems) -> str:
    return "\n".join(str(problem) for problem in problems)


# ---------------------------------------------------------------------------
# Snapshots of the default unit
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("minor", SUPPORTED_MINORS)
def test_default_unit_snapshot(minor: int, tmp_path: Path, snapshot) -> None:
    config = config_for(tmp_path, minor)
    text = render_unit(config, config.masters[0], command_flags(config))

    snapshot.snapshot_dir = SNAPSHOTS
    snapshot.assert_match(text, f"1.{minor}.service")


@pytest.mark.parametrize("minor", SUPPORTED_MINORS)
def test_default_flags_pass_checks(minor: int, tmp_path: Path) -> None:
    plan = plan_flags(config_for(tmp_path, minor, extra_args={}))

    assert plan.errors == ()
    assert plan.warnings == ()


# ---------------------------------------------------------------------------
# kcmbundle's own defaults, per minor
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("minor", SUPPORTED_MINORS)
def test_classic_service_syncs_only_before_1_31(minor: int, tmp_path: Path) -> None:
    plan = plan_flags(config_for(tmp_path, minor, extra_args={}))
    notes = [note for note in plan.notes if "concurrent-service-syncs" in note.message]

    if minor <= 30:
        assert emitted(plan)["concurrent-service-syncs"] == "2"
        assert notes == []
    else:
        assert "concurrent-service-syncs" not in emitted(plan)
        assert len(notes) == 1
        assert notes[0].path == "cluster.kubernetesVersion"
        assert "no effect from Kubernetes 1.31 on" in notes[0].message


@pytest.mark.parametrize("minor", SUPPORTED_MINORS)
def test_pod_eviction_timeout_never_default(minor: int, tmp_path: Path) -> None:
    plan = plan_flags(config_for(tmp_path, minor, extra_args={}))
    notes = [note for note in plan.notes if "pod-eviction-timeout" in note.message]

    assert "pod-eviction-timeout" not in emitted(plan)
    assert len(notes) == 1
    assert "--default-not-ready-toleration-seconds" in notes[0].message
    assert "--default-unreachable-toleration-seconds" in notes[0].message


@pytest.mark.parametrize("minor", SUPPORTED_MINORS)
def test_removed_classic_flags_never_default(minor: int, tmp_path: Path) -> None:
    flags = emitted(plan_flags(config_for(tmp_path, minor)))

    for name in ("port", "address", "experimental-cluster-signing-duration", "pod-eviction-timeout"):
        assert name not in flags
    assert flags["cluster-signing-duration"] == "876000h"
    assert flags["profiling"] == "false"


def test_classic_flags_table_unchanged_by_planning(tmp_path: Path) -> None:
    before = [(name, origin) for name, origin, _ in CLASSIC_FLAGS]

    plan_flags(config_for(tmp_path, 36))
    plan_flags(config_for(tmp_path, 24))

    assert [(name, origin) for name, origin, _ in CLASSIC_FLAGS] == before
    assert isinstance(CLASSIC_FLAGS, tuple)


def test_user_null_silences_default_note(tmp_path: Path) -> None:
    plan = plan_flags(config_for(tmp_path, 31, extra_args={"concurrent-service-syncs": None}))

    assert not [note for note in plan.notes if "concurrent-service-syncs" in note.message]
    assert plan.warnings == ()


def test_null_for_unknown_default_warns(tmp_path: Path) -> None:
    plan = plan_flags(config_for(tmp_path, 30, extra_args={"kube-api-content-type": None}))

    assert [problem.path for problem in plan.warnings] == ["controllerManager.extraArgs.kube-api-content-type"]
    assert "removes nothing" in plan.warnings[0].message


# ---------------------------------------------------------------------------
# User flags, every minor
# ---------------------------------------------------------------------------

ERROR, WARNING, KEPT = "error", "warning", "kept"


def pod_eviction_outcome(minor: int) -> str:
    return WARNING if minor <= 26 else ERROR


def service_syncs_outcome(minor: int) -> str:
    return KEPT if minor <= 30 else WARNING


def experimental_signing_outcome(minor: int) -> str:
    # Deprecated since 1.19 and still accepted by 1.24, so it is kept with a warning.
    return WARNING if minor == 24 else ERROR


def lock_outcome(minor: int) -> str:
    return KEPT if minor <= 26 else ERROR


USER_FLAG_CASES = {
    "pod-eviction-timeout": ("6m", pod_eviction_outcome),
    "concurrent-service-syncs": ("2", service_syncs_outcome),
    "experimental-cluster-signing-duration": ("876000h", experimental_signing_outcome),
    "port": ("0", lambda minor: ERROR),
    "address": ("127.0.0.1", lambda minor: ERROR),
    "leader-elect-resource-lock": ("endpointsleases", lock_outcome),
}


@pytest.mark.parametrize("minor", SUPPORTED_MINORS)
@pytest.mark.parametrize("name", sorted(USER_FLAG_CASES))
def test_user_flag_outcome_per_minor(name: str, minor: int, tmp_path: Path) -> None:
    value, outcome_for = USER_FLAG_CASES[name]
    plan = plan_flags(config_for(tmp_path, minor, extra_args={name: value}))
    path = f"controllerManager.extraArgs.{name}"
    outcome = outcome_for(minor)

    error_paths = [problem.path for problem in plan.errors]
    warning_paths = [problem.path for problem in plan.warnings]
    if outcome == ERROR:
        assert error_paths == [path]
        assert name not in emitted(plan)
    elif outcome == WARNING:
        assert error_paths == []
        assert warning_paths == [path]
    else:
        assert error_paths == []
        assert warning_paths == []
        assert emitted(plan)[name] == value


@pytest.mark.parametrize("minor", SUPPORTED_MINORS)
def test_noop_user_flags_not_emitted(minor: int, tmp_path: Path) -> None:
    extra_args = {"pod-eviction-timeout": "6m", "concurrent-service-syncs": "2"}
    plan = plan_flags(config_for(tmp_path, minor, extra_args=extra_args))
    flags = emitted(plan)

    if minor <= 26:
        assert "pod-eviction-timeout" not in flags
    if minor >= 31:
        assert "concurrent-service-syncs" not in flags


def test_pod_eviction_timeout_error_on_1_27(tmp_path: Path) -> None:
    plan = plan_flags(config_for(tmp_path, 27, extra_args={"pod-eviction-timeout": "6m"}))
    text = problem_text(plan.errors)

    assert "removed in Kubernetes 1.27" in text
    assert "--default-not-ready-toleration-seconds" in text
    assert "--default-unreachable-toleration-seconds" in text
    assert "kube-apiserver" in text


def test_pod_eviction_timeout_warning_on_1_26(tmp_path: Path) -> None:
    config = config_for(tmp_path, 26, extra_args={"pod-eviction-timeout": "6m"})
    plan = plan_flags(config)
    unit = render_unit(config, config.masters[0], command_flags(config))

    assert plan.errors == ()
    assert "no effect in Kubernetes 1.26" in problem_text(plan.warnings)
    assert "pod-eviction-timeout" not in unit


def test_experimental_signing_duration_names_successor(tmp_path: Path) -> None:
    plan = plan_flags(config_for(tmp_path, 25, extra_args={"experimental-cluster-signing-duration": "8760h"}))

    assert "--cluster-signing-duration" in problem_text(plan.errors)


def test_port_zero_error_on_1_24(tmp_path: Path) -> None:
    plan = plan_flags(config_for(tmp_path, 24, extra_args={"port": "0"}))
    text = problem_text(plan.errors)

    assert "removed in Kubernetes 1.24" in text
    assert "insecure" in text


def test_service_syncs_warning_on_1_31(tmp_path: Path) -> None:
    config = config_for(tmp_path, 31, extra_args={"concurrent-service-syncs": "2"})
    plan = plan_flags(config)

    assert plan.errors == ()
    assert "no effect in Kubernetes 1.31" in problem_text(plan.warnings)
    assert "concurrent-service-syncs" not in emitted(plan)


def test_command_flags_raises_on_errors(tmp_path: Path) -> None:
    config = config_for(tmp_path, 27, extra_args={"pod-eviction-timeout": "6m", "port": "0"})

    with pytest.raises(ConfigError) as caught:
        command_flags(config)

    paths = [problem.path for problem in caught.value.problems]
    assert paths == ["controllerManager.extraArgs.pod-eviction-timeout", "controllerManager.extraArgs.port"]


# ---------------------------------------------------------------------------
# Through the command line
# ---------------------------------------------------------------------------


def validate(tmp_path: Path, minor: int, extra_args: dict, *options: str):
    document = starter_config(cluster={"kubernetesVersion": f"1.{minor}"})
    document["controllerManager"]["extraArgs"] = extra_args
    path = write_config(tmp_path / "cli", document)
    return runner.invoke(app, ["validate", *options, str(path)])


def test_cli_pod_eviction_timeout_1_27_exit_2(tmp_path: Path) -> None:
    result = validate(tmp_path, 27, {"pod-eviction-timeout": "6m"})

    assert result.exit_code == 2, result.output
    assert "error: controllerManager.extraArgs.pod-eviction-timeout: flag --pod-eviction-timeout was removed " \
           "in Kubernetes 1.27" in result.stderr
    assert "--default-unreachable-toleration-seconds" in result.stderr


def test_cli_pod_eviction_timeout_1_26_warns(tmp_path: Path) -> None:
    result = validate(tmp_path, 26, {"pod-eviction-timeout": "6m"})

    assert result.exit_code == 0, result.output
    assert "warning: controllerManager.extraArgs.pod-eviction-timeout: flag --pod-eviction-timeout has no " \
           "effect in Kubernetes 1.26" in result.stderr


def test_cli_strict_turns_warning_into_error(tmp_path: Path) -> None:
    result = validate(tmp_path, 31, {"concurrent-service-syncs": "2"}, "--strict")

    assert result.exit_code == 2, result.output
    assert "--strict turns warnings into errors" in result.stderr
    assert "error: controllerManager.extraArgs.concurrent-service-syncs: " in result.stderr


def test_cli_strict_ignores_notes(tmp_path: Path) -> None:
    result = validate(tmp_path, 31, {}, "--strict")

    assert result.exit_code == 0, result.output
    assert "note: cluster.kubernetesVersion: kcmbundle leaves out its default --concurrent-service-syncs=2" \
           in result.stderr


@pytest.mark.parametrize(("minor", "name", "value", "expected"), [
    (25, "experimental-cluster-signing-duration", "876000h", "Use --cluster-signing-duration instead"),
    (24, "port", "0", "insecure (plain HTTP) port"),
])
def test_cli_removed_flag_exit_2(minor: int, name: str, value: str, expected: str, tmp_path: Path) -> None:
    result = validate(tmp_path, minor, {name: value})

    assert result.exit_code == 2, result.output
    assert f"error: controllerManager.extraArgs.{name}: " in result.stderr
    assert expected in result.stderr


# ---------------------------------------------------------------------------
# systemd escaping
# ---------------------------------------------------------------------------

_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
              "\\": "\\", '"': '"', "'": "'", "s": " "}


def parse_exec_start(unit_text: str) -> list[str]:
    """Return the argv that systemd 252 runs for the unit's ExecStart.

    It applies systemd's steps in order. Lines that end in a backslash are
    joined, and words are split with single or double quotes and C escapes.
    Then ``%%`` becomes ``%`` and ``$$`` becomes ``$``; any other specifier
    or variable reference fails the test.
    """
    lines = unit_text.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("ExecStart="))
    text = lines[start].removeprefix("ExecStart=")
    index = start
    while text.endswith("\\"):
        index += 1
        text = text[:-1] + " " + lines[index]

    return [_expand_variables(_resolve_specifiers(word)) for word in _split_words(text)]


def _split_words(text: str) -> list[str]:
    words: list[str] = []
    current: list[str] = []
    in_word = False
    quote: str | None = None
    position = 0
    while position < len(text):
        character = text[position]
        position += 1
        if character == "\\":
            assert position < len(text), "backslash at the end of ExecStart"
            escaped = text[position]
            position += 1
            if escaped == "x":
                current.append(chr(int(text[position:position + 2], 16)))
                position += 2
            else:
                assert escaped in _C_ESCAPES, f"unknown escape \\{escaped}"
                current.append(_C_ESCAPES[escaped])
            in_word = True
        elif quote is not None:
            if character == quote:
                quote = None
            else:
                current.append(character)
        elif character in "\"'":
            quote = character
            in_word = True
        elif character in " \t":
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            current.append(character)
            in_word = True
    assert quote is None, "unbalanced quotes in ExecStart"
    if in_word:
        words.append("".join(current))
    return words


def _resolve_specifiers(word: str) -> str:
    pieces = word.split("%%")
    for piece in pieces:
        assert "%" not in piece, f"unescaped systemd specifier in {word!r}"
    return "%".join(pieces)


def _expand_variables(word: str) -> str:
    pieces = word.split("$$")
    for piece in pieces:
        assert "$" not in piece, f"unescaped variable reference in {word!r}"
    return "$".join(pieces)


def test_parser_reads_systemd_forms() -> None:
    unit = 'ExecStart=/bin/true \\\n  "--a=x \\"y\\" \\\\z" \\\n  --b=100%%$$ \'--c=d e\'\n'

    assert parse_exec_start(unit) == ["/bin/true", '--a=x "y" \\z', "--b=100%$", "--c=d e"]


def test_parser_rejects_unescaped_percent() -> None:
    with pytest.raises(AssertionError, match="specifier"):
        parse_exec_start("ExecStart=/bin/true --a=50%\n")


TRICKY_VALUES = {
    "leader-elect-resource-name": 'kcm "lead" 100% $HOME ${PATH} \\ back; end',
    "requestheader-allowed-names": "front-proxy,o'brien",
    "kube-api-content-type": "application/vnd.kubernetes.protobuf%x$",
    "leader-elect-resource-namespace": 'kube"system',
}


def tricky_config(tmp_path: Path):
    document = starter_config(paths={"binary": "/bin/true", "workingDir": "/tmp"})
    document["controllerManager"]["extraArgs"] = dict(TRICKY_VALUES)
    return load_config(write_config(tmp_path / "tricky", document, with_ca=False))


def test_exec_start_round_trips_argv(tmp_path: Path) -> None:
    config = tricky_config(tmp_path)
    flags = command_flags(config)
    unit = render_unit(config, config.masters[0], flags)

    expected = ["/bin/true", *(f"--{flag.name}={flag.value}" for flag in flags)]
    assert parse_exec_start(unit) == expected
    for name, value in TRICKY_VALUES.items():
        assert f"--{name}={value}" in expected


def test_systemd_analyze_accepts_unit(tmp_path: Path) -> None:
    tool = require_tool("systemd-analyze")
    config = tricky_config(tmp_path)
    unit_file = tmp_path / "kube-controller-manager.service"
    unit_file.write_text(render_unit(config, config.masters[0], command_flags(config)))

    result = subprocess.run([tool, "verify", str(unit_file)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert "kube-controller-manager.service" not in result.stderr, result.stderr


def test_systemd_analyze_catches_bad_quoting(tmp_path: Path) -> None:
    tool = require_tool("systemd-analyze")
    unit_file = tmp_path / "broken.service"
    unit_file.write_text('[Service]\nExecStart=/bin/true "--a=unbalanced\n')

    result = subprocess.run([tool, "verify", str(unit_file)], capture_output=True, text=True, timeout=60)

    assert result.returncode != 0


@pytest.mark.parametrize("value", ["line\nbreak", "tab\there", "bell\x07"])
def test_control_characters_rejected(value: str, tmp_path: Path) -> None:
    document = starter_config()
    document["controllerManager"]["extraArgs"] = {"leader-elect-resource-name": value}
    path = write_config(tmp_path / "control", document)

    result = runner.invoke(app, ["validate", str(path)])

    assert result.exit_code == 2, result.output
    assert "controllerManager.extraArgs.leader-elect-resource-name" in result.stderr


@pytest.mark.parametrize(("argument", "quoted"), [
    ("--a=b", "--a=b"),
    ("--a=50%", "--a=50%%"),
    ("--a=$HOME", "--a=$$HOME"),
    ("--a=b c", '"--a=b c"'),
    ('--a="b"', '"--a=\\"b\\""'),
    ("--a=b\\c", '"--a=b\\\\c"'),
])
def test_systemd_quote_forms(argument: str, quoted: str) -> None:
    assert systemd_quote(argument) == quoted


def test_systemd_quote_rejects_newline() -> None:
    with pytest.raises(ValueError, match="control character"):
        systemd_quote("--a=b\nc")


def test_unit_flags_one_per_line(tmp_path: Path) -> None:
    config = config_for(tmp_path, 30)
    unit = render_unit(config, config.masters[0], command_flags(config))
    names = re.findall(r"^  --([a-z0-9-]+)=", unit, flags=re.MULTILINE)

    assert names == sorted(names)
    assert len(names) == len(command_flags(config))
