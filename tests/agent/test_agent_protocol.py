"""The frames between plugin and cnipamd (cnipam.agent_protocol), without any I/O:
round trips, and refusals of what a confused or hostile peer could send."""

from __future__ import annotations

import pytest

from cnipam.agent_protocol import (
    LENGTH_BYTES,
    MAX_ANSWER,
    MAX_REQUEST,
    STDIN_LIMIT,
    Declined,
    FrameReader,
    ProtocolError,
    decode_answer,
    decode_request,
    encode_answer,
    encode_decline,
    encode_request,
    frame,
)
from cnipam.core.json_codec import MAX_INPUT


def feed_all(data: bytes, limit: int, step: int = 3) -> bytes:
    reader = FrameReader(limit)
    for at in range(0, len(data), step):
        done = reader.feed(data[at : at + step])
        assert done == (at + step >= len(data))
    assert reader.payload is not None
    return reader.payload


def test_request_round_trip_in_small_pieces() -> None:
    environ = {b"CNI_COMMAND": b"ADD", b"WEIRD": b"a=b=\xff", b"EMPTY": b""}
    payload = feed_all(encode_request(b"/some/where", b'{"cniVersion":"1.0.0"}', environ), MAX_REQUEST)
    request = decode_request(payload)
    assert (request.cwd, request.stdin, request.environ) == (b"/some/where", b'{"cniVersion":"1.0.0"}', environ)


def test_answer_round_trip() -> None:
    assert decode_answer(feed_all(encode_answer(b'{"code":7}\n', 1), MAX_ANSWER)) == (b'{"code":7}\n', 1)
    assert decode_answer(feed_all(encode_answer(b"", 0), MAX_ANSWER, step=1)) == (b"", 0)


def test_a_decline_carries_its_reason_and_is_never_an_answer() -> None:
    with pytest.raises(Declined) as declined:
        decode_answer(feed_all(encode_decline("cnipamd answers only root; ü"), MAX_ANSWER))
    assert declined.value.reason == "cnipamd answers only root; ü"
    with pytest.raises(Declined) as declined:
        decode_answer(feed_all(encode_decline("x" * 5000), MAX_ANSWER))
    assert len(declined.value.reason) == 1024


def test_the_plugin_forwards_as_much_stdin_as_it_would_read_itself() -> None:
    assert STDIN_LIMIT == MAX_INPUT + 1  # so "over 1 MiB" is refused alike on both paths
    assert len(decode_request(encode_request(b"/", b"x" * STDIN_LIMIT, {})[LENGTH_BYTES:]).stdin) == STDIN_LIMIT
    with pytest.raises(ProtocolError):
        encode_request(b"/", b"x" * (STDIN_LIMIT + 1), {})


def test_oversized_frame_is_refused_from_its_length_alone() -> None:
    reader = FrameReader(100)
    with pytest.raises(ProtocolError, match="exceeds"):
        reader.feed((101).to_bytes(LENGTH_BYTES, "big"))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"A\x00",
        b"Q",
        b"Q\x00\x00\x00\x05ab",
        b"Q\x00\x00\x00\x01/\x00\x00\x00\x00\x00\x00\x00\x03KEY",
        b"Q\x00\x00",
    ],
)
def test_malformed_requests_are_refused(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_request(payload)


def test_bytes_after_the_frame_are_refused() -> None:
    with pytest.raises(ProtocolError):
        FrameReader(100).feed(frame(b"A\x00") + b"extra")
    with pytest.raises(ProtocolError):
        encode_answer(b"", 256)
