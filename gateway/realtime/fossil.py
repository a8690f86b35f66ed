"""Fossil deltas for ``delta: "fossil"`` subscriptions: :func:`create` on the server,
:func:`apply` to check one.

A delta turns the bytes a subscriber already holds (the data of the previous publication it
received on the channel, the *source*) into the new publication's data (the *target*). The
format is Fossil SCM's (``www/delta_format.wiki``), as centrifuge-js 5.8.0 reads it::

    <target length> "\\n"
    <n> "@" <offset> ","     copy n bytes of the source, starting at offset
    <n> ":" <n bytes>        insert the next n bytes of the delta itself
    <checksum> ";"           the end: checksum of the whole target

The commands come in any number and order; the checksum ends the delta. Integers are unsigned,
most significant digit first, in base 64 with the digits ``0-9 A-Z _ a-z ~`` (``0`` is zero).
The checksum is the sum, modulo 2**32, of the target read as big-endian 32-bit words, the last
partial word padded with zero bytes.

How :func:`create` finds copies (Fossil's ``delta_create``): the source is cut into
``NHASH``-byte blocks, indexed by a rolling hash; a window of ``NHASH`` bytes slides over the
target one byte at a time, and where its hash names source blocks the match is extended both
ways; the longest copy is emitted when it is shorter than the bytes it stands for. A small edit
costs a few dozen bytes: one copy up to the edit, the new bytes, one copy after it. A target
with nothing in common with the source costs its own size plus a dozen bytes.

The rolling hash differs from Fossil's (an Adler-like pair of 16-bit sums): here the window's
``NHASH`` bytes, read as one 128-bit integer, are the key, and sliding by a byte is a shift, an
or and a mask. In Python that is what is cheap: indexing a 2 KB source took 23 us instead of
83 us, sliding over 2 KB of new bytes 206 us instead of 297 us (a side-by-side run of both on
the dev box), and a key never collides, so every candidate block matches the whole window.

JSON clients: the delta travels as a JSON string, so it must be valid UTF-8. Copies here never
start or end inside a UTF-8 character (a boundary falling on a continuation byte is moved to
the character's edge), so when the target is valid UTF-8 the delta is too. A byte-level copy
that kept the first byte of ``é`` (C3 A9) to insert the last byte of ``è`` (C3 A8) would
otherwise insert a lone A8, which a JSON encoder can only replace with U+FFFD, and the client
would fail to apply the delta (centrifugal/centrifuge#630 measured this on 24-59 % of deltas
of non-ASCII text).

What the caller does next (centrifuge's rules, which centrifuge-js 5.8.0 relies on):

1. negotiate: the subscribe request carries ``delta: "fossil"``; if the channel allows it the
   subscribe result says ``delta: true`` (centrifuge also wants positioning or recovery on, so
   that a gap cannot leave the client with a stale base). Without ``delta: true`` the SDK
   decodes nothing and hands ``data`` to the app as it came;
2. the first publication a subscriber gets after the subscribe reply (the first recovered one
   in the reply, else the first live one) goes full: on a first subscribe the SDK has no base,
   and a delta then throws inside it and it disconnects for good (code 2, bad protocol).
   Centrifuge's one exception: after a successful recovery that found nothing missed, the
   next live publication may be a delta, on the base the SDK kept from before (it keeps it
   across resubscribes); full is always safe;
3. from then on, once per publication and channel: ``delta = create(previous data, data)``,
   sent with ``"delta": true``; when ``len(delta) >= len(data)`` the full data instead;
4. over the JSON protocol every ``data`` of a delta subscription is a JSON string, passed to
   ``JSON.parse`` by the SDK: ``delta.decode()``, or the full data's JSON text. The client's
   base is the UTF-8 encoding of the string it got, which is the data itself only when the
   data is valid UTF-8: never send a delta for data that is not.

Limits: sources and targets under 4 GiB (centrifuge-js reads integers as 32-bit). Pure Python,
and the time grows with the target's bytes that no copy covers, since the window slides over
each of them. Measured by ``bench/fossil.py`` on the dev box: a 2 KB JSON document with one
value changed gives a 27-byte delta in ~66 us (json.dumps of it: ~37 us), 64 KB with one
change 30 bytes in ~1.4 ms (mostly indexing the source), 2 KB with nothing in common ~360 us.
No Tornado here.
"""

from __future__ import annotations

import struct

NHASH = 16
"""Bytes in a source block and in the window sliding over the target (Fossil's value)."""

MAX_CANDIDATES = 8
"""Source blocks tried per window position at most. Only repetitive sources have several
blocks with the same bytes. Fossil tries 250, but a try costs far more in Python than in C: a
64 KB source repeating one 16-byte block, the target inserting a byte every 20, took 436 ms at
64 tries and 61 ms at 8, while the test corpus' deltas came out the same size at both."""

