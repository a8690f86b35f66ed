"""Fossil deltas (gateway/realtime/fossil.py): what create() writes, apply() and the centrifuge
SDK (tests/node/fossil_apply.mjs, the SDK's own code) turn back into the target, byte for byte;
a corrupted delta is refused."""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
from conftest import require
from support.sdk import NODE_DIR

from gateway.realtime import fossil
from gateway.realtime.fossil import DeltaError


def document(seed: int = 7, items: int = 28) -> dict[str, Any]:
    """A ~2 KB JSON document of the kind a channel republishes on every change."""
    rng = random.Random(seed)
    return {
        "board": "ops",
        "rev": 41,
        "owner": {"name": "Zoë Ångström", "city": "Malmö"},
        "items": [
            {
                "id": i,
                "title": rng.choice(["déploiement", "Привет мир", "部署完成", "status 🟢"]),
                "price": round(rng.random() * 1000, 2),
                "qty": rng.randrange(100),
                "tags": ["x", "y"][: rng.randrange(3)],
            }
            for i in range(items)
        ],
    }


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def edited(change: str) -> bytes:
    doc = document()
    if change == "number":
        doc["items"][6]["price"] = 12.5
    elif change == "insert_key":
        doc["items"][6]["note"] = "late"
    elif change == "delete_key":
        del doc["items"][6]["qty"]
    elif change == "accent":  # é (C3 A9) -> è (C3 A8): a byte-level copy would split it
        doc["owner"]["name"] = "Zoè Ångström"
    elif change == "emoji":
        doc["items"][3]["title"] = "status 🔴"
    return dumps(doc)


DOC = dumps(document())
RNG = random.Random(20240611)
RANDOM_SOURCE = RNG.randbytes(3000)


def mutated(data: bytes, rng: random.Random, edits: int) -> bytes:
    out = bytearray(data)
    for _ in range(edits):
        at = rng.randrange(len(out) + 1)
        kind = rng.randrange(3)
        if kind == 0:
            out[at:at] = rng.randbytes(rng.randrange(1, 40))
        elif kind == 1:
            del out[at : at + rng.randrange(1, 40)]
        else:
            out[at : at + 8] = rng.randbytes(8)
    return bytes(out)


BINARY = bytes(range(256)) * 8 + b"\n@:;,0~" * 20
LARGE = RNG.randbytes(300_000)  # integers of several digits
CORPUS: dict[str, tuple[bytes, bytes]] = {
    "empty_to_empty": (b"", b""),
    "empty_source": (b"", DOC),
    "empty_target": (DOC, b""),
    "identical": (DOC, DOC),
    "json_number_changed": (DOC, edited("number")),
    "json_key_inserted": (DOC, edited("insert_key")),
    "json_key_deleted": (DOC, edited("delete_key")),
    "json_accent_changed": (DOC, edited("accent")),
    "json_emoji_changed": (DOC, edited("emoji")),
    "json_totally_different": (DOC, dumps(document(seed=99, items=30))),
    "binary_edited": (BINARY, BINARY[:700] + b"\x00\xff\x80" + BINARY[710:]),
    "binary_vs_json": (BINARY, DOC),
    "random_unrelated": (RANDOM_SOURCE, RNG.randbytes(3000)),
    "random_few_edits": (RANDOM_SOURCE, mutated(RANDOM_SOURCE, RNG, 3)),
    "random_many_edits": (RANDOM_SOURCE, mutated(RANDOM_SOURCE, RNG, 60)),
    "random_shuffled_blocks": (
        RANDOM_SOURCE,
        b"".join(RNG.sample([RANDOM_SOURCE[i : i + 100] for i in range(0, 3000, 100)], 30)),
    ),
    "repetitive_appended": (b"ab" * 20000, b"ab" * 20000 + b"a"),
    "repetitive_edited": (b"ab" * 20000, b"ab" * 9000 + b"XYZ" + b"ab" * 11000),
    "zeros_longer": (b"\0" * 50000, b"\0" * 50001),
    "large_with_edit": (LARGE, LARGE[:150_000] + b"edit" + LARGE[150_004:]),
}
for size_a in (15, 16, 17):
    for size_b in (15, 16, 17):
        a = RNG.randbytes(size_a)
        CORPUS[f"window_{size_a}_to_{size_b}_unrelated"] = (a, RNG.randbytes(size_b))
        CORPUS[f"window_{size_a}_to_{size_b}_related"] = (a, (a + a)[:size_b])
    CORPUS[f"window_{size_a}_identical"] = (a, a)
    CORPUS[f"window_{size_a}_in_longer"] = (a, b"<" + a + b">")


