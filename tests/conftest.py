"""Test-wide settings: offline, no network, one torch thread (tests may run beside other work;
`DCRL_TEST_THREADS=2` runs them with two, to check that no result depends on it), fixed seeds.

Network: every socket connection and name lookup to a host other than this machine fails with
`NetworkBlocked`, so a test (or a library it calls) that would download something fails here
instead of passing on a connected machine and hanging on an offline one. Subprocesses the tests
start are not covered; they get the same offline variables.
"""

import ipaddress
import os
import socket

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("DCRL_TEST_THREADS", "1")))


class NetworkBlocked(OSError):
    """A test tried to reach another machine."""


def _is_local(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:  # a host name other than localhost
        return False


def _block_network() -> None:
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            raise NetworkBlocked(f"the test suite runs offline: connection to {address} blocked")

    def connect(self, address):
        check(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not _is_local(host if isinstance(host, str) else host.decode()):
            raise NetworkBlocked(f"the test suite runs offline: name lookup of {host!r} blocked")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.getaddrinfo = getaddrinfo


_block_network()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
