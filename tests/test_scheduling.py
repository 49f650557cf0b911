"""How `make test` hands tests to its two workers (tests/conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests.conftest import costly_first


@dataclass
class Item:
    nodeid: str
    markers: dict[str, pytest.MarkDecorator] = field(default_factory=dict)

    def get_closest_marker(self, name: str):
        decorator = self.markers.get(name)
        return None if decorator is None else decorator.mark


def item(nodeid: str, group: str | None = None, *, costly: bool = False) -> Item:
    markers = {}
    if group is not None:
        markers["xdist_group"] = pytest.mark.xdist_group(group)
    if costly:
        markers["costly"] = pytest.mark.costly
    return Item(nodeid, markers)


def test_the_groups_of_costly_tests_come_first_each_whole_and_in_collection_order():
    items = [
        item("a.py::cheap"),
        item("b.py::first", "shared"),  # a group with one costly test: all of it moves
        item("c.py::alone", costly=True),
        item("d.py::one", "module:d.py"),
        item("e.py::costly", "shared", costly=True),
        item("d.py::two", "module:d.py"),
        item("f.py::named", group=None),
    ]
    items[-1].markers["xdist_group"] = pytest.mark.xdist_group(name="module:d.py")  # by keyword
    costly_first(items)
    assert [i.nodeid for i in items] == [
        "b.py::first",
        "c.py::alone",
        "e.py::costly",
        "a.py::cheap",
        "d.py::one",
        "d.py::two",
        "f.py::named",
    ]


def test_without_a_costly_test_the_order_is_the_collection_s():
    items = [item("b.py::x", "g"), item("a.py::y"), item("b.py::z", "g")]
    costly_first(items)
    assert [i.nodeid for i in items] == ["b.py::x", "a.py::y", "b.py::z"]
