"""hbwrap.strconst: model.py's name classes behave as the `(str, Enum)` classes they were, member by member."""
from __future__ import annotations

import copy
import enum
import json
import pickle
import warnings

import pytest

from hbwrap import model
from hbwrap.strconst import StrConst

CLASSES = [model.Status, model.Event, model.StallReason, model.RestartMode, model.Phase, model.DecisionKind]


def as_enum(cls):
    """The `class X(str, Enum)` with the same name and members."""
    return enum.Enum(cls.__name__, [(m.name, m.value) for m in cls], type=str, qualname=cls.__qualname__)


def outcome(fn):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            value = fn()
    except Exception as exc:  # noqa: BLE001 - comparing whatever is raised
        return ("raises", type(exc).__name__, str(exc))
    return ("ok", value)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_members_behave_as_enum_members(cls):
    real = as_enum(cls)
    assert [m.name for m in cls] == [m.name for m in real] and len(cls) == len(real) > 0
    assert list(cls.__members__) == list(real.__members__) and repr(cls) == repr(real)
    for mine, theirs in zip(cls, real):
        assert isinstance(mine, str) and isinstance(mine, cls) and type(mine) is cls
        assert mine == theirs == theirs.value and mine.value == theirs.value and type(mine.value) is str
        assert mine.name == theirs.name and hash(mine) == hash(theirs) == hash(theirs.value)
        assert str(mine) == str(theirs) and repr(mine) == repr(theirs)
        for spec in ("", ">30", "<5", "^40"):
            assert format(mine, spec) == format(theirs, spec)
        assert f"{mine}|{mine!s}|{mine!r}" == f"{theirs}|{theirs!s}|{theirs!r}"
        assert "%s %r" % (mine, mine) == "%s %r" % (theirs, theirs)
        assert cls(mine.value) is mine and cls(mine) is mine and cls[mine.name] is mine
        assert getattr(cls, mine.name) is mine and mine in cls
        assert json.dumps({mine: [mine]}) == json.dumps({theirs: [theirs]})
        assert copy.copy(mine) is mine and copy.deepcopy(mine) is mine and pickle.loads(pickle.dumps(mine)) is mine
        assert mine.upper() == theirs.upper() and mine + "!" == theirs + "!" and bool(mine)
        assert {mine: 1}[mine.value] == 1 and {theirs: 1}[mine.value] == 1  # keys found by their plain value
    assert list(reversed(cls)) == list(reversed(list(cls)))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("probe", ["", "nope", "RUNNING", None, 1, ["running"], b"running"])
def test_lookups_fail_as_enum_lookups_do(cls, probe):
    real = as_enum(cls)
    assert outcome(lambda: cls(probe)) == outcome(lambda: real(probe))
    assert outcome(lambda: probe in cls)[:2] == outcome(lambda: probe in real)[:2]
    if isinstance(probe, str):
        assert outcome(lambda: cls[probe]) == outcome(lambda: real[probe])


def test_members_cannot_be_reassigned_or_deleted():
    with pytest.raises(AttributeError, match="cannot reassign member 'RUNNING'"):
        model.Status.RUNNING = "x"
    with pytest.raises(AttributeError, match="cannot delete member 'RUNNING'"):
        del model.Status.RUNNING
    with pytest.raises(AttributeError):
        model.Status.RUNNING.value = "x"
    assert model.Status.RUNNING.value == "running"


def test_aliases_docstrings_and_extension():
    class Mode(StrConst):
        """Modes."""

        FAST = "fast"
        QUICK = "fast"  # an alias: the same member, not listed twice
        SLOW = "slow"
        LIMIT = 3  # not a string: a plain class attribute

    assert Mode.QUICK is Mode.FAST and list(Mode) == [Mode.FAST, Mode.SLOW] and Mode.LIMIT == 3
    assert Mode.__members__["QUICK"] is Mode.FAST and Mode.__doc__ == "Modes." and Mode("fast") is Mode.FAST
    with pytest.raises(TypeError, match="cannot extend Mode"):
        class More(Mode):
            EXTRA = "extra"


def test_the_model_classes_keep_their_values():
    assert model.Status.AWAITING_APPROVAL.value == "awaiting-approval"
    assert model.Event.CRASH.value == "supervisor_crash" and model.Phase.DONE == "done"
    assert model.RestartMode("on-stall") is model.RestartMode.ON_STALL
    assert "restart_check" not in model.EVENT_NAMES and "stall" in model.EVENT_NAMES
    assert model.Status.RUNNING in model.ACTIVE_STATUSES and "running" in model.ACTIVE_VALUES