_WINDOW_MASK = (1 << 8 * NHASH) - 1

MAX_SIZE = 2**32 - 1
"""Largest source or target: centrifuge-js computes delta integers in 32 bits."""

_DIGITS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
_DIGIT_VALUE = {digit: value for value, digit in enumerate(_DIGITS)}


class DeltaError(ValueError):
    """A delta that does not apply to this source: malformed, truncated, for another source, or
    with a checksum that does not match what it produced. The message says which, and where."""


def checksum(data: bytes | bytearray) -> int:
    """Fossil's 32-bit checksum of ``data``: the sum of its big-endian 32-bit words, the last
    one padded with zero bytes, modulo 2**32 (what centrifuge-js compares with the ``;``)."""
    padded = bytes(data) + b"\0" * (-len(data) % 4)
    words: tuple[int, ...] = struct.unpack(f">{len(padded) // 4}I", padded)
    return sum(words) & 0xFFFFFFFF


def create(source: bytes, target: bytes) -> bytes:
    """A delta that turns ``source`` into ``target`` (see the module docstring for what to do
    with it). Raises ValueError when either is larger than :data:`MAX_SIZE`."""
    if len(source) > MAX_SIZE or len(target) > MAX_SIZE:
        raise ValueError("fossil deltas are limited to 4 GiB sources and targets")
    out = bytearray(_int(len(target)) + b"\n")
    index = _index_blocks(source)
    target_len = len(target)
    base = 0  # target[:base] is written to out
    pos = 0  # the window is target[pos:pos + NHASH]
    last = target_len - NHASH  # the last window position
    window = int.from_bytes(target[:NHASH]) if index and last >= 0 else 0
    while index and pos <= last:
        copy = _best_copy(source, target, index.get(window), base, pos)
        if copy is not None:
            copy_start, copy_len, source_start = copy
            if copy_start > base:
                _put_insert(out, target[base:copy_start])
            out += _int(copy_len) + b"@" + _int(source_start) + b","
            base = pos = copy_start + copy_len
            if pos <= last:
                window = int.from_bytes(target[pos : pos + NHASH])
        elif pos < last:
            window = (window << 8 | target[pos + NHASH]) & _WINDOW_MASK
            pos += 1
        else:
            break
    if base < target_len:
        _put_insert(out, target[base:])
    out += _int(checksum(target)) + b";"
    return bytes(out)


def apply(source: bytes, delta: bytes) -> bytes:
    """The target ``delta`` encodes against ``source``; :class:`DeltaError` when it does not apply.

    Stricter than centrifuge-js, never looser: every delta accepted here the SDK turns into the
    same bytes, while some the SDK misreads are refused (an insert running past the end of the
    delta, which the SDK pads with zero bytes; a missing integer, which it reads as 0; bytes
    after the checksum, which it ignores)."""
    reader = _Reader(delta)
    size = reader.integer("target length")
    reader.expect(b"\n", "target length")
    out = bytearray()
    while not reader.at_end():
        at = reader.pos
        count = reader.integer("command")
        op = reader.byte("command")
        if op == 0x40:  # "@"
            offset = reader.integer("copy offset")
            reader.expect(b",", "copy")
            if offset + count > len(source):
                raise DeltaError(
                    f"copy of {count} bytes at source offset {offset} runs past the end of the "
                    f"{len(source)}-byte source (command at byte {at})"
                )
            if len(out) + count > size:
                raise DeltaError(f"copy at byte {at} makes the target larger than {size} bytes")
            out += source[offset : offset + count]
        elif op == 0x3A:  # ":"
            literal = reader.take(count)
            if len(out) + count > size:
                raise DeltaError(f"insert at byte {at} makes the target larger than {size} bytes")
            out += literal
        elif op == 0x3B:  # ";"
            if count != checksum(out):
                raise DeltaError(
                    f"bad checksum: the delta says {count:#010x}, the target it produced "
                    f"sums to {checksum(out):#010x}"
                )
            if len(out) != size:
                raise DeltaError(f"the delta produced {len(out)} bytes, it announced {size}")
            if not reader.at_end():
                raise DeltaError(f"{len(delta) - reader.pos} bytes after the checksum")
            return bytes(out)
        else:
            raise DeltaError(f"unknown command {bytes([op])!r} at byte {reader.pos - 1}")
    raise DeltaError(f"truncated: no checksum after {len(delta)} bytes")


def _int(value: int) -> bytes:
    if value == 0:
        return b"0"
    digits = bytearray()
    while value:
        digits.append(_DIGITS[value & 63])
        value >>= 6
    digits.reverse()
    return bytes(digits)