def base64_digits(value: int) -> bytes:
    """``value`` written as the delta format writes integers (independently of fossil.py)."""
    digits = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
    out = b""
    while True:
        out = digits[value % 64 : value % 64 + 1] + out
        value //= 64
        if not value:
            return out


def is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("name", CORPUS)
def test_apply_restores_the_target(name: str) -> None:
    source, target = CORPUS[name]
    delta = fossil.create(source, target)
    assert fossil.apply(source, delta) == target
    # A target with nothing new costs no more than its size and a few commands.
    assert len(delta) <= len(target) + 24


@pytest.mark.parametrize("change", ["number", "insert_key", "delete_key", "accent", "emoji"])
def test_small_edit_to_a_2kb_document_costs_few_bytes(change: str) -> None:
    target = edited(change)
    delta = fossil.create(DOC, target)
    assert 1800 < len(DOC) < 2400
    assert len(delta) < 80, delta
    print(f"{change}: {len(delta)} bytes of delta for a {len(target)}-byte document")


def test_identical_data_is_one_copy() -> None:
    delta = fossil.create(DOC, DOC)
    assert delta.count(b"@") == 1
    assert b":" not in delta


def test_source_shorter_than_the_window_is_inserted_whole() -> None:
    assert fossil.create(b"0123456789", b"x") == b"1\n1:x" + b"%s;" % base64_digits(
        fossil.checksum(b"x")
    )


def test_integers_are_base64_most_significant_first() -> None:
    assert fossil.create(b"", b"") == b"0\n0;"
    assert fossil.create(b"", b"\0" * 64).startswith(b"10\n10:")
    assert fossil.create(b"", b"\0" * 4095).startswith(b"~~\n~~:")


def test_checksum_sums_big_endian_words_with_zero_padding() -> None:
    assert fossil.checksum(b"") == 0
    assert fossil.checksum(b"\x01") == 0x01000000
    assert fossil.checksum(b"\x00\x00\x00\x01\x00\x02") == 0x00020001
    assert fossil.checksum(b"\xff\xff\xff\xff" * 2) == 0xFFFFFFFE  # modulo 2**32


def test_delta_of_a_utf8_target_is_utf8() -> None:
    """JSON clients get the delta as a JSON string: it must never split a character, which
    byte-level copies around an edited multi-byte character would."""
    rng = random.Random(5)
    text = "Съешь же ещё этих мягких французских булок, да выпей чаю. 部署完成 🟢 Zoë " * 30
    for _ in range(300):
        chars = list(text)
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(chars))
            chars[at] = rng.choice("ёжЯé部🔴a")
        target = "".join(chars).encode()
        delta = fossil.create(text.encode(), target)
        delta.decode()  # raises if a character was split
        assert fossil.apply(text.encode(), delta) == target
    for name, (source, target) in CORPUS.items():
        if is_utf8(target):
            assert is_utf8(fossil.create(source, target)), name


GOOD_SOURCE = DOC
GOOD_DELTA = fossil.create(DOC, edited("number"))


