"""The strict JSON decoder every untrusted input goes through: what plain json.loads accepts
but a JavaScript peer cannot read (NaN, lone surrogates) or Python cannot survive (deep nesting)
is refused with one error type."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.realtime import jsonsafe
from gateway.realtime.jsonsafe import MAX_DEPTH, JsonError


def nested(depth: int, inner: str = "1") -> str:
    """``depth`` containers around ``inner``, alternating arrays and objects."""
    text = inner
    for level in range(depth):
        text = f"[{text}]" if level % 2 == 0 else f'{{"k":{text}}}'
    return text


@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
@pytest.mark.parametrize(
    "text",
    [
        '{"id":1,"publish":{"channel":"chat:a","data":{"text":"héllo","n":[1,2.5,null,true]}}}',
        "[]",
        '""',
        "0",
        "-0.0",
        "1e308",
        "1e-400",  # underflows to 0.0: finite
        '"\\ud83d\\ude00"',  # a valid surrogate pair: one astral code point
        '"\\\\ud800"',  # an escaped backslash then the text ud800: no surrogate at all
        '{"s":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',
        str(2**64),
        str(-(2**200)),
        '  {"a" : 1 }\n',
    ],
)
def test_ordinary_json_decodes_as_json_loads_would(text: str, as_bytes: bool) -> None:
    data: str | bytes = text.encode() if as_bytes else text
    assert jsonsafe.loads(data) == json.loads(text)


def test_an_emoji_escaped_as_a_surrogate_pair_is_one_character() -> None:
    assert jsonsafe.loads('{"e":"\\ud83d\\ude00","f":"\\uD83D\\uDE00"}') == {"e": "😀", "f": "😀"}


def test_big_integers_stay_exact() -> None:
    assert jsonsafe.loads(b'{"n":123456789012345678901234567890}') == {
        "n": 123456789012345678901234567890
    }


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "[1,NaN]",
        '{"a":{"b":[Infinity]}}',
        '{"data":-Infinity}',
        '{"id":1,"publish":{"channel":"c","data":{"x":NaN}}}',
        "1e400",  # overflows to inf
        "-1e400",
        '{"x":[1.5e309]}',
        "1" + "0" * 400 + ".0",  # a long mantissa overflows too
    ],
)
def test_non_finite_numbers_are_refused(text: str) -> None:
    with pytest.raises(JsonError):
        jsonsafe.loads(text)
    with pytest.raises(JsonError):
        jsonsafe.loads(text.encode())


def test_nesting_up_to_the_limit_is_accepted_one_more_is_refused() -> None:
    assert MAX_DEPTH == 64
    assert jsonsafe.loads(nested(MAX_DEPTH)) == json.loads(nested(MAX_DEPTH))
    with pytest.raises(JsonError, match="nest"):
        jsonsafe.loads(nested(MAX_DEPTH + 1))
    assert jsonsafe.loads("[" * 3 + "]" * 3, max_depth=3) == [[[]]]
    with pytest.raises(JsonError):
        jsonsafe.loads("[" * 4 + "]" * 4, max_depth=3)
    with pytest.raises(JsonError):
        jsonsafe.loads('{"a":{"b":{"c":{}}}}', max_depth=3)


def test_depth_counts_nesting_not_brackets() -> None:
    wide = "[" + ",".join(["[1]"] * 5000) + "]"  # 5001 brackets, depth 2
    assert len(jsonsafe.loads(wide)) == 5000
    many_keys = "{" + ",".join(f'"k{i}":{{"v":[{i}]}}' for i in range(3000)) + "}"
    assert len(jsonsafe.loads(many_keys)) == 3000
    deep_in_a_string = '{"s":"' + "[" * 1000 + '"}'
    assert jsonsafe.loads(deep_in_a_string) == {"s": "[" * 1000}


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 5000, 60000])
def test_deep_nesting_is_a_json_error_not_a_recursion_error(depth: int) -> None:
    with pytest.raises(JsonError):
        jsonsafe.loads("[" * depth + "]" * depth)
    with pytest.raises(JsonError):
        jsonsafe.loads("[" * depth)  # unterminated, as an attacker sends it
    with pytest.raises(JsonError):
        jsonsafe.loads(('{"a":' * depth).encode())


@pytest.mark.parametrize(
    "text",
    [
        '"\\ud800"',
        '"\\udfff"',
        '"\\uD83D"',  # a high surrogate alone, upper-case hex
        '"x\\ude00"',  # a low surrogate alone
        '"\\ude00\\ud83d"',  # the pair in the wrong order
        '"\\ud83d\\u0041"',  # a high surrogate followed by something else
        '{"channel":"chat:\\ud800"}',
        '{"\\ud800":1}',  # in a key
        '[1,[2,{"a":["ok","\\udbff"]}]]',
        '"\\\\\\ud800"',  # an escaped backslash, then a real lone surrogate escape
    ],
)
def test_lone_surrogates_are_refused(text: str) -> None:
    with pytest.raises(JsonError, match="surrogate"):
        jsonsafe.loads(text)
    with pytest.raises(JsonError, match="surrogate"):
        jsonsafe.loads(text.encode())


def test_raw_surrogates_in_the_input_are_refused() -> None:
    with pytest.raises(JsonError):
        jsonsafe.loads('"\ud800"')  # a str holding a surrogate code point, not an escape
    with pytest.raises(JsonError):
        jsonsafe.loads(b'"\xed\xa0\x80"')  # the same surrogate encoded as (invalid) UTF-8


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"{",
        b"{} {}",
        b"[1,]",
        b"{'a':1}",
        b'"\xff"',  # not UTF-8
        b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
        '{"a":1}'.encode("utf-16"),  # json.loads would detect UTF-16; the wire is UTF-8
        b"1" * 5000,  # more digits than Python converts (sys.get_int_max_str_digits)
    ],
)
def test_malformed_input_is_a_json_error(data: bytes) -> None:
    with pytest.raises(JsonError):
        jsonsafe.loads(data)


def test_json_error_is_a_value_error() -> None:
    # Callers that already catch ValueError for bad JSON keep working.
    assert issubclass(JsonError, ValueError)


def test_small_commands_are_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    # The hot path: a command without many brackets or \u escapes is decoded and returned,
    # never walked in Python (the fan-out benchmark's publish commands look like this).
    def walked(*args: Any) -> None:
        raise AssertionError("walked a small command")

    monkeypatch.setattr(jsonsafe, "_walk", walked)
    command = '{"id":7,"publish":{"channel":"bench:room","data":{"t":1.5,"seq":3,"pad":"é"}}}'
    assert jsonsafe.loads(command)["id"] == 7
    with pytest.raises(AssertionError, match="walked"):
        jsonsafe.loads('{"a":"\\ud83d\\ude00"}')
