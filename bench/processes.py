"""The processes a benchmark drives from outside: the bot's ``serve`` (with its worker) and its
one-shot jobs, bare Bolt apps, and the local Slack and Kubernetes servers, each in a process of
its own so that none takes another's interpreter lock.

Only what the bot shows to the world is used here: its command line, its environment and YAML
file, signed HTTP requests, the database and the calls the local servers receive. The rows keep
working however the code behind those moves.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.fakes.slack import BOT_TOKEN, SIGNING_SECRET

ME, APPROVER = "U0BENCHME", "U0APPROVER"
CLUSTERS = ["staging", "prod", "dev", "qa"]
BENCH_ROOT = Path(__file__).parents[1]
PYTHONPATH = {**os.environ, "PYTHONPATH": str(BENCH_ROOT)}
BOT = str(Path(sys.executable).parent / "k8s-access-bot")


def requester(n: int) -> str:
    """The Slack ID of the ``n``-th of the people the local Slack knows besides ME."""
    return f"U0REQ{n:05d}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def process(args: list[str], env: dict[str, str], health: str) -> Iterator[int]:
    """A server in a process of its own, so that the load generator shares no CPU lock."""
    with processes((args, env, health)) as (pid,):
        yield pid


Server = tuple[list[str], dict[str, str], str]
"""A server's command line, environment and health URL."""


@contextmanager
def processes(*servers: Server) -> Iterator[tuple[int, ...]]:
    """Servers started together, each in a process of its own; their process IDs once every
    one answers its health URL. Stopped together too: starting and stopping Python servers
    one after the other is most of what a short run waits for."""
    children = [subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL) for args, env, _ in servers]
    try:
        deadline = time.monotonic() + 30
        for child, (args, _, health) in zip(children, servers, strict=True):
            while True:
                try:
                    urllib.request.urlopen(health, timeout=1)
                    break
                except OSError:
                    if time.monotonic() > deadline or child.poll() is not None:
                        raise RuntimeError(f"{args[0]} did not start") from None
                    time.sleep(0.05)
        yield tuple(child.pid for child in children)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