def corrupted() -> Iterator[tuple[str, bytes, bytes, str]]:
    """(name, source, delta, what apply's error says) for deltas that must be refused."""
    checksum_at = GOOD_DELTA.rindex(b",") + 1
    wrong = (fossil.checksum(edited("number")) + 1) & 0xFFFFFFFF
    yield (
        "wrong checksum",
        GOOD_SOURCE,
        GOOD_DELTA[:checksum_at] + b"%s;" % base64_digits(wrong),
        "bad checksum",
    )
    yield "other source", dumps(document(seed=8)), GOOD_DELTA, "checksum"
    yield "no checksum", GOOD_SOURCE, GOOD_DELTA[:checksum_at], "truncated"
    yield "empty", GOOD_SOURCE, b"", "target length"
    yield "unknown command", GOOD_SOURCE, GOOD_DELTA.replace(b"@", b"!", 1), "unknown command"
    yield "copy past the source", b"short", GOOD_DELTA, "runs past the end"
    yield "insert past the delta", b"", b"5\n9:abcde", "truncated"
    yield "bytes after the checksum", GOOD_SOURCE, GOOD_DELTA + b"x", "after the checksum"
    yield (
        "longer than announced",
        b"",
        b"1\n2:ab" + base64_digits(fossil.checksum(b"ab")) + b";",
        "larger than",
    )
    yield (
        "shorter than announced",
        b"",
        b"3\n2:ab" + base64_digits(fossil.checksum(b"ab")) + b";",
        "announced",
    )


CORRUPTED = list(corrupted())


@pytest.mark.parametrize(
    ("source", "delta", "says"), [c[1:] for c in CORRUPTED], ids=[c[0] for c in CORRUPTED]
)
def test_corrupted_delta_is_refused(source: bytes, delta: bytes, says: str) -> None:
    with pytest.raises(DeltaError, match=says):
        fossil.apply(source, delta)


def test_every_truncation_is_refused() -> None:
    for cut in range(len(GOOD_DELTA)):
        with pytest.raises(DeltaError):
            fossil.apply(GOOD_SOURCE, GOOD_DELTA[:cut])


# The SDK side ------------------------------------------------------------------------------


