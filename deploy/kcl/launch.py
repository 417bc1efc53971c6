#!/usr/bin/env python3
"""Start the KCL MultiLangDaemon (Java) for shelfstream: the processor container's entry point.

The daemon leases shards and runs one ``shelfstream kcl-processor`` child per leased shard, talking
JSON over the child's stdin/stdout. Its properties file (``deploy/kcl/shelfstream.properties``) is
static, but the stream, region and KCL application (= lease table) names belong to the deployment,
so this launcher renders a copy with those taken from the environment the task definition sets:

    streamName      <- SHELFSTREAM_AWS__STREAM_NAME, else SHELFSTREAM_STREAM_NAME (as the app's Settings read)
    regionName      <- AWS_REGION, else AWS_DEFAULT_REGION
    applicationName <- KCL_APPLICATION_NAME      (names the lease tables and the metrics namespace)

then runs ``java -cp <the KCL jars> MultiLangDaemon --properties-file <rendered>``, the command
``amazon_kclpy_helper.py --print_command`` prints, built as an argv list instead of a shell string.
The jars are the ones deploy/kcl/fetch_jars.sh fetched with Maven (``--jar-dir``, or
``$KCL_JAR_DIR``). ``--check`` (run at image build) verifies that Java runs, that the KCL jars are
there, and that the processor executable is on PATH.

The launcher stays the container's main process and supervises the daemon: it passes SIGTERM and
SIGINT on, copies the daemon's output to stderr, and exits 0 when a stop it passed on ended in the
daemon's completed graceful shutdown (``Process shutdown is complete.``). Java itself always exits
with 143 after SIGTERM, whether its graceful shutdown completed or not, so its status alone cannot
tell a clean stop from a failed one. Any other end passes the daemon's status on (a failed record
processor ends the daemon, and the task with it).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import BinaryIO

DAEMON_CLASS = "software.amazon.kinesis.multilang.MultiLangDaemon"
DEFAULT_PROPERTIES = "/opt/shelfstream/kcl/shelfstream.properties"
DEFAULT_LOGBACK = "/opt/shelfstream/kcl/logback.xml"
DEFAULT_OUTPUT = "/tmp/shelfstream-kcl/shelfstream.properties"
# Heap for the daemon only: the per-shard Python processors share the task's memory with it.
DEFAULT_JVM_OPTIONS = ("-XX:MaxRAMPercentage=40.0", "-XX:+ExitOnOutOfMemoryError")
REQUIRED_JARS = ("amazon-kinesis-client-multilang-", "amazon-kinesis-client-")
# What the MultiLangDaemon's shutdown hook logs when its graceful shutdown finished within the grace.
SHUTDOWN_COMPLETE = b"Process shutdown is complete."
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# (property, environment variables in order of preference)
OVERRIDES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("streamName", ("SHELFSTREAM_AWS__STREAM_NAME", "SHELFSTREAM_STREAM_NAME")),
    ("regionName", ("AWS_REGION", "AWS_DEFAULT_REGION")),
    ("applicationName", ("KCL_APPLICATION_NAME",)),
)

_LINE = re.compile(r"^\s*([^=:\s]+)\s*[=:]\s*(.*?)\s*$")
_SAFE_VALUE = re.compile(r"^[^\\\r\n]*$")


class LaunchError(Exception):
    """A configuration problem that stops the daemon from starting (exit status 2)."""


def parse_properties(text: str) -> dict[str, str]:
    """The ``key = value`` pairs of a Java properties file (comments and blank lines skipped).

    Only the simple form is accepted: a line continuation or escape would make our copy differ
    from what Java reads, so those are refused rather than misread.
    """
    result: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        if line.endswith("\\"):
            raise LaunchError(f"line {number}: line continuations are not supported")
        match = _LINE.match(line)
        if match is None:
            raise LaunchError(f"line {number}: expected `key = value`, got {raw!r}")
        result[match.group(1)] = match.group(2)
    return result


def render(template: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """The template with deployment values from ``env`` on top; every value checked."""
    rendered = dict(template)
    for key, names in OVERRIDES:
        for name in names:
            value = env.get(name, "").strip()
            if value:
                rendered[key] = value
                break
    for key in ("executableName", "streamName", "applicationName"):
        if not rendered.get(key):
            raise LaunchError(f"the KCL property {key} is empty")
    for key, value in rendered.items():
        if not _SAFE_VALUE.match(value):
            raise LaunchError(f"the KCL property {key} has a backslash or line break: {value!r}")
    return rendered


def dump_properties(props: Mapping[str, str]) -> str:
    return "".join(f"{key} = {value}\n" for key, value in props.items())


def kcl_jars(jar_dir: Path) -> list[Path]:
    """The KCL jars amazon-kclpy bundled; fails if its install could not fetch them."""
    jars = sorted(jar_dir.glob("*.jar"))
    names = [jar.name for jar in jars]
    for prefix in REQUIRED_JARS:
        if not any(name.startswith(prefix) and name[len(prefix)].isdigit() for name in names):
            raise LaunchError(
                f"no {prefix}*.jar in {jar_dir}: fetch the KCL jars with deploy/kcl/fetch_jars.sh "
                "(`make kcl-jars`)"
            )
    return jars


def default_jar_dir(env: Mapping[str, str]) -> Path:
    if env.get("KCL_JAR_DIR"):
        return Path(env["KCL_JAR_DIR"])
    from amazon_kclpy import kcl  # where amazon-kclpy's own install puts them

    return Path(kcl.__file__).resolve().parent / "jars"


def supervise(command: Sequence[str], out: BinaryIO) -> int:
    """Run the daemon, pass stop signals on, copy its output; the task's exit status."""
    proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stop_requested = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    completed = False
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            out.flush()
            completed = completed or SHUTDOWN_COMPLETE in line
        status = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stop_requested and completed and status in (0, 128 + signal.SIGTERM, 128 + signal.SIGINT):
        return 0
    if stop_requested and not completed:
        print("shelfstream-kcl: the daemon stopped without completing its graceful shutdown", file=sys.stderr)
    return status if status >= 0 else 128 - status


