"""hbwrap.record behaves as dataclasses does for what hbwrap uses: each case is run on both and compared."""
from __future__ import annotations

import dataclasses
import enum
import math
import pickle
from typing import ClassVar

import pytest

from hbwrap import record as rec
from hbwrap.record import FrozenInstanceError, MISSING, asdict, field, fields, is_record, record, replace


class Color(str, enum.Enum):
    RED = "red"


def make(kind: str, frozen: bool = False):
    """The same class declared as a record (`kind` "record") or as a dataclass ("dataclass")."""
    deco = (record(frozen=frozen) if kind == "record" else dataclasses.dataclass(frozen=frozen))
    fld = field if kind == "record" else dataclasses.field

    @deco
    class Point:
        limit: ClassVar[int] = 10
        x: int
        y: int = 0
        tags: list = fld(default_factory=list)
        note: str | None = fld(default=None, metadata={"kind": "str?"})

        @property
        def total(self) -> int:
            return self.x + self.y

    return Point


BOTH = pytest.mark.parametrize("kind", ["record", "dataclass"])
CLASSES = {(kind, frozen): make(kind, frozen) for kind in ("record", "dataclass") for frozen in (False, True)}


def pair(frozen=False):
    return CLASSES[("record", frozen)], CLASSES[("dataclass", frozen)]


def outcome(fn):
    """What calling fn gives: its value's repr, or the exception's type and message."""
    try:
        return ("ok", repr(fn()))
    except Exception as exc:  # noqa: BLE001 - the point is to compare any exception
        return (type(exc).__name__, str(exc).replace("Point", "P"))


CALLS = [
    ((1,), {}), ((1, 2), {}), ((1, 2, ["a"], "n"), {}), ((), {"x": 1, "note": "n"}), ((1,), {"tags": [1]}),
    ((), {}),                       # missing x
    ((1, 2, [], None, 5), {}),      # one positional too many
    ((1,), {"x": 2}),               # x twice
    ((1,), {"z": 3}),               # unknown keyword
    ((1,), {"z": 3, "w": 4}),
    ((1,), {"w": 3, "x": 2}),       # the first bad keyword is named, as CPython binds them
    ((1,), {"x": 2, "w": 3}),
    ((1, 2, [], None, 5), {"w": 1}),
    ((), {"y": 1}),
]


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("args,kwargs", CALLS)
def test_construction_and_its_type_errors_match_dataclasses(frozen, args, kwargs):
    r, d = pair(frozen)
    assert outcome(lambda: r(*args, **kwargs)) == outcome(lambda: d(*args, **kwargs))


def test_missing_arguments_are_all_named():
    @record
    class Three:
        a: int
        b: int
        c: int

    with pytest.raises(TypeError, match=r"<locals>.Three.__init__\(\) missing 3 required positional arguments: "
                                        r"'a', 'b', and 'c'$"):
        Three()
    with pytest.raises(TypeError, match=r"missing 2 required positional arguments: 'b' and 'c'$"):
        Three(1)
    with pytest.raises(TypeError, match=r"<locals>.Three.__init__\(\) takes 4 positional arguments but 5 were given$"):
        Three(1, 2, 3, 4)


def test_a_record_without_fields():
    @record(frozen=True)
    class Empty:
        pass

    assert Empty() == Empty() and repr(Empty()).endswith(".<locals>.Empty()") and hash(Empty()) == hash(())
    with pytest.raises(TypeError, match=r"takes 1 positional argument but 2 were given"):
        Empty(1)


@BOTH
def test_defaults_factories_classvars_and_class_attributes(kind):
    cls = CLASSES[(kind, False)]
    a, b = cls(1), cls(1)
    assert a.tags == [] and a.tags is not b.tags  # a new list per instance
    assert cls.y == 0 and cls.note is None and not hasattr(cls, "tags")  # as dataclasses leaves them
    assert cls.limit == 10 and "limit" not in [f.name for f in (fields if kind == "record" else dataclasses.fields)(cls)]
    assert a.total == 1


def test_fields_are_in_order_with_their_metadata():
    r, d = pair()
    got = [(f.name, f.type, f.default, f.default_factory, dict(f.metadata)) for f in fields(r)]
    want = [(f.name, f.type, f.default, f.default_factory, dict(f.metadata)) for f in dataclasses.fields(d)]
    assert [g[0] for g in got] == ["x", "y", "tags", "note"]
    assert [g[:2] for g in got] == [w[:2] for w in want]
    assert got[1][2] == 0 and got[2][3] is list and got[3][4] == {"kind": "str?"}
    assert got[0][2] is MISSING and got[0][3] is MISSING
    assert fields(r(1)) == fields(r)
    with pytest.raises(TypeError, match="must be called with a record type or instance"):
        fields(object())


