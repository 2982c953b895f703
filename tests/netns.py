"""Emulated nodes for tests: Linux network namespaces on this machine, each with its own hostname
and address, that mpirun reaches through an ssh-agent stand-in (`ip netns exec` + `unshare --uts`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

AGENT = """#!/bin/sh
# mpirun calls: AGENT [ssh options] HOST COMMAND...; run COMMAND inside HOST's namespace.
while [ $# -gt 0 ]; do case "$1" in -*) shift;; *) break;; esac; done
host="$1"; shift
case "$host" in
{cases}
  *) echo "emulated-node agent: unknown host $host" >&2; exit 1;;
esac
exec ip netns exec "$ns" unshare --uts sh -c "hostname $name; $*"
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class EmulatedNodes:
    """`n` nodes named node1..nodeN on a bridge, subnet 10.231.<k>.0/24, torn down by close()."""

    def __init__(self, workdir: Path, n: int = 2, ranks_per_node: int = 2):
        tag = os.getpid() % 200 + 20
        self.prefix, self.subnet = f"mpib{tag}", f"10.231.{tag}"
        self.bridge = f"{self.prefix}br"
        self.hosts = [f"{self.subnet}.{10 + i}" for i in range(1, n + 1)]
        self.names = [f"node{i}" for i in range(1, n + 1)]
        self.ranks_per_node = ranks_per_node
        self.namespaces: list[str] = []
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, addr in enumerate(self.hosts, start=1):
                ns = f"{self.prefix}n{i}"
                _ip("netns", "add", ns)
                self.namespaces.append(ns)
                _ip("link", "add", f"{self.prefix}v{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("link", "set", f"{self.prefix}v{i}", "master", self.bridge, "up")
                _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except subprocess.CalledProcessError:
            self.close()
            raise
        cases = "\n".join(f"  {a}) ns={ns}; name={name};;"
                          for a, ns, name in zip(self.hosts, self.namespaces, self.names))
        self.agent = workdir / "netns-agent.sh"
        self.agent.write_text(AGENT.format(cases=cases))
        self.agent.chmod(0o755)

    def mpirun(self, n: int | None = None) -> list[str]:
        """The launcher prefix: ranks_per_node ranks on each emulated node, mapped explicitly."""
        n = n or self.ranks_per_node * len(self.hosts)
        hosts = ",".join(f"{h}:{self.ranks_per_node}" for h in self.hosts)
        return ["mpirun", "--prtemca", "plm_ssh_agent", str(self.agent), "--host", hosts,
                "--map-by", f"ppr:{self.ranks_per_node}:node",
                "--prtemca", "prte_if_include", f"{self.subnet}.0/24",
                "--mca", "btl_tcp_if_include", f"{self.subnet}.0/24", "-n", str(n)]

    def close(self) -> None:
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def why_not() -> str | None:
    """Why emulated nodes cannot be made here, or None."""
    if os.geteuid() != 0:
        return "emulated nodes need root (network namespaces)"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"emulated nodes need `{tool}` (iproute2 / util-linux)"
    return None