class SlackProcess:
    """``bench.slack_server``: a local Slack in its own process.

    It appends the moment (``time.monotonic()``, one clock for every process of the machine)
    of each form opened and file shared to ``events``, read while it runs; :meth:`stop` returns
    what it counted."""

    def __init__(self, users: int = 0, rate: int = 0, per_channel: float = 0.0) -> None:
        self.events = Path(tempfile.mkstemp(suffix=".jsonl")[1])
        self._child = subprocess.Popen(
            [sys.executable, "-m", "bench.slack_server", "--users", str(users), "--rate",
             str(rate), "--per-channel", str(per_channel), "--events", str(self.events)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=PYTHONPATH)
        assert self._child.stdout is not None
        self.url = self._child.stdout.readline().strip()
        self.api_url = self.url + "/api/"
        self._sent = 0
        self._read = 0

    def response_url(self) -> str:
        self._sent += 1
        return f"{self.url}/respond/{self._sent}"

    def new_events(self) -> list[dict[str, Any]]:
        """What happened since the last call."""
        lines = self.events.read_text().splitlines()
        complete = lines if self.events.read_text().endswith("\n") else lines[:-1]
        fresh, self._read = complete[self._read:], len(complete)
        return [json.loads(line) for line in fresh]

    def _ask(self, command: dict[str, Any]) -> Any:
        assert self._child.stdin is not None and self._child.stdout is not None
        self._child.stdin.write(json.dumps(command) + "\n")
        self._child.stdin.flush()
        return json.loads(self._child.stdout.readline())

    def post(self, channel: str, count: int) -> list[str]:
        """``count`` messages put in ``channel`` as the bot's (no call counted): their ts."""
        stamps: list[str] = self._ask({"post": {"channel": channel, "count": count}})["ts"]
        return stamps

    def calls(self) -> Counter[str]:
        """The calls received so far, by method."""
        return Counter(self._ask({"calls": True}))

    def stop(self) -> SlackCounts:
        output, _ = self._child.communicate(timeout=60)
        self.events.unlink(missing_ok=True)
        return SlackCounts(**json.loads(output.strip().splitlines()[-1]))


@dataclass
class SlackCounts:
    """What the local Slack received, counted when it stopped."""

    answers: int
    """``response_url`` posts."""
    answered_twice: int
    """``response_url`` posts beyond the first to the same URL."""
    limited: int
    """Calls answered 429."""
    dms: dict[str, int]
    """DM channel → messages posted in it."""
    posts: int
    """Every ``chat.postMessage``."""
    channel_posts: dict[str, int]

    def dm_counts(self) -> Counter[int]:
        """How many DM channels received each number of messages."""
        return Counter(self.dms.values())


class ClusterProcess:
    """``bench.cluster_server``: a local Kubernetes API in its own process; it signs CSRs at
    once. ``credentials`` holds its URL and the bot's kubeconfig, certificate, key and CA."""

    def __init__(self) -> None:
        self._child = subprocess.Popen([sys.executable, "-m", "bench.cluster_server"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                       env=PYTHONPATH)
        assert self._child.stdout is not None
        self.credentials: dict[str, str] = json.loads(self._child.stdout.readline())
        self.url = self.credentials["url"]

    def _ask(self, command: dict[str, Any]) -> Any:
        assert self._child.stdin is not None and self._child.stdout is not None
        self._child.stdin.write(json.dumps(command) + "\n")
        self._child.stdin.flush()
        return json.loads(self._child.stdout.readline())

    def create(self, bindings: list[dict[str, Any]]) -> list[dict[str, str]]:
        """Bindings created as the API creates them (not counted as requests): the ``uid`` and
        ``resourceVersion`` of each."""
        made: list[dict[str, str]] = self._ask({"create": bindings})["made"]
        return made

    def bindings(self, label: str) -> int:
        """How many bindings carry ``label`` (``key=value``)."""
        return int(self._ask({"count": label})["bindings"])

    def requests(self) -> Counter[str]:
        """The requests received so far, by method."""
        return Counter(self._ask({"requests": True}))

    def stop(self) -> Counter[str]:
        """Requests received, by method."""
        output, _ = self._child.communicate(timeout=30)
        return Counter(json.loads(output.strip().splitlines()[-1]))


def bot_environment(database_url: str, slack: SlackProcess, cluster: ClusterProcess,
                    folder: Path, **schedules: str) -> dict[str, str]:
    """The environment and YAML file of a bot whose four clusters sign certificates on the
    local Kubernetes; approvals by APPROVER in C0REVIEW, no reason required."""
    config = folder / "k8s-access.yaml"
    kubernetes = {"server": cluster.url, "kubeconfig": cluster.credentials["kubeconfig"]}
    cluster_config = {"backend": "certificate", "approvers": [APPROVER],
                      "approvers_channel": "C0REVIEW", "kubernetes": kubernetes,
                      "roles": {"view": {"cluster_role": "view", "max_duration": "2w",
                                         "require_reason": False}}}
    config.write_text(json.dumps({"schedules": schedules,
                                  "clusters": {name: cluster_config for name in CLUSTERS}}))
    env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "SLACK_API_URL": slack.api_url, "DATABASE_URL": database_url,
           "K8S_ACCESS_CONFIG": str(config), "LOG_LEVEL": "CRITICAL"}
    env.pop("SLACK_APP_TOKEN", None)
    return env


def serve(env: dict[str, str], port: int, jobs: bool = False) -> Any:
    """``k8s-access-bot serve --http`` on ``port``; yields its process ID."""
    return process(*serving(env, port, jobs))


def serving(env: dict[str, str], port: int, jobs: bool = False) -> Server:
    """How :func:`serve` starts the bot, for :func:`processes`."""
    return ([BOT, "serve", "--http", "--host", "127.0.0.1", "--port", str(port),
             "--jobs" if jobs else "--no-jobs"], env, f"http://127.0.0.1:{port}/healthz")


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu_seconds: float
    """User and system time of the process: the bot's own, not the database's or Slack's."""
    output: str


def run_cli(env: dict[str, str], *args: str) -> Run:
    """One ``k8s-access-bot`` command to its end."""
    started = time.perf_counter()
    child = subprocess.Popen([BOT, *args], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    assert child.stdout is not None
    output = child.stdout.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if child.returncode:
        raise RuntimeError(f"k8s-access-bot {' '.join(args)} failed: {output[-2000:]}")
    return Run(seconds, usage.ru_utime + usage.ru_stime, output)


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def workers_of(serve_pid: int) -> list[int]:
    """The ``work`` processes ``serve`` started."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if parent == serve_pid and b"--wake-on-stdin" in cmdline:
            found.append(int(stat.parent.name))
    if not found:
        raise RuntimeError("serve started no worker")
    return sorted(found)


def replica_rss(serve_pid: int) -> list[float]:
    """Resident MiB of ``serve`` and of each of its workers."""
    return [rss_mib(serve_pid), *(rss_mib(pid) for pid in workers_of(serve_pid))]


def memory_label(sizes: list[float]) -> str:
    """``serve + workers`` as ``112 + 96 + 95 MiB``."""
    return " + ".join(f"{size:.0f}" for size in sizes) + " MiB"
