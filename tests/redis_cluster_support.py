"""A private three-node Redis Cluster, started from the ``redis-server`` binary, for tests
that prove the state scripts run in a cluster (every script's keys in one slot)."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from process_support import free_port, stop, tail

from sasfleet.shared.state.connection import RedisClient, connect_redis

SLOTS = 16384


@dataclass
class RedisClusterNodes:
    """The running nodes; ``url`` names the first (a cluster client discovers the rest)."""

    ports: list[int]
    bus_ports: list[int]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def node(self, i: int) -> redis.Redis:
        return redis.Redis(port=self.ports[i], decode_responses=True)

    def stop(self) -> None:
        for proc in self.processes:
            stop(proc)


@dataclass(frozen=True)
class RedisTarget:
    """Where the state store under test lives: the machine's Redis, or a Redis Cluster."""

    url: str
    cluster: bool

    def connect(self) -> RedisClient:
        return connect_redis(self.url, cluster=self.cluster)


def start_redis_cluster(home: Path, nodes: int = 3) -> RedisClusterNodes:
    """Start ``nodes`` empty cluster-enabled servers, give each an equal share of the slots,
    join them, and wait until every node reports ``cluster_state:ok``."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed: run `make services` (it installs it)")
    cluster = RedisClusterNodes(
        [free_port() for _ in range(nodes)], [free_port() for _ in range(nodes)]
    )
    try:
        for i, port in enumerate(cluster.ports):
            workdir = home / f"node{i}"
            workdir.mkdir(parents=True)
            log = workdir / "redis.log"
            cluster.logs.append(log)
            cluster.processes.append(
                subprocess.Popen(
                    [
                        server,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        str(cluster.bus_ports[i]),
                        "--cluster-config-file",
                        str(workdir / "nodes.conf"),
                        "--cluster-node-timeout",
                        "5000",
                        "--dir",
                        str(workdir),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--logfile",
                        str(log),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.STDOUT,
                )
            )
        _wait_for_ping(cluster)
        _assign_slots_and_meet(cluster)
        _wait_for_ok(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_for_ping(cluster: RedisClusterNodes, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    for i, _ in enumerate(cluster.ports):
        while True:
            try:
                if cluster.node(i).ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline or cluster.processes[i].poll() is not None:
                    pytest.fail(f"cluster node {i} did not start:\n{tail(cluster.logs[i])}")
                time.sleep(0.05)


def _assign_slots_and_meet(cluster: RedisClusterNodes) -> None:
    n = len(cluster.ports)
    for i in range(n):
        first, last = i * SLOTS // n, (i + 1) * SLOTS // n - 1
        cluster.node(i).execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
    for port, bus_port in zip(cluster.ports[1:], cluster.bus_ports[1:], strict=True):
        cluster.node(0).execute_command("CLUSTER", "MEET", "127.0.0.1", port, bus_port)


def _wait_for_ok(cluster: RedisClusterNodes, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    for i, _ in enumerate(cluster.ports):
        while "cluster_state:ok" not in cluster.node(i).execute_command("CLUSTER", "INFO"):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"cluster node {i} never reached cluster_state:ok:\n{tail(cluster.logs[i])}"
                )
            time.sleep(0.1)
