"""Importer rules that need no store: sizes and part sizes."""

from __future__ import annotations

import pytest

from kova.image.importer import MAX_PARTS, PART_SIZE, part_size_for

MiB, GiB, TiB = 1 << 20, 1 << 30, 1 << 40


@pytest.mark.parametrize("total", [None, 1, 100 * GiB, 156 * GiB, 157 * GiB, 500 * GiB, TiB])
def test_parts_stay_within_the_s3_limit(total: int | None) -> None:
    size = part_size_for(total)
    assert size >= PART_SIZE and size % MiB == 0
    if total is not None:
        assert -(-total // size) <= MAX_PARTS
        assert size == PART_SIZE or -(-total // (size - MiB)) > MAX_PARTS  # no larger than needed
