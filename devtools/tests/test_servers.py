"""Choosing free ports for the servers ``devtools/servers.py`` starts (nothing is started here;
the servers themselves are checked in tests/test_servers_cluster.py and tests/test_stack.py)."""

from __future__ import annotations

import socket

from devtools import servers
from devtools.servers import CLUSTER_BUS_OFFSET, free_cluster_ports, free_port, port_is_free


def test_free_port_prefers_the_given_port_when_free() -> None:
    port = free_port()
    assert free_port(port) == port
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert not port_is_free(taken)
        other = free_port(taken)
        assert other != taken
        assert port_is_free(other)


def test_free_cluster_ports_skip_ports_whose_bus_port_cannot_exist(monkeypatch) -> None:
    offered = iter([60000, 55536, 30001, 30001, 40001, 30002])
    monkeypatch.setattr(servers, "free_port", lambda: next(offered))
    monkeypatch.setattr(servers, "port_is_free", lambda port: True)

    # 60000 and 55536 have no bus port below 65536; 30001 is chosen already; 40001 is the
    # bus port of 30001.
    assert free_cluster_ports(2) == [30001, 30002]


def test_free_cluster_ports_are_free_with_their_bus_ports() -> None:
    ports = free_cluster_ports(3)

    assert len(set(ports)) == 3
    for port in ports:
        assert port + CLUSTER_BUS_OFFSET <= 65535
        assert servers.port_is_free(port)
        assert servers.port_is_free(port + CLUSTER_BUS_OFFSET)
