"""Row keys and the normalised text: the vectorised functions against their per-row definitions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.data import row_keys
from pipeline.data.row_keys import normalised_text, reference_key, string_keys

_VALUES = ["", "a", "ab", "abc", "abcd", "abcde", "é", "doc-1", "\0", "\0\0", "x" * 1001, "日本語のテキスト"]


def test_keys_equal_the_per_string_definition_and_differ():
    got = string_keys(pa.array(_VALUES, pa.string()))
    assert got.tolist() == [reference_key(v) for v in _VALUES]
    assert len(set(got.tolist())) == len(_VALUES)  # trailing zero bytes are not padding
    assert (got >= 0).all()


def test_keys_never_change_between_versions():
    """Splits and row ids are made from these keys: a change would re-split every user's corpus."""
    assert reference_key("") == 4424467553667653897
    assert reference_key("doc-1") == 6105495281957758835
    assert reference_key("EU law 32006R1234") == 6024480549006616617
    assert reference_key("é ü", "text") == 8847173182807929381


def test_families_give_unrelated_keys():
    arr = pa.array(_VALUES, pa.string())
    assert not set(string_keys(arr, "row").tolist()) & set(string_keys(arr, "text").tolist())


def test_chunks_slices_and_rows_longer_than_a_chunk(monkeypatch):
    monkeypatch.setattr(row_keys, "_CHUNK_WORDS", 4)
    row_keys._power_table.cache_clear()
    try:
        arr = pa.chunked_array([pa.array(_VALUES[3:]), pa.array(_VALUES[:3])])
        assert string_keys(arr).tolist() == [reference_key(v) for v in _VALUES[3:] + _VALUES[:3]]
        sliced = pa.array(_VALUES).slice(5, 4)
        assert string_keys(sliced).tolist() == [reference_key(v) for v in _VALUES[5:9]]
        assert string_keys(pa.array([], pa.string())).tolist() == []
    finally:
        row_keys._power_table.cache_clear()


def test_keys_of_many_ids_are_distinct_and_null_is_refused():
    ids = pc.binary_join_element_wise("doc-", pc.cast(pa.array(np.arange(200_000)), pa.string()), "")
    keys = string_keys(ids)
    assert len(np.unique(keys)) == len(ids)
    sample = np.random.default_rng(0).choice(len(ids), 50, replace=False)
    assert all(keys[i] == reference_key(ids[int(i)].as_py()) for i in sample)
    with pytest.raises(ValueError, match="null"):
        string_keys(pa.array(["a", None]))


def _general(text: pa.Array) -> pa.Array:
    """The definition: the general Unicode kernels on every row."""
    text = pc.utf8_lower(pc.utf8_normalize(text, form="NFC"))
    text = pc.replace_substring_regex(text, pattern=f"{row_keys.space_class()}+", replacement=" ")
    return pc.utf8_trim_whitespace(text)


def test_normalised_text_equals_the_general_kernels():
    rng = np.random.default_rng(0)
    alphabet = list("aB  \t\n\x0b\x0c\r\x1c\x1f\x85é\u3000\u00a0\u0301Z.İ")
    for trial in range(300):
        values = ["".join(rng.choice(alphabet, rng.integers(0, 8))) for _ in range(rng.integers(1, 30))]
        if trial % 3 == 0:
            values[rng.integers(len(values))] = None
        arr = pa.array(values, pa.string())
        if trial % 5 == 0 and len(arr) > 2:
            arr = arr.slice(1)
        assert normalised_text(arr).equals(_general(arr)), arr
    assert normalised_text(pa.array(["  A\t\tb  ", "x\u3000 y"])).to_pylist() == ["a b", "x y"]
    assert normalised_text(pa.array(["", ""])).to_pylist() == ["", ""]
    assert normalised_text(pa.array([], pa.string())).to_pylist() == []