@pytest.mark.parametrize("frozen", [False, True])
def test_repr_eq_and_hash_match_dataclasses(frozen):
    r, d = pair(frozen)
    for args in ((1,), (1, 2, ["t"], "n")):
        assert repr(r(*args)).replace("make.<locals>.", "") == repr(d(*args)).replace("make.<locals>.", "")
        assert (r(*args) == r(*args)) and not (r(*args) != r(*args))
    assert r(1) != r(2) and r(1) != d(1) and r(1).__eq__(d(1)) is NotImplemented
    same = r(1, 0, [], None)
    assert same == same
    if frozen:
        assert hash(r(1, 2, (), "n")) == hash(d(1, 2, (), "n"))
        with pytest.raises(TypeError):
            hash(r(1))  # its default list is unhashable, as with dataclasses
    else:
        assert r.__hash__ is None and d.__hash__ is None
        with pytest.raises(TypeError):
            hash(r(1))


def test_eq_compares_field_values_as_a_tuple_does():
    r, d = pair()
    nan = float("nan")
    assert r(nan) == r(nan) and d(nan) == d(nan)  # the same NaN object: a tuple compares identical items as equal
    assert r(float("nan")) != r(float("nan")) and d(float("nan")) != d(float("nan"))  # two NaNs do not


def test_frozen_records_refuse_assignment_and_deletion_like_dataclasses():
    r, d = pair(frozen=True)
    for obj in (r(1), d(1)):
        with pytest.raises(AttributeError, match="cannot assign to field 'x'"):
            obj.x = 2
        with pytest.raises(AttributeError, match="cannot assign to field 'other'"):
            obj.other = 2
        with pytest.raises(AttributeError, match="cannot delete field 'x'"):
            del obj.x
    with pytest.raises(FrozenInstanceError):
        r(1).x = 2
    assert issubclass(FrozenInstanceError, AttributeError)
    assert r(1).x == 1


def test_mutable_records_allow_assignment():
    r, _ = pair()
    p = r(1)
    p.x, p.extra = 5, "e"
    assert p.x == 5 and p.extra == "e" and p == r(5)


def test_post_init_runs_after_the_fields_are_set():
    @record(frozen=True)
    class Checked:
        low: int
        high: int = 10

        def __post_init__(self):
            if self.low > self.high:
                raise ValueError("low above high")
            object.__setattr__(self, "span", self.high - self.low)

    assert Checked(3).span == 7
    with pytest.raises(ValueError, match="low above high"):
        Checked(11)


def test_methods_the_class_defines_are_kept():
    @record
    class Own:
        a: int

        def __repr__(self):
            return "own"

        def __eq__(self, other):
            return True

        __hash__ = object.__hash__

    assert repr(Own(1)) == "own" and Own(1) == Own(2) and isinstance(hash(Own(1)), int)

    with pytest.raises(TypeError, match="Cannot overwrite attribute __setattr__ in class Bad"):
        @record(frozen=True)
        class Bad:
            a: int

            def __setattr__(self, name, value):
                pass


def test_declaration_errors_match_dataclasses():
    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument"):
        @record
        class Order:
            a: int = 1
            b: int

    with pytest.raises(ValueError, match="mutable default <class 'list'> for field a is not allowed"):
        @record
        class Shared:
            a: list = []

    with pytest.raises(ValueError, match="cannot specify both default and default_factory"):
        field(default=1, default_factory=int)


def test_inherited_fields_come_first():
    @record
    class Base:
        a: int
        b: int = 2

    @record
    class Child(Base):
        c: int = 3
        b: int = 20

    assert [f.name for f in fields(Child)] == ["a", "b", "c"]
    assert Child(1) == Child(1, 20, 3) and repr(Child(1)).endswith(".Child(a=1, b=20, c=3)")


