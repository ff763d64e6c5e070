"""Row keys and duplicate-group keys: stable 63-bit hashes of Arrow strings and the normalised text
duplicates are found by, computed column-wise (numpy and Arrow kernels, no Python per row).

The hash (`string_keys`) is defined by `reference_key`, its per-string definition: two polynomial hashes of
the string's UTF-8 bytes read as little-endian 32-bit words (zero-padded), modulo the primes 2^31 - 1 and
2^31 - 19, joined with the byte length and a key family, then mixed by MurmurHash3's 64-bit finaliser. It is
not cryptographic; it only has to spread ordinary ids and texts evenly and never change between versions.
Per-row hashlib.blake2b (the previous key) ran about 2 M short ids/s on one core; this runs about 10 M/s.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_PRIMES = (2_147_483_647, 2_147_483_629)
_BASES = (16_807, 48_271)
#: Key families: the same string gives unrelated keys in each (a row id never keys like a text).
FAMILIES = {"row": 0x243F6A8885A308D3, "text": 0x13198A2E03707344}
_LENGTH_MIX = 0x9E3779B97F4A7C15
#: Words hashed per numpy pass (bounds the temporaries to a few tens of MB).
_CHUNK_WORDS = 1 << 20
_U64 = (1 << 64) - 1


def _fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (a bijection of uint64)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(33))
        x = x * np.uint64(0xFF51AFD7ED558CCD)
        x = x ^ (x >> np.uint64(33))
        x = x * np.uint64(0xC4CEB9FE1A85EC53)
        return x ^ (x >> np.uint64(33))


def reference_key(value: str | bytes, family: str = "row") -> int:
    """The key of one string, written per word in plain Python: the definition `string_keys` vectorises."""
    data = value.encode() if isinstance(value, str) else bytes(value)
    words = np.frombuffer(data + b"\0" * (-len(data) % 4), dtype="<u4").tolist()
    parts = [
        sum(w * pow(b, j, p) for j, w in enumerate(words)) % p for p, b in zip(_PRIMES, _BASES, strict=True)
    ]
    x = ((parts[0] << 31) | parts[1]) ^ ((len(data) * _LENGTH_MIX) & _U64) ^ FAMILIES[family]
    return int(_fmix64(np.array([x], np.uint64))[0]) >> 1


def _powers(prime: int, base: int, n: int) -> np.ndarray:
    """base^j mod prime for j < n (uint64); tables grow by doubling and are kept per process."""
    return _power_table(prime, base, max(_CHUNK_WORDS, 1 << max(n - 1, 0).bit_length()))[:n]


@functools.cache
def _power_table(prime: int, base: int, n: int) -> np.ndarray:
    out = np.ones(1, np.uint64)
    step = base
    while len(out) < n:
        out = np.concatenate([out, out * np.uint64(step) % np.uint64(prime)])
        step = step * step % prime
    return out[:n]


def _padded_words(binary: pa.Array, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(words, first word of each row): the rows' bytes (of byte `lengths`) zero-padded to whole 32-bit
    words and laid end to end (Arrow's join kernel does the padding)."""
    pads = pa.array([b"", b"\0\0\0", b"\0\0", b"\0"], pa.binary())
    padded = pc.binary_join_element_wise(binary, pc.take(pads, pa.array(lengths % 4)), b"")
    offsets = np.frombuffer(padded.buffers()[1], np.int32, len(padded) + 1, padded.offset * 4)
    start, stop = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(padded.buffers()[2], np.uint8)[start:stop] if stop > start else np.zeros(0, np.uint8)
    words = np.ascontiguousarray(data).view("<u4").astype(np.uint64)
    return words, (offsets[:-1].astype(np.int64) - start) // 4


def _poly(words: np.ndarray, first: np.ndarray, nonempty: np.ndarray, prime: int, base: int) -> np.ndarray:
    """Per row, sum_j word_j * base^j mod prime, with j counted from the row's first word. The words carry
    powers of their position in the whole chunk; each row's sum is then shifted back by base^-first."""
    p = np.uint64(prime)
    out = np.zeros(len(first), np.uint64)
    if not len(words):
        return out
    terms = words * _powers(prime, base, len(words)) % p
    at = first[nonempty]
    inverse = _powers(prime, pow(base, prime - 2, prime), len(words))[at]
    out[nonempty] = np.add.reduceat(terms, at) % p * inverse % p
    return out


