"""The `_json`-based codec must agree with the `json` package on every document."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnipam.core.errors import DecodeFailure
from cnipam.core.json_codec import MAX_INPUT, dumps, loads

documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(documents)
def test_round_trip_matches_json(value: object) -> None:
    assert loads(json.dumps(value)) == value
    assert json.loads(dumps(value)) == value
    assert loads(dumps(value).encode()) == value


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", r"Expecting value: line 1 column 1 \(char 0\)"),
        (b"   ", "Expecting value"),
        (b"{", "invalid JSON: Expecting property name"),
        (b'{"a": 1} x', "unexpected data at position 9"),
        (b"NaN", "NaN is not valid JSON"),
        (b'{"a": Infinity}', "Infinity is not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"a": "\x00"}', "NUL"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b" " * (MAX_INPUT + 1), "larger than"),
    ],
)
def test_bad_documents_are_decode_failures(data: bytes, message: str) -> None:
    with pytest.raises(DecodeFailure, match=message):
        loads(data)


def test_output_is_ascii() -> None:
    assert dumps({"é": "ü"}) == '{"\\u00e9":"\\u00fc"}'