def run_sdk(request: dict[str, Any]) -> dict[str, Any]:
    """tests/node/fossil_apply.mjs on ``request``: the SDK's own apply code, in Node."""
    node = shutil.which("node")
    require(node is not None, "node is not on PATH")
    require(
        (NODE_DIR / "node_modules" / "centrifuge").is_dir(),
        "npm ci in tests/node (make test does it)",
    )
    assert node is not None
    result = subprocess.run(
        [node, str(NODE_DIR / "fossil_apply.mjs")],
        cwd=NODE_DIR,
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def push(channel: str, pub: dict[str, Any]) -> str:
    """A publication push as the server writes it on the JSON protocol."""
    return json.dumps({"push": {"channel": channel, "pub": pub}}, ensure_ascii=False)


def delta_pub(source: bytes, target: bytes, offset: int) -> dict[str, Any]:
    """What a server puts in a publication of a delta-negotiated subscription: the delta when
    it is smaller, else the full data; either way ``data`` is a JSON string."""
    delta = fossil.create(source, target)
    if len(delta) < len(target):
        return {"data": delta.decode(), "delta": True, "offset": offset}
    return {"data": target.decode(), "offset": offset}


def publication_lines(channel: str, docs: list[bytes]) -> list[str]:
    """Pushes of ``docs`` in order: the first one full, as after a subscribe, then deltas."""
    lines = [push(channel, {"data": docs[0].decode(), "offset": 1})]
    for offset, (prev, doc) in enumerate(pairwise(docs), start=2):
        lines.append(push(channel, delta_pub(prev, doc, offset)))
    return lines


def test_sdk_applies_the_deltas_to_the_same_bytes() -> None:
    cases = [
        {"name": name, "source": b64(source), "delta": b64(fossil.create(source, target))}
        for name, (source, target) in CORPUS.items()
    ]
    answers = run_sdk({"bytes": cases})["bytes"]
    assert [a["name"] for a in answers] == list(CORPUS)
    for answer in answers:
        assert "error" not in answer, answer
        assert base64.b64decode(answer["target"]) == CORPUS[answer["name"]][1], answer["name"]


def test_sdk_refuses_the_corrupted_deltas() -> None:
    refused = [c for c in CORRUPTED if c[0] != "bytes after the checksum"]  # the SDK ignores them
    truncated = [(f"cut at {cut}", GOOD_SOURCE, GOOD_DELTA[:cut]) for cut in range(len(GOOD_DELTA))]
    cases = [
        {"name": name, "source": b64(source), "delta": b64(delta)}
        for name, source, delta, *_ in refused + truncated
    ]
    for answer in run_sdk({"bytes": cases})["bytes"]:
        assert "error" in answer, answer["name"]


def test_sdk_decodes_json_frames_of_deltas() -> None:
    """The JSON protocol path: the first publication full, then deltas, each data a JSON string."""
    channel = "board:ops"
    chains = {
        "edits": [DOC, edited("number"), edited("insert_key"), edited("delete_key"), DOC],
        "non_ascii": [DOC, edited("accent"), edited("emoji"), edited("accent")],
        "unrelated": [DOC, dumps(document(seed=99)), dumps({"x": '\n"\\;@:,\u2028'})],
    }
    frames = []
    for name, docs in chains.items():
        frames.append({"name": name, "lines": publication_lines(channel, docs)})
    answers = run_sdk({"frames": frames})["frames"]
    for answer, docs in zip(answers, chains.values(), strict=True):
        assert "error" not in answer, answer
        assert [base64.b64decode(v) for v in answer["values"]] == docs
        assert answer["data"] == [json.loads(doc) for doc in docs]


def test_sdk_subscription_reconstructs_publications() -> None:
    """A whole client: subscribe with delta 'fossil', the reply says ``delta: true``, then a
    full publication and deltas; the app sees the documents, the SDK counts the deltas."""
    channel = "board:ops"
    docs = [DOC, edited("number"), edited("insert_key"), edited("accent"), edited("emoji")]
    lines = publication_lines(channel, docs)
    subscribe = {"recoverable": True, "positioned": True, "epoch": "e1", "delta": True}
    session = run_sdk({"session": {"channel": channel, "subscribe": subscribe, "lines": lines}})[
        "session"
    ]
    assert session["errors"] == []
    assert session["subscribeRequest"]["delta"] == "fossil"
    assert session["publications"] == [json.loads(doc) for doc in docs]
    assert session["stats"]["numFullPayloads"] == 1
    assert session["stats"]["numDeltaPayloads"] == len(docs) - 1
    print(f"SDK delta stats: {session['stats']}")


def test_sdk_drops_the_connection_on_a_delta_without_a_base() -> None:
    """Why the first publication after a subscribe goes full: a delta the client has no base
    for throws in the SDK, which disconnects for good (code 2, bad protocol)."""
    channel = "board:ops"
    first = {"data": fossil.create(b"", DOC).decode(), "delta": True, "offset": 1}
    subscribe = {"recoverable": True, "positioned": True, "epoch": "e1", "delta": True}
    session = run_sdk(
        {"session": {"channel": channel, "subscribe": subscribe, "lines": [push(channel, first)]}}
    )["session"]
    assert session["publications"] == []
    assert any(error.startswith("disconnected: 2 ") for error in session["errors"])


def test_sdk_decodes_nothing_unless_the_subscribe_reply_says_delta() -> None:
    """Without ``delta: true`` in the subscribe result the SDK hands ``data`` to the app as it
    came: the JSON-string form is only for subscriptions the reply made delta ones."""
    channel = "board:ops"
    lines = publication_lines(channel, [DOC, edited("number")])
    subscribe = {"recoverable": True, "positioned": True, "epoch": "e1"}
    session = run_sdk({"session": {"channel": channel, "subscribe": subscribe, "lines": lines}})[
        "session"
    ]
    assert session["errors"] == []
    assert session["publications"] == [json.loads(line)["push"]["pub"]["data"] for line in lines]
    assert session["stats"]["numPublications"] == 0
