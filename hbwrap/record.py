"""`@record`: the part of `dataclasses` hbwrap uses, without its import cost or its code generation.

`dataclasses` imports `inspect` (and with it `ast`, `dis`, `tokenize`: ~1.4 MB and ~8 ms) and compiles an
`exec`'d `__init__`, `__repr__` and `__eq__` for every class at import time; the supervisor imports a
dozen such classes on every `hbwrap run`. Here the methods are generic functions over the class's field
list, built once per class without compiling anything.

What a record class gets, as from `@dataclass` / `@dataclass(frozen=True)` (eq=True, no slots, no
InitVar or kw_only): fields from its annotations in order (a `ClassVar` is no field), defaults from class
attributes or `field(default=..., default_factory=..., metadata=...)`; `__init__` taking the fields
positionally or by keyword, with dataclasses' TypeErrors for a missing, unexpected or doubled argument,
then `__post_init__()` if the class has one; `__repr__`, `__eq__`, `__match_args__`; `__hash__` over the
fields when frozen, none (unhashable) when not, unless the class defines its own; frozen: assigning or
deleting an attribute raises FrozenInstanceError (an AttributeError). Methods the class defines itself
are kept. `fields()`, `replace()` and `asdict()` behave as the dataclasses functions of the same name.

A record also carries `__dataclass_fields__`, so `dataclasses.replace`, `fields` and `asdict` work on it
too (code that still imports them; they import `dataclasses` only when called).
"""
from __future__ import annotations

import _thread
from operator import attrgetter
from types import FunctionType, MappingProxyType

__all__ = ["FrozenInstanceError", "MISSING", "Field", "asdict", "field", "fields", "is_record", "record", "replace"]

_FIELDS = "__record_fields__"
_EMPTY_METADATA = MappingProxyType({})


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()  # no default


class FrozenInstanceError(AttributeError):
    """An attribute of a frozen record was assigned or deleted."""


class Field:
    """One field of a record: its name, annotation (a string), default or default factory, metadata."""

    __slots__ = ("name", "type", "default", "default_factory", "metadata")
    # as dataclasses.Field has them, for code that reads them; a record's fields are all of this kind
    init = True
    repr = True
    compare = True
    hash = None
    kw_only = False

    def __init__(self, default=MISSING, default_factory=MISSING, metadata=None):
        self.name: str | None = None
        self.type = None
        self.default = default
        self.default_factory = default_factory
        self.metadata = _EMPTY_METADATA if not metadata else MappingProxyType(metadata)

    @property
    def _field_type(self):
        """What dataclasses' own functions check a field's kind by (its private marker of a plain field)."""
        import dataclasses

        return dataclasses._FIELD

    def __repr__(self) -> str:
        return (f"Field(name={self.name!r},type={self.type!r},default={self.default!r},"
                f"default_factory={self.default_factory!r},metadata={self.metadata!r})")


def field(*, default=MISSING, default_factory=MISSING, metadata=None) -> Field:
    """A field's default (or a factory called for each instance, for mutable ones) and its metadata."""
    if default is not MISSING and default_factory is not MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory, metadata)


def _is_classvar(annotation) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar", "t.ClassVar"))


def _collect(cls) -> tuple[Field, ...]:
    """The fields of `cls`: those of record bases first (most basic first), then its own annotations."""
    found: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for f in base.__dict__.get(_FIELDS, ()):
            found[f.name] = f
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(default=value)
        f.name, f.type = name, annotation
        if f.default is not MISSING and f.default.__class__.__hash__ is None:  # as dataclasses: list, dict, set
            raise ValueError(f"mutable default {type(f.default)} for field {name} is not allowed: "
                             f"use default_factory")
        if isinstance(value, Field):  # the class attribute becomes the plain default (or goes)
            if f.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        found[name] = f
    seen_default = None
    for f in found.values():
        if f.default is MISSING and f.default_factory is MISSING:
            if seen_default is not None:
                raise TypeError(f"non-default argument {f.name!r} follows default argument")
        else:
            seen_default = f
    return tuple(found.values())


