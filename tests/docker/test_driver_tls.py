"""TCP mode with TLS: the installed `cnipam-docker` serving HTTPS that requires a client
certificate, as a dockerd on another host would reach it (docs/security.md, fix
15). Certificates come from `trustme` CAs made here; a real dockerd using the
NAME.json spec is tests/e2e/test_docker_e2e.py::test_dockerd_reaches_the_driver_over_tls.

The plugin API has no authentication of its own, so these are the only gate: a client
with a certificate the CA signed is served; one without, one from another CA, and plain
HTTP are refused before any request is read, and the driver goes on serving.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnipam.core.errors import InvalidConfig
from cnipam.docker.settings import load
from tests.support.docker_driver import EXECUTABLE

trustme = pytest.importorskip("trustme")

pytestmark = pytest.mark.skipif(
    not os.path.exists(EXECUTABLE), reason="cnipam-docker is not installed next to this Python"
)


class Certificates:
    """A CA, the driver's certificate for 127.0.0.1, a client certificate it signed, and
    a client certificate of another CA; every one as PEM files in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.ca = trustme.CA()
        self.folder = folder
        self.ca_file = folder / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.server = self._write("driver", self.ca.issue_cert("127.0.0.1"))
        self.client = self._write("dockerd", self.ca.issue_cert("dockerd.example"))
        self.stranger = self._write("stranger", trustme.CA().issue_cert("dockerd.example"))

    def _write(self, name: str, leaf: Any) -> tuple[Path, Path]:
        cert, key = self.folder / f"{name}.pem", self.folder / f"{name}.key"
        leaf.private_key_pem.write_to_path(str(key))
        with open(cert, "wb") as out:
            for blob in leaf.cert_chain_pems:
                out.write(blob.bytes())
        return cert, key

    def client_context(self, pair: tuple[Path, Path] | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if pair is not None:
            context.load_cert_chain(str(pair[0]), str(pair[1]))
        return context


class TLSDriver:
    def __init__(self, folder: Path, certs: Certificates) -> None:
        self.spec_dir = folder / "spec"
        self.log = folder / "driver.log"
        self.name = "cnipamtls"
        argv = [
            EXECUTABLE, "--name", self.name, "-address", "127.0.0.1:0", "--spec-dir", str(self.spec_dir),
            "--db", str(folder / "ipam.db"), "-v4", "198.18.0.0/16",
            "--tls-cert", str(certs.server[0]), "--tls-key", str(certs.server[1]), "--tls-ca", str(certs.ca_file),
            "--spec-cert", str(certs.client[0]), "--spec-key", str(certs.client[1]),
        ]  # fmt: skip
        with open(self.log, "wb") as err:
            self.process = subprocess.Popen(argv, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not self.events("listening"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the driver did not start: {self.log.read_text()}")
            time.sleep(0.02)
        self.port = int(str(self.events("listening")[0]["address"]).rpartition(":")[2])

    def events(self, kind: str) -> list[dict[str, object]]:
        lines = self.log.read_text().splitlines()
        return [
            event
            for event in map(json.loads, (line for line in lines if line.startswith("{")))
            if event["event"] == kind
        ]

    def awaited(self, kind: str, within: float = 10.0) -> list[dict[str, object]]:
        """The events of `kind` once there is one: the driver logs a refused handshake on its
        own thread, possibly after the client has already seen the connection fail."""
        deadline = time.monotonic() + within
        while not (found := self.events(kind)) and time.monotonic() < deadline:
            time.sleep(0.02)
        return found

    def post(self, context: ssl.SSLContext, path: str = "/Plugin.Activate") -> tuple[int, dict[str, Any]]:
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=10)
        try:
            connection.request("POST", path, body=b"")
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(15)


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return Certificates(tmp_path)


@pytest.fixture
def driver(tmp_path: Path, certs: Certificates) -> Iterator[TLSDriver]:
    running = TLSDriver(tmp_path, certs)
    try:
        yield running
    finally:
        running.stop()


def test_a_client_with_a_certificate_of_the_ca_is_served(driver: TLSDriver, certs: Certificates) -> None:
    assert driver.post(certs.client_context(certs.client)) == (200, {"Implements": ["IpamDriver"]})
    status, reply = driver.post(certs.client_context(certs.client), "/IpamDriver.GetDefaultAddressSpaces")
    assert status == 200 and reply == {
        "LocalDefaultAddressSpace": "CnipamLocal",
        "GlobalDefaultAddressSpace": "CnipamGlobal",
    }


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
def test_a_client_without_a_certificate_of_the_ca_is_refused_before_any_request(
    driver: TLSDriver, certs: Certificates, who: str
) -> None:
    context = certs.client_context(None if who == "no certificate" else certs.stranger)
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        driver.post(context, "/IpamDriver.RequestPool")
    assert [event["error"] for event in driver.awaited("connection")]  # one line, naming the failed handshake
    assert driver.post(certs.client_context(certs.client))[0] == 200  # and the others are served as ever


def test_plain_http_gets_no_answer(driver: TLSDriver, certs: Certificates) -> None:
    with socket.create_connection(("127.0.0.1", driver.port), timeout=10) as plain:
        plain.sendall(b"POST /IpamDriver.ReleasePool HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        answer = b""
        try:
            while chunk := plain.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/1.1" not in answer and b"Err" not in answer
    assert driver.post(certs.client_context(certs.client))[0] == 200


def test_the_json_spec_tells_dockerd_how_to_connect_and_goes_on_exit(driver: TLSDriver, certs: Certificates) -> None:
    spec = driver.spec_dir / "cnipamtls.json"
    assert json.loads(spec.read_text()) == {
        "Name": "cnipamtls",
        "Addr": f"https://127.0.0.1:{driver.port}",
        "TLSConfig": {
            "InsecureSkipVerify": False,
            "CAFile": str(certs.ca_file),
            "CertFile": str(certs.client[0]),
            "KeyFile": str(certs.client[1]),
        },
    }
    assert not (driver.spec_dir / "cnipamtls.spec").exists()  # dockerd would read a .spec first
    assert driver.stop() == 0
    assert not spec.exists()


def test_tls_settings_are_refused_when_incomplete_and_open_any_address() -> None:
    files = ["--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-ca", "ca.pem"]
    assert load(["-address", "0.0.0.0:9000", *files], {}).tls is not None  # authenticated: no --public needed
    refusals = {
        "is for TCP mode": files,
        "--tls-ca missing": ["-address", "127.0.0.1:9000", *files[:4]],
        "--spec-cert and --spec-key go together": ["-address", "127.0.0.1:9000", *files, "--spec-cert", "d.pem"],
        "no authentication": ["-address", "0.0.0.0:9000"],
    }
    for message, argv in refusals.items():
        with pytest.raises(InvalidConfig, match=message):
            load(argv, {})


def test_unreadable_certificates_stop_the_start_with_one_line(tmp_path: Path, certs: Certificates) -> None:
    argv = [
        EXECUTABLE, "-address", "127.0.0.1:0", "--spec-dir", str(tmp_path / "spec"), "--db", str(tmp_path / "x.db"),
        "--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(certs.server[1]), "--tls-ca", str(certs.ca_file),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, timeout=30)
    err = done.stderr.decode()
    assert done.returncode == 2 and "Traceback" not in err, err
    assert "TLS: cannot load" in err and "missing.pem" in err
