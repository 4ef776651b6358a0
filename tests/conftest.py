"""Shared fixtures. Layout of tests/: one folder per package of `videomt_jax` (tests/<package>/test_<module>.py,
e.g. tests/modeling/test_content.py for videomt_jax/modeling/content.py), top-level modules at the top
(tests/test_processing.py), the public contract in tests/test_contract.py, the package face in
tests/test_package.py; helpers that build real checkpoints and datasets in tests/helpers/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.datasets import write_coco, write_vipseg, write_vspw, write_ytvis
from tests.helpers.recipes import small_recipe_file


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules marked slow (`pytestmark = pytest.mark.slow`: several processes, many compiles) run
    first: with `make test`'s `-n 2 --dist loadfile` their minutes overlap the many short files
    instead of trailing at the end (a stable sort: the order within each group is kept)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """A folder holding small YouTube-VIS 2019, VIPSeg, VSPW and COCO datasets in their release layouts."""
    for write in (write_ytvis, write_vipseg, write_vspw, write_coco):
        write(tmp_path)
    return tmp_path


@pytest.fixture
def small_recipe(tmp_path: Path) -> Callable[[str], str]:
    """`small_recipe("ytvis19-vits")`: the path of a recipe file, that paper recipe with a test-sized model."""
    return lambda base: small_recipe_file(tmp_path, base)
