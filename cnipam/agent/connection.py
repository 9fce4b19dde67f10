"""One forwarded call on one connection: the request frame read within one deadline, the
answer computed and sent, one log line; or the call declined, untouched.

Shared by the agent's own threads (root's calls) and by the children that answer other
callers with their own credentials (forker.py), so both read, bound and log alike.
"""

from __future__ import annotations

import json
import os
import socket
import time

from ..agent_protocol import (
    MAX_REQUEST,
    Declined,
    FrameReader,
    ProtocolError,
    decode_request,
    encode_answer,
    encode_decline,
)
from ..plugin import run
from ..service import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..plugin import StoreOpener

    # (CNI command, CNI error code or 0, seconds the call took): a daemon's metrics
    Answered = Callable[[str, int, float], None]


def serve_call(
    conn: socket.socket,
    request_timeout: float,
    open_store: StoreOpener | None,
    answered: Answered | None = None,
    **context: object,
) -> None:
    """Read one request, whole, within `request_timeout` seconds of the connection being
    taken (a peer that trickles its bytes gets no more time than one that sends nothing),
    answer it with plugin.run and send the answer. `answered` is told of the call once it
    is answered; `context` is added to the log line."""
    started = time.monotonic()
    deadline = started + request_timeout
    try:
        reader = FrameReader(MAX_REQUEST)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            conn.settimeout(left)
            chunk = conn.recv(min(reader.wanted(), 1 << 16))
            if not chunk or reader.feed(chunk):
                break
        if reader.payload is None:
            log("dropped", reason="the plugin closed the connection before sending a whole request", **context)
            return
        request = decode_request(reader.payload)
        env = {os.fsdecode(key): os.fsdecode(value) for key, value in request.environ.items()}
        text, status = run(env, request.stdin, os.fsdecode(request.cwd), open_store)
        if answered is not None:
            answered(env.get("CNI_COMMAND", ""), cni_code(text, status), time.monotonic() - started)
        fields: dict[str, object] = {
            "command": env.get("CNI_COMMAND", ""),
            "container": env.get("CNI_CONTAINERID", ""),
            "ifname": env.get("CNI_IFNAME", ""),
            **call_subject(request.stdin, text, status),
            "status": status,
            **context,
        }
        if status:
            fields["answer"] = text.strip()
        frame = encode_answer(text.encode("utf-8", "surrogateescape"), status)
        conn.settimeout(request_timeout)  # a plugin that stops reading does not hold the thread either
        # Logged before the answer goes out: once the plugin has its answer, the log
        # already shows the call (what an operator, or a test, reads next).
        log("call", **fields, ms=round((time.monotonic() - started) * 1000, 2))
        conn.sendall(frame)
    except Declined as declined:
        log("declined", reason=declined.reason, **context)
        decline(conn, declined.reason)
    except TimeoutError:
        log("dropped", reason=f"no whole request within {request_timeout:g} s", **context)
    except ProtocolError as exc:
        log("dropped", reason=f"not a cnipamd request: {exc}", **context)
    except OSError as exc:
        log("dropped", reason=f"connection failed: {exc}", **context)
    except Exception as exc:  # a bug: logged as one line, the plugin answers 11, the agent goes on
        log("internal-error", error=f"{type(exc).__name__}: {exc}", **context)


def cni_code(text: str, status: int) -> int:
    """The CNI error code of a call's answer (0 for success)."""
    if not status:
        return 0
    try:
        return int(json.loads(text)["code"])
    except (ValueError, KeyError, TypeError):
        return 999


def call_subject(stdin: bytes, answer: str, status: int) -> dict[str, object]:
    """The network a call was for and the addresses its answer gave, for its log line:
    what an operator looks for when a container's address is in question. Best effort:
    a request the plugin refused may not even be JSON."""
    found: dict[str, object] = {}
    try:
        config = json.loads(stdin)
        result = json.loads(answer) if answer.strip() and not status else {}
    except ValueError:
        return found
    if isinstance(config, dict) and isinstance(config.get("name"), str):
        found["network"] = config["name"][:200]
    if isinstance(result, dict):
        given = [entry.get("address") for entry in result.get("ips") or [] if isinstance(entry, dict)]
        given += [result[old].get("ip") for old in ("ip4", "ip6") if isinstance(result.get(old), dict)]  # 0.1/0.2
        addresses = [address for address in given if isinstance(address, str)]
        if addresses:
            found["addresses"] = addresses
    return found


def decline(conn: socket.socket, reason: str) -> None:
    """Tell the plugin to run the call itself; nothing of the request is read. The frame
    is small enough for any socket buffer, so the send never waits."""
    try:
        conn.setblocking(False)
        conn.send(encode_decline(reason))
    except OSError:
        pass  # the plugin then finds the connection closed before its request went out: it runs directly too
