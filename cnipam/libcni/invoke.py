"""Finding a plugin executable and running it once (shared/reference/cni-spec.md §1,
libcni's pkg/invoke): the environment, stdin, the "text file busy" retry, the timeout, and
turning a failure into a CNIError with the plugin's own code, msg and details."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import CNIError, PluginError, PluginNotFound, PluginTimeout, ResultError, UnsupportedVersion

ETXTBSY_RETRIES = 5
ETXTBSY_SLEEP = 1.0


def find_plugin(plugin_type: str, dirs: Sequence[str]) -> str:
    """The first regular file named `plugin_type` in `dirs` (no exec-bit check, like libcni:
    a non-executable file then fails loudly at exec instead of being silently skipped)."""
    if not plugin_type:
        raise PluginNotFound("no plugin name provided")
    if "/" in plugin_type:
        raise PluginNotFound(f"invalid plugin name: {plugin_type}")
    if not dirs:
        raise PluginNotFound("no paths provided")
    for directory in dirs:
        path = os.path.join(directory, plugin_type)
        if os.path.isfile(path):
            return path
    raise PluginNotFound(f'failed to find plugin "{plugin_type}" in path [{" ".join(dirs)}]')  # Go's wording


def plugin_env(command: str, container_id: str, netns: str, ifname: str, cni_args: str, path: str) -> dict[str, str]:
    """The caller's environment with all six CNI_* variables set (possibly to ""), as
    libcni's Args.AsEnv does, so a stale CNI_* of the caller never leaks through."""
    env = dict(os.environ)
    env.update(
        CNI_COMMAND=command,
        CNI_CONTAINERID=container_id,
        CNI_NETNS=netns,
        CNI_IFNAME=ifname,
        CNI_ARGS=cni_args,
        CNI_PATH=path,
    )
    return env


def _quote(text: bytes) -> str:
    """Output quoted as Go's %q would (double quotes, escapes), for libcni's wording."""
    return json.dumps(text.decode(errors="replace").strip(), ensure_ascii=False)


def _failure(returncode: int, stdout: bytes, stderr: bytes) -> CNIError:
    """libcni's pluginErr: the error object on stdout, else stderr's text."""
    status = f"exit status {returncode}" if returncode >= 0 else f"signal: {-returncode}"
    if not stdout.strip():
        if not stderr.strip():
            return PluginError(f"netplugin failed with no error message: {status}")
        return PluginError(f"netplugin failed: {_quote(stderr)}: {status}")
    try:
        doc = json.loads(stdout)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict):
        return PluginError(f"netplugin failed but error parsing its diagnostic message {_quote(stdout)}")
    code = doc.get("code")
    return PluginError(
        str(doc.get("msg", "")),
        str(doc.get("details", "") or ""),
        code=code if isinstance(code, int) and not isinstance(code, bool) else 0,
    )


def exec_plugin(path: str, stdin: bytes, env: Mapping[str, str], timeout: float, forward_stderr: bool = True) -> bytes:
    """Run the plugin once and return its stdout; a non-zero exit raises the plugin's error.
    ETXTBSY (the file is being written, e.g. by a package upgrade) is retried 5 times, 1 s apart."""
    attempt = 0
    while True:
        try:
            done = subprocess.run([path], input=stdin, capture_output=True, env=dict(env), timeout=timeout, check=False)
            break
        except subprocess.TimeoutExpired:
            raise PluginTimeout(f"netplugin {path} timed out after {timeout:g} s and was killed") from None
        except OSError as err:
            if err.errno == errno.ETXTBSY and attempt < ETXTBSY_RETRIES:
                attempt += 1
                time.sleep(ETXTBSY_SLEEP)
                continue
            raise PluginError(f"netplugin failed with no error message: fork/exec {path}: {err.strerror}") from None
    if done.returncode != 0:
        raise _failure(done.returncode, done.stdout, done.stderr)
    if forward_stderr and done.stderr:
        sys.stderr.write(done.stderr.decode(errors="replace"))
    return done.stdout


def parse_result(stdout: bytes, config_version: str) -> dict[str, Any]:
    """The ADD result as the plugin gave it, in its own version: a result without cniVersion
    is taken to be in the config's version (libcni's fixupResultVersion). Converting it to
    the config's version is the caller's step; the result cache keeps it unconverted, as
    libcni's does."""
    try:
        doc = json.loads(stdout) if stdout.strip() else None
    except (ValueError, UnicodeDecodeError) as err:
        raise ResultError(f"failed to unmarshal raw result: {err}", stdout.decode(errors="replace")) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ResultError("failed to unmarshal raw result: not a JSON object", stdout.decode(errors="replace"))
    if not isinstance(doc.get("cniVersion"), str) or not doc["cniVersion"]:
        doc["cniVersion"] = config_version
    return doc


VERSION_STDIN = b'{"cniVersion":"1.1.0"}'


def version_info(path: str, timeout: float) -> list[str]:
    """The versions a plugin supports, from its VERSION answer (libcni's GetVersionInfo):
    a plugin predating VERSION is 0.1.0-only, a 0.2.0 answer without a list means 0.1.0+0.2.0."""
    env = plugin_env("VERSION", "", "dummy", "dummy", "", "dummy")
    try:
        stdout = exec_plugin(path, VERSION_STDIN, env, timeout, forward_stderr=False)
    except PluginError as err:
        if err.plain == "unknown CNI_COMMAND: VERSION":
            return ["0.1.0"]
        raise
    try:
        doc = json.loads(stdout)
    except (ValueError, UnicodeDecodeError) as err:
        raise ResultError(f"decoding version info: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cniVersion"), str) or not doc["cniVersion"]:
        raise ResultError("decoding version info: missing field cniVersion")
    supported = doc.get("supportedVersions") or []
    if not isinstance(supported, list) or not all(isinstance(v, str) for v in supported):
        raise ResultError("decoding version info: supportedVersions must be a list of strings")
    if not supported:
        if doc["cniVersion"] == "0.2.0":
            return ["0.1.0", "0.2.0"]
        raise ResultError("decoding version info: missing field supportedVersions")
    return list(supported)


def require_version(plugin_type: str, supported: list[str], version: str) -> None:
    if version not in supported:
        raise UnsupportedVersion(
            f'plugin {plugin_type} does not support config version "{version}"', f"plugin supports {supported}"
        )