@pytest.mark.parametrize("frozen", [False, True])
def test_replace_matches_dataclasses(frozen):
    r, d = pair(frozen)
    for changes in ({}, {"y": 5}, {"x": 0, "note": "n"}, {"tags": [1, 2]}):
        got = replace(r(1, 2, ["t"]), **changes)
        want = dataclasses.replace(d(1, 2, ["t"]), **changes)
        assert [getattr(got, f.name) for f in fields(got)] == [getattr(want, f.name) for f in dataclasses.fields(want)]
    original = r(1, 2)
    assert replace(original, y=3) is not original and original.y == 2
    assert outcome(lambda: replace(r(1), z=1)) == outcome(lambda: dataclasses.replace(d(1), z=1))
    with pytest.raises(TypeError, match="replace\\(\\) should be called on record instances"):
        replace(r, x=1)
    with pytest.raises(TypeError):
        replace(object())


def test_replace_runs_post_init():
    @record(frozen=True)
    class Pos:
        v: int

        def __post_init__(self):
            if self.v < 0:
                raise ValueError("negative")

    with pytest.raises(ValueError):
        replace(Pos(1), v=-1)


def test_asdict_recurses_like_dataclasses():
    @record
    class Inner:
        n: int
        color: Color = Color.RED

    @dataclasses.dataclass
    class DInner:
        n: int
        color: Color = Color.RED

    @record(frozen=True)
    class Outer:
        inner: Inner
        items: tuple
        table: dict
        plain: list
        real: DInner
        mixed: tuple = ()

    value = Outer(Inner(1), (Inner(2), 3, "s"), {"k": Inner(4), 5: [Inner(6)]}, [{"deep": {1, 2}}], DInner(7),
                  (math.pi, None, b"x", True))
    got = asdict(value)
    assert got == {"inner": {"n": 1, "color": Color.RED}, "items": ({"n": 2, "color": Color.RED}, 3, "s"),
                   "table": {"k": {"n": 4, "color": Color.RED}, 5: [{"n": 6, "color": Color.RED}]},
                   "plain": [{"deep": {1, 2}}], "real": {"n": 7, "color": Color.RED},
                   "mixed": (math.pi, None, b"x", True)}
    assert type(got["items"]) is tuple and got["inner"]["color"] is Color.RED
    assert got["plain"][0]["deep"] is not value.plain[0]["deep"]  # other values are deep copies
    assert dataclasses.asdict(value) == got  # dataclasses' own asdict reads a record the same way
    assert list(asdict(Inner(1), dict_factory=list)) == [("n", 1), ("color", Color.RED)]
    with pytest.raises(TypeError):
        asdict(Inner)


def test_asdict_keeps_namedtuples():
    import collections

    Pair = collections.namedtuple("Pair", "a b")

    @record
    class Holder:
        p: Pair

    got = asdict(Holder(Pair(1, [2])))["p"]
    assert type(got) is Pair and got == Pair(1, [2])


def test_dataclasses_functions_work_on_records():
    r, _ = pair(frozen=True)
    p = r(1, 2, ["t"], "n")
    assert dataclasses.is_dataclass(p) and is_record(p) and is_record(r) and not is_record(object())
    assert [f.name for f in dataclasses.fields(p)] == ["x", "y", "tags", "note"]
    assert dataclasses.replace(p, y=9) == r(1, 9, ["t"], "n")
    assert dataclasses.asdict(p) == asdict(p)


def test_pickle_and_match_args():
    p = Picklable(1, "a")
    assert pickle.loads(pickle.dumps(p)) == p
    assert Picklable.__match_args__ == ("n", "s")
    match p:
        case Picklable(1, s):
            assert s == "a"
        case _:
            pytest.fail("no match")


@record(frozen=True)
class Picklable:
    n: int
    s: str = ""


def test_a_record_that_contains_itself_repr_ends():
    @record
    class Node:
        child: object = None

    n = Node()
    n.child = n
    assert repr(n).endswith(".<locals>.Node(child=...)")


def test_no_code_is_compiled_to_make_a_record(monkeypatch):
    import builtins

    def refuse(*args, **kwargs):
        raise AssertionError("exec/compile called")

    monkeypatch.setattr(builtins, "exec", refuse)
    monkeypatch.setattr(builtins, "compile", refuse)
    monkeypatch.setattr(builtins, "eval", refuse)

    @record(frozen=True)
    class Made:
        a: int
        b: list = field(default_factory=list)

    assert Made(1) == Made(a=1) and replace(Made(1), a=2).a == 2 and asdict(Made(1)) == {"a": 1, "b": []}
    assert rec.MISSING is MISSING