def string_keys(arr: pa.Array | pa.ChunkedArray, family: str = "row") -> np.ndarray:
    """63-bit keys (int64 >= 0) of non-null strings, equal to `reference_key` of each. Rows are hashed in
    chunks of about `_CHUNK_WORDS` words."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if arr.null_count:
        raise ValueError("string_keys: null strings have no key")
    n = len(arr)
    out = np.empty(n, np.int64)
    binary = arr.cast(pa.binary())
    lengths_all = pc.binary_length(binary).to_numpy(zero_copy_only=False).astype(np.int64)
    words_per_row = (lengths_all + 3) // 4
    ends = np.cumsum(words_per_row)
    lo = 0
    while lo < n:
        # At least one row per chunk, however long.
        base_words = ends[lo - 1] if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, base_words + _CHUNK_WORDS, side="right")))
        lengths = lengths_all[lo:hi]
        words, first = _padded_words(binary.slice(lo, hi - lo), lengths)
        nonempty = lengths > 0
        h1 = _poly(words, first, nonempty, _PRIMES[0], _BASES[0])
        h2 = _poly(words, first, nonempty, _PRIMES[1], _BASES[1])
        with np.errstate(over="ignore"):
            x = (h1 << np.uint64(31)) | h2
            x ^= lengths.astype(np.uint64) * np.uint64(_LENGTH_MIX)
            x ^= np.uint64(FAMILIES[family])
            out[lo:hi] = (_fmix64(x) >> np.uint64(1)).astype(np.int64)
        lo = hi
    return out


@functools.cache
def space_class() -> str:
    """A regex character class of the characters Python's str.strip() removes (all in the BMP)."""
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in map(chr, range(0x10000)) if c.isspace()) + "]"


def _general_normalised(text: pa.Array) -> pa.Array:
    text = pc.utf8_lower(pc.utf8_normalize(text, form="NFC"))
    return pc.replace_substring_regex(text, pattern=f"{space_class()}+", replacement=" ")


def _collapse_ascii_spaces(text: pa.Array) -> pa.Array:
    """Every run of ASCII whitespace bytes (those of `space_class`: 9-13 and 28-32) within a row made one
    space, in numpy over the data buffer (UTF-8 stays valid: only ASCII bytes change). No nulls. Comparisons,
    not a table lookup, and no per-byte cumulative sum: either cost more than the rest together."""
    n = len(text)
    offsets = np.frombuffer(text.buffers()[1], np.int32, n + 1, text.offset * 4).astype(np.int64)
    data = np.frombuffer(text.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    offsets -= offsets[0]
    space = (data == 32) | ((data >= 9) & (data <= 13)) | ((data >= 28) & (data <= 31))
    other = space & (data != 32)
    run = space[1:] & space[:-1]
    if not other.any() and not run.any():
        return text
    if other.any():
        data = np.where(other, np.uint8(32), data)
    drop = np.flatnonzero(run) + 1
    # A row's first byte follows no space of its own.
    drop = drop[offsets[np.searchsorted(offsets, drop, side="right") - 1] != drop]
    lengths = np.diff(offsets) - np.bincount(np.searchsorted(offsets, drop, side="right") - 1, minlength=n)
    new_offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=new_offsets[1:])
    return pa.StringArray.from_buffers(n, pa.py_buffer(new_offsets), pa.py_buffer(np.delete(data, drop)))


def normalised_text(text: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The text duplicates are found by: Unicode NFC, lower case, whitespace runs (the characters of
    `space_class`) collapsed to one space, trimmed; a null stays null.

    Rows of ASCII only are done in numpy over the bytes (ASCII lower case, runs of ASCII whitespace made one
    space); only rows with a non-ASCII byte take the general kernels (NFC, Unicode lower case, the regex of
    `space_class`), which ran about 2 M short rows/s against about 15 M/s for the ASCII path.
    """
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks() if text.num_chunks != 1 else text.chunk(0)
    nulls = text.is_null() if text.null_count else None
    filled = pc.fill_null(text, "") if nulls is not None else text
    out = _collapse_ascii_spaces(pc.ascii_lower(filled))
    general = pc.invert(pc.string_is_ascii(filled))
    if pc.any(general).as_py():
        out = pc.replace_with_mask(out, general, _general_normalised(filled.filter(general)))
    out = pc.utf8_trim_whitespace(out)
    return out if nulls is None else pc.if_else(nulls, pa.scalar(None, pa.string()), out)
