"""`cnitool`: run a CNI network list against a network namespace, as upstream's cnitool does.

    cnitool add|check|del NETWORK NETNS
    cnitool gc|status NETWORK

(`gc` and `status` accept a NETNS after NETWORK and ignore it, as upstream's cnitool does.)

The network list named NETWORK is loaded from `NETCONFPATH` (default `/etc/cni/net.d`) and
its plugins are found in `CNI_PATH` (':'-separated folders). `CNI_ARGS` (`K=V;K=V`, every
key and value non-empty) and `CAP_ARGS` (a JSON object of capability args) are passed to
the plugins, `CNI_IFNAME` names the interface (default `eth0`). One addition to upstream:
`CNI_CACHE_DIR` (default `/var/lib/cni`) is where the result cache lives, so that tests and
users without root can keep it elsewhere.

The container id is `cnitool-` and the first 20 hex digits of the SHA-512 of the absolute
NETNS path, so `del` finds what `add` created. `add` prints the result JSON on stdout. Every
failure is one line `cnitool: <message>` on stderr and exit status 1, usage errors too;
`status` exits 0 when every plugin can serve an ADD. `gc` passes no list of valid
attachments, as upstream does: every cached attachment of the network is deleted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from . import CNI, CNIError, RuntimeConf, load_network_list

PROG = "cnitool"
VERBS = ("add", "check", "del", "gc", "status")
NETNS_OPTIONAL = frozenset({"gc", "status"})
DEFAULT_NETCONFPATH = "/etc/cni/net.d"
DEFAULT_CACHE_DIR = "/var/lib/cni"
DEFAULT_IFNAME = "eth0"

USAGE = f"""\
{PROG}: Add, check, remove, gc or status network interfaces from a network namespace
  {PROG} add    <net> <netns>
  {PROG} check  <net> <netns>
  {PROG} del    <net> <netns>
  {PROG} gc     <net>
  {PROG} status <net>
  (a <netns> after gc or status is accepted and ignored, as in upstream's cnitool)
environment:
  NETCONFPATH    folder of the network configurations (default {DEFAULT_NETCONFPATH})
  CNI_PATH       ':'-separated folders of the plugins
  CNI_ARGS       K=V;K=V arguments passed to the plugins
  CAP_ARGS       a JSON object of capability arguments
  CNI_IFNAME     the interface name in the namespace (default {DEFAULT_IFNAME})
  CNI_CACHE_DIR  the folder of the result cache (default {DEFAULT_CACHE_DIR})
"""


class Failure(Exception):
    """A refusal of cnitool itself (bad environment or arguments): one line and exit 1."""


class _Parser(argparse.ArgumentParser):
    def format_help(self) -> str:
        return USAGE

    def format_usage(self) -> str:
        return USAGE

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(USAGE)
        sys.exit(1)


def _parser() -> _Parser:
    parser = _Parser(prog=PROG, add_help=True)
    parser.add_argument("verb", choices=VERBS)
    parser.add_argument("network")
    parser.add_argument("netns", nargs="?")
    return parser


def split_cni_args(text: str) -> tuple[tuple[str, str], ...]:
    """`K=V;K=V` as upstream reads CNI_ARGS: every pair needs exactly one '=', a key and a value."""
    if not text:
        return ()
    pairs = []
    for pair in text.split(";"):
        key, sep, value = pair.partition("=")
        if not sep or not key or not value or "=" in value:
            raise Failure(f"invalid CNI_ARGS pair {pair!r}")
        pairs.append((key, value))
    return tuple(pairs)


def parse_cap_args(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise Failure(f"CAP_ARGS is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise Failure(f"CAP_ARGS must be a JSON object, not {type(value).__name__}")
    return value


def absolute_netns(netns: str) -> str:
    """The absolute, cleaned path, as Go's filepath.Abs gives it (no '//' prefix kept)."""
    path = os.path.abspath(netns)
    return "/" + path.lstrip("/") if path.startswith("//") else path


def container_id(netns: str) -> str:
    return "cnitool-" + hashlib.sha512(absolute_netns(netns).encode()).hexdigest()[:20]


def run(verb: str, network: str, netns: str | None, env: Mapping[str, str]) -> int:
    net = load_network_list(env.get("NETCONFPATH") or DEFAULT_NETCONFPATH, network)
    capability_args = parse_cap_args(env.get("CAP_ARGS", ""))
    cni_args = split_cni_args(env.get("CNI_ARGS", ""))
    ifname = env.get("CNI_IFNAME", DEFAULT_IFNAME)
    plugin_dirs = [folder for folder in env.get("CNI_PATH", "").split(":") if folder]
    cni = CNI(plugin_dirs, cache_dir=env.get("CNI_CACHE_DIR") or DEFAULT_CACHE_DIR)
    if verb == "gc":
        cni.gc_network_list(net, None)
        return 0
    if verb == "status":
        cni.get_status_network_list(net)
        return 0
    assert netns is not None
    rt = RuntimeConf(
        container_id=container_id(netns),
        netns=absolute_netns(netns),
        ifname=ifname,
        args=cni_args,
        capability_args=capability_args,
    )
    if verb == "add":
        result = cni.add_network_list(net, rt)
        sys.stdout.write(json.dumps(result, indent=4) + "\n")
    elif verb == "check":
        cni.check_network_list(net, rt)
    else:
        cni.del_network_list(net, rt)
    return 0


def one_line(error: BaseException) -> str:
    """libcni's wording (`plugin type="bridge" name="net" failed (add): msg; details`) and the code, on one line."""
    text = str(error) or type(error).__name__
    if isinstance(error, CNIError):
        text += f" (code {error.code})"
    return f"{PROG}: " + " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.netns is None and args.verb not in NETNS_OPTIONAL:
        _parser().error("missing NETNS")
    try:
        return run(args.verb, args.network, args.netns, os.environ)
    except (CNIError, Failure, OSError) as error:
        sys.stderr.write(one_line(error) + "\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