def _plural(names: list[str]) -> str:
    quoted = [repr(n) for n in names]
    if len(quoted) == 1:
        return quoted[0]
    if len(quoted) == 2:
        return f"{quoted[0]} and {quoted[1]}"
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def _make_init(cls, flist: tuple[Field, ...], frozen: bool):
    names = tuple(f.name for f in flist)
    index = {name: i for i, name in enumerate(names)}
    template = {f.name: f.default for f in flist}  # in field order: the instance's __dict__ keeps it
    factories = tuple((f.name, f.default_factory) for f in flist if f.default_factory is not MISSING)
    required = tuple(f.name for f in flist if f.default is MISSING and f.default_factory is MISSING)
    count = len(names)
    # values go straight into the instance's __dict__ unless a __setattr__ or a data descriptor of the class
    # must see them (a frozen record's own __setattr__ refuses them: dataclasses bypasses it the same way)
    direct = frozen or (cls.__setattr__ is object.__setattr__
                        and not any(hasattr(type(getattr(cls, n, None)), "__set__") for n in names))
    post_init = hasattr(cls, "__post_init__")  # looked for once, as dataclasses does
    qualname = f"{cls.__qualname__}.__init__"
    takes = (f"from {len(required) + 1} to {count + 1} positional arguments" if len(required) < count
             else f"{count + 1} positional argument{'s' if count else ''}")  # CPython's words, self counted

    def __init__(self, *args, **kwargs):
        given = len(args)
        for key in kwargs:  # checked in CPython's order: keywords first, the first bad one named
            at = index.get(key)
            if at is None:
                raise TypeError(f"{qualname}() got an unexpected keyword argument {key!r}")
            if at < given:
                raise TypeError(f"{qualname}() got multiple values for argument {key!r}")
        if given > count:
            raise TypeError(f"{qualname}() takes {takes} but {given + 1} were given")
        values = template.copy()
        if given:
            values.update(zip(names, args))
        values.update(kwargs)
        for name, factory in factories:
            if values[name] is MISSING:
                values[name] = factory()
        missing = [name for name in required if values[name] is MISSING]
        if missing:
            raise TypeError(f"{qualname}() missing {len(missing)} required positional "
                            f"argument{'s' if len(missing) > 1 else ''}: {_plural(missing)}")
        if direct:
            self.__dict__.update(values)
        else:
            for name, value in values.items():
                setattr(self, name, value)
        if post_init:
            self.__post_init__()

    __init__.__qualname__ = qualname
    return __init__


def _values_of(names: tuple[str, ...]):
    """A function giving the tuple of an instance's field values (dataclasses compares and hashes those)."""
    if len(names) == 1:
        single = attrgetter(names[0])
        return lambda obj: (single(obj),)
    return attrgetter(*names) if names else (lambda obj: ())


def _make_methods(cls, flist: tuple[Field, ...], frozen: bool) -> dict:
    names = tuple(f.name for f in flist)
    values = _values_of(names)
    running: set = set()  # (id, thread) of the reprs under way: a record that contains itself shows "..."

    def __repr__(self):
        key = (id(self), _thread.get_ident())
        if key in running:
            return "..."
        running.add(key)
        try:
            inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        finally:
            running.discard(key)
        return f"{self.__class__.__qualname__}({inner})"

    def __eq__(self, other):
        if other.__class__ is self.__class__:
            return values(self) == values(other)
        return NotImplemented

    methods = {"__repr__": __repr__, "__eq__": __eq__}
    if frozen:
        def __setattr__(self, name, value):
            if type(self) is cls or name in names:
                raise FrozenInstanceError(f"cannot assign to field {name!r}")
            super(cls, self).__setattr__(name, value)

        def __delattr__(self, name):
            if type(self) is cls or name in names:
                raise FrozenInstanceError(f"cannot delete field {name!r}")
            super(cls, self).__delattr__(name)

        methods["__setattr__"] = __setattr__
        methods["__delattr__"] = __delattr__
    for name, fn in methods.items():
        fn.__qualname__ = f"{cls.__qualname__}.{name}"
    return methods


def _hash_of(cls, names: tuple[str, ...]):
    values = _values_of(names)

    def __hash__(self):
        return hash(values(self))

    __hash__.__qualname__ = f"{cls.__qualname__}.__hash__"
    return __hash__


