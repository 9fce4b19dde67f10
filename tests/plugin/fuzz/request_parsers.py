"""Coverage-guided fuzzing (atheris, libFuzzer) of everything the plugin parses before it
touches a store: the environment and stdin (`parse_request`), both config dialects
(`parse_ipam`) and the store selection (`StoreSettings.from_env`). Only CnipamError may
come out; anything else is a crash libFuzzer reports with the input that caused it.

Run: python tests/plugin/fuzz/request_parsers.py -runs=20000   (any libFuzzer flags work;
tests/plugin/test_fuzz_atheris.py runs a short, bounded session when atheris is installed)
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from cnipam.core.cni_request import parse_request
    from cnipam.core.errors import CnipamError
    from cnipam.core.ipam_dialect import parse_ipam
    from cnipam.store.settings import StoreSettings

COMMANDS = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "add", ""]
ENV_KEYS = [
    "CNI_CONTAINERID",
    "CNI_IFNAME",
    "CNI_ARGS",
    "IPAM_DB_PATH",
    "IPAM_DB_CONNECTION_TIMEOUT",
    "CNIPAM_STORE",
    "CNIPAM_HOST",
]


def one_input(data: bytes) -> None:
    """The first byte picks the command and which environment variable gets the second
    line; the rest is stdin, so the JSON seeds in corpus/ stay JSON."""
    if not data:
        return
    command = COMMANDS[data[0] % len(COMMANDS)]
    env = {"CNI_IFNAME": "eth0", "CNI_CONTAINERID": "c1"}
    body = data[1:]
    if data[0] >= 128:  # an environment value first, up to the first newline
        value, _, body = body.partition(b"\n")
        env[ENV_KEYS[data[0] % len(ENV_KEYS)]] = value.decode("utf-8", "replace").replace("\x00", "")
    try:
        request = parse_request(command, env, body)
        config = parse_ipam(request.config, request.args)
        ipam = request.config["ipam"]
        StoreSettings.from_env(env, config.data_dir, ipam.get("store") if isinstance(ipam, dict) else None)
    except CnipamError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