def _int_len(value: int) -> int:
    return max(1, (value.bit_length() + 5) // 6)


def _put_insert(out: bytearray, literal: bytes) -> None:
    out += _int(len(literal)) + b":" + literal


def _index_blocks(source: bytes) -> dict[int, list[int]]:
    """Start offsets of the source's whole ``NHASH``-byte blocks, by their bytes read as one
    big-endian integer (the key the window rolls through in :func:`create`)."""
    index: dict[int, list[int]] = {}
    for start in range(0, len(source) - NHASH + 1, NHASH):
        index.setdefault(int.from_bytes(source[start : start + NHASH]), []).append(start)
    return index


def _best_copy(
    source: bytes, target: bytes, blocks: list[int] | None, base: int, pos: int
) -> tuple[int, int, int] | None:
    """The longest worthwhile copy through the window at ``pos``, from one of ``blocks``, as
    (target start, length, source start); None when no candidate is worth a copy command."""
    if blocks is None:
        return None
    best: tuple[int, int, int] | None = None
    best_len = 0
    target_len = len(target)
    for block in blocks[:MAX_CANDIDATES]:
        # The key is the window itself: NHASH bytes are known to match.
        ahead = NHASH + _common_prefix(
            source,
            block + NHASH,
            target,
            pos + NHASH,
            min(len(source) - block, target_len - pos) - NHASH,
        )
        behind = _common_suffix(source, block, target, pos, min(block, pos - base))
        start, length, source_start = _whole_characters(
            target, pos - behind, behind + ahead, block - behind
        )
        # Fossil's rule: the copy must be longer than the commands it costs.
        cost = _int_len(start - base) + _int_len(length) + _int_len(source_start) + 3
        if length > best_len and length >= cost:
            best, best_len = (start, length, source_start), length
            if pos + ahead == target_len:
                break  # reaches the end of the target: nothing can be longer
    return best


def _whole_characters(
    target: bytes, start: int, length: int, source_start: int
) -> tuple[int, int, int]:
    """The copy shrunk so that it neither starts nor ends inside a UTF-8 character: no edge on a
    continuation byte (10xxxxxx). At most 3 bytes off each end."""
    end = start + length
    while start < end and target[start] & 0xC0 == 0x80:
        start += 1
        source_start += 1
    while start < end < len(target) and target[end] & 0xC0 == 0x80:
        end -= 1
    return start, end - start, source_start


def _common_prefix(a: bytes, i: int, b: bytes, j: int, limit: int) -> int:
    """The longest n <= limit with a[i:i+n] == b[j:j+n]: slices compared in C, the step
    doubling while they match and halving to find the first difference."""
    n = 0
    step = NHASH
    while n < limit:
        m = min(step, limit - n)
        if a[i + n : i + n + m] == b[j + n : j + n + m]:
            n += m
            step <<= 1
        elif m == 1:
            break
        else:
            step = m >> 1
    return n


def _common_suffix(a: bytes, i: int, b: bytes, j: int, limit: int) -> int:
    """The longest n <= limit with a[i-n:i] == b[j-n:j]."""
    n = 0
    step = NHASH
    while n < limit:
        m = min(step, limit - n)
        if a[i - n - m : i - n] == b[j - n - m : j - n]:
            n += m
            step <<= 1
        elif m == 1:
            break
        else:
            step = m >> 1
    return n


class _Reader:
    """A cursor over a delta; every failure names what was being read and where."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def integer(self, what: str) -> int:
        start = self.pos
        value = 0
        while self.pos < len(self.data):
            digit = _DIGIT_VALUE.get(self.data[self.pos])
            if digit is None:
                break
            value = value << 6 | digit
            self.pos += 1
        if self.pos == start:
            raise DeltaError(f"{what}: expected an integer at byte {start}")
        if value > MAX_SIZE:
            raise DeltaError(f"{what}: integer at byte {start} exceeds 32 bits")
        return value

    def byte(self, what: str) -> int:
        if self.at_end():
            raise DeltaError(f"truncated: {what} ends at byte {self.pos}")
        self.pos += 1
        return self.data[self.pos - 1]

    def expect(self, char: bytes, what: str) -> None:
        found = self.byte(what)
        if found != char[0]:
            raise DeltaError(
                f"{what}: expected {char!r} at byte {self.pos - 1}, found {bytes([found])!r}"
            )

    def take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise DeltaError(
                f"truncated: insert of {count} bytes at byte {self.pos}, "
                f"{len(self.data) - self.pos} left"
            )
        self.pos += count
        return self.data[self.pos - count : self.pos]