def _process(cls, frozen: bool):
    class_hash = cls.__dict__.get("__hash__", MISSING)
    explicit_hash = not (class_hash is MISSING or (class_hash is None and "__eq__" in cls.__dict__))
    flist = _collect(cls)
    setattr(cls, _FIELDS, flist)
    cls.__dataclass_fields__ = {f.name: f for f in flist}
    if "__init__" not in cls.__dict__:
        cls.__init__ = _make_init(cls, flist, frozen)
    for name, fn in _make_methods(cls, flist, frozen).items():
        if name in cls.__dict__:
            if name in ("__setattr__", "__delattr__"):
                raise TypeError(f"Cannot overwrite attribute {name} in class {cls.__name__}")
            continue
        setattr(cls, name, fn)
    if not explicit_hash:
        # as dataclasses with eq=True: frozen records hash by their fields, mutable ones are unhashable
        cls.__hash__ = _hash_of(cls, tuple(f.name for f in flist)) if frozen else None
    if "__match_args__" not in cls.__dict__:
        cls.__match_args__ = tuple(f.name for f in flist)
    return cls


def record(cls=None, /, *, frozen: bool = False):
    """Class decorator: `@record` or `@record(frozen=True)` (see the module docstring)."""
    def wrap(c):
        return _process(c, frozen)

    return wrap if cls is None else wrap(cls)


def is_record(obj) -> bool:
    """True for a record class or an instance of one."""
    return hasattr(obj if isinstance(obj, type) else type(obj), _FIELDS)


def fields(class_or_instance) -> tuple[Field, ...]:
    """The fields of a record class or instance, in order."""
    try:
        return getattr(class_or_instance, _FIELDS)
    except AttributeError:
        raise TypeError("must be called with a record type or instance") from None


def replace(obj, /, **changes):
    """A new record like `obj`, with the fields named in `changes` set to their values (__init__ checks them)."""
    if isinstance(obj, type) or not hasattr(type(obj), _FIELDS):
        raise TypeError("replace() should be called on record instances")
    for f in getattr(obj, _FIELDS):
        if f.name not in changes:
            changes[f.name] = getattr(obj, f.name)
    return obj.__class__(**changes)


_ATOMIC = frozenset({type(None), type(Ellipsis), type(NotImplemented), int, float, bool, complex, bytes, str,
                     range, FunctionType, type(len), property})


def _copy_leaf(obj):
    """copy.deepcopy(obj), without importing copy for the values records hold (numbers, strings, enums)."""
    cls = type(obj)
    if cls in _ATOMIC or issubclass(cls, type):
        return obj
    copier = getattr(obj, "__deepcopy__", None)  # an Enum member's returns itself
    if copier is not None:
        return copier({})
    import copy

    return copy.deepcopy(obj)


def _asdict_inner(obj, dict_factory):
    if hasattr(type(obj), _FIELDS):
        return dict_factory([(f.name, _asdict_inner(getattr(obj, f.name), dict_factory))
                             for f in getattr(obj, _FIELDS)])
    if hasattr(type(obj), "__dataclass_fields__"):  # a real dataclass inside a record: its own asdict
        import dataclasses

        return dataclasses.asdict(obj, dict_factory=dict_factory)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple: rebuilt positionally
        return type(obj)(*[_asdict_inner(v, dict_factory) for v in obj])
    if isinstance(obj, (list, tuple)):
        return type(obj)(_asdict_inner(v, dict_factory) for v in obj)
    if isinstance(obj, dict):
        return type(obj)((_asdict_inner(k, dict_factory), _asdict_inner(v, dict_factory)) for k, v in obj.items())
    return _copy_leaf(obj)


def asdict(obj, *, dict_factory=dict) -> dict:
    """The fields of record `obj` as a dict, recursively into records, lists, tuples and dicts; other values
    are deep copies (as dataclasses.asdict)."""
    if isinstance(obj, type) or not hasattr(type(obj), _FIELDS):
        raise TypeError("asdict() should be called on record instances")
    return _asdict_inner(obj, dict_factory)
