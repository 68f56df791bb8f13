"""The master -> shard mapping of fastdispatch.ray is stable (needs no Ray)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import run_python, subprocess_env
from fastdispatch.ray import shard_index, stable_hash

MASTERS_CODE = """
masters = [None, True, False, 0, 1, -7, 2**70, 1.5, -0.25, "", "m", "ключ", "\\udc80",
           b"", b"\\x00m", (), ("a", 1), (("n", b"x"), 2.5, None), frozenset()]
masters += [f"user-{i}" for i in range(200)] + [(i, str(i)) for i in range(50)]
"""


def test_same_shard_in_processes_with_different_hash_seeds() -> None:
    code = (
        MASTERS_CODE
        + "import json, sys\n"
        + "from fastdispatch.ray import shard_index, stable_hash\n"
        + "masters = [m for m in masters if not isinstance(m, frozenset)]\n"
        + "print(json.dumps([[stable_hash(m), shard_index(m, 7)] for m in masters]))\n"
    )
    outputs = []
    for seed in ("1", "2"):
        result = run_python(code, subprocess_env(None, PYTHONHASHSEED=seed))
        assert result.returncode == 0, result.stderr
        outputs.append(json.loads(result.stdout))
    assert outputs[0] == outputs[1]
    # and a salted hash() would not have been: the test can tell the difference
    salted = "print(hash('user-1') % 7, hash('user-2') % 7, hash('user-3') % 7)"
    seen = {
        run_python(salted, subprocess_env(None, PYTHONHASHSEED=seed)).stdout
        for seed in ("1", "2", "3")
    }
    assert len(seen) > 1
    # every shard gets some of the 200 str masters
    assert {shard for _h, shard in outputs[0]} == set(range(7))


@pytest.mark.parametrize(
    ("a", "b"),
    [(1, 1.0), (1, True), (0, False), (0.0, -0.0), (("k", 1), ("k", 1.0)), (2**70, float(2**70))],
)
def test_keys_equal_as_dict_keys_land_together(a: Any, b: Any) -> None:
    assert a == b and hash(a) == hash(b)
    assert stable_hash(a) == stable_hash(b)


@pytest.mark.parametrize(("a", "b"), [("1", 1), (b"m", "m"), (("a", "b"), ("ab",)), (1, 1.5)])
def test_different_keys_hash_apart(a: Any, b: Any) -> None:
    assert stable_hash(a) != stable_hash(b)


def test_shard_index_range_and_bad_master() -> None:
    assert all(0 <= shard_index(f"m{i}", 3) < 3 for i in range(100))
    with pytest.raises(TypeError, match="cannot be hashed stably"):
        stable_hash(lambda: None)