def daemon_command(
    java: str,
    jars: Sequence[Path],
    properties: Path,
    logback: Path | None = None,
    jvm_options: Sequence[str] = DEFAULT_JVM_OPTIONS,
) -> list[str]:
    classpath = ":".join([*(str(jar) for jar in jars), str(properties.parent)])
    command = [java, *jvm_options, "-cp", classpath, DAEMON_CLASS, "--properties-file", str(properties)]
    if logback is not None:
        command += ["--log-configuration", str(logback)]
    return command


def find_java(env: Mapping[str, str]) -> str:
    java_home = env.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise LaunchError("no java found (set JAVA_HOME or put java on PATH)")
    return found


def check(java: str, jars: Sequence[Path], props: Mapping[str, str]) -> list[str]:
    """What the build verifies; returns the facts it established (for the build log)."""
    version = subprocess.run([java, "-version"], capture_output=True, text=True, check=True, timeout=60)
    executable = props["executableName"].split()[0]
    if shutil.which(executable) is None:
        raise LaunchError(f"the record processor executable {executable!r} is not on PATH")
    return [
        (version.stderr or version.stdout).splitlines()[0],
        f"{len(jars)} KCL jars",
        f"record processor: {props['executableName']}",
    ]


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(description="Start the KCL MultiLangDaemon for shelfstream.")
    parser.add_argument("--properties", default=DEFAULT_PROPERTIES, help="the properties template")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="where the rendered copy is written")
    parser.add_argument("--logback", default=DEFAULT_LOGBACK, help="logback.xml for the daemon's logs")
    parser.add_argument(
        "--jar-dir", help="directory of the KCL jars (default: $KCL_JAR_DIR, else amazon_kclpy's)"
    )
    parser.add_argument("--print-command", action="store_true", help="print the command, do not run it")
    parser.add_argument("--check", action="store_true", help="verify java, jars and executable; exit")
    args = parser.parse_args(argv)
    try:
        template = parse_properties(Path(args.properties).read_text(encoding="utf-8"))
        props = render(template, env)
        jars = kcl_jars(Path(args.jar_dir) if args.jar_dir else default_jar_dir(env))
        java = find_java(env)
        if args.check:
            for fact in check(java, jars, props):
                print(f"ok: {fact}", file=sys.stderr)
            return 0
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(dump_properties(props), encoding="utf-8")
        logback = Path(args.logback) if args.logback and Path(args.logback).exists() else None
        extra = shlex.split(env.get("KCL_JAVA_OPTIONS", ""))
        command = daemon_command(java, jars, output, logback, [*DEFAULT_JVM_OPTIONS, *extra])
    except (LaunchError, OSError, subprocess.SubprocessError) as exc:
        print(f"shelfstream-kcl: {exc}", file=sys.stderr)
        return 2
    if args.print_command:
        print(shlex.join(command))
        return 0
    sys.stderr.flush()
    return supervise(command, sys.stderr.buffer)


if __name__ == "__main__":
    raise SystemExit(main())
