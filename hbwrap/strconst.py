"""`StrConst`: a class of named string constants whose members behave as those of `class X(str, Enum)` do on
Python 3.11, made without enum's class machinery (it took ~1.6 ms and ~200 KB for model.py's six classes).

Members are the class's public attributes with a `str` value, in order; each is an instance of the class (a
`str` equal to, and hashing as, its value) with `.name` and `.value`. As with Enum: `X("value")` is the
member or ValueError, `X["NAME"]` the member or KeyError, `for m in X`, `len(X)`, `m in X`, `X.__members__`;
`str(m)` and `format(m)` are `X.NAME`, `repr(m)` is `<X.NAME: 'value'>`; members pickle and copy as
themselves and cannot be reassigned. Not supported: `auto()`, methods that shadow member names, functional
creation, subclassing a class that has members. json writes a member as its value, as it does Enum's.
"""
from __future__ import annotations

from types import MappingProxyType


class _StrConstType(type):
    def __new__(mcls, name, bases, namespace):
        members = [(key, value) for key, value in namespace.items() if not key.startswith("_") and type(value) is str]
        for base in bases:
            if getattr(base, "_member_names_", ()):
                raise TypeError(f"{name}: cannot extend {base.__name__}, which has members")
        body = {key: value for key, value in namespace.items() if key not in dict(members)}
        cls = super().__new__(mcls, name, bases, body)
        by_name, by_value, names = {}, {}, []
        for key, value in members:
            member = by_value.get(value)
            if member is None:  # a second name for a value is an alias of the first member, as in Enum
                member = str.__new__(cls, value)
                member._name_, member._value_ = key, value
                by_value[value] = member
                names.append(key)
            by_name[key] = member
            type.__setattr__(cls, key, member)
        type.__setattr__(cls, "_member_map_", by_name)
        type.__setattr__(cls, "_value2member_map_", by_value)
        type.__setattr__(cls, "_member_names_", tuple(names))
        return cls

    def __call__(cls, value):
        if type(value) is cls:
            return value
        try:
            return cls._value2member_map_[value]
        except (KeyError, TypeError):
            raise ValueError(f"{value!r} is not a valid {cls.__qualname__}") from None

    def __getitem__(cls, name):
        return cls._member_map_[name]

    def __iter__(cls):
        return (cls._member_map_[name] for name in cls._member_names_)

    def __reversed__(cls):
        return (cls._member_map_[name] for name in reversed(cls._member_names_))

    def __len__(cls) -> int:
        return len(cls._member_names_)

    def __bool__(cls) -> bool:
        return True

    def __contains__(cls, member) -> bool:
        if not isinstance(member, StrConst):  # Enum on 3.11: a TypeError (with a DeprecationWarning)
            import warnings

            warnings.warn("in 3.12 __contains__ will no longer raise TypeError, but will return True or\nFalse "
                          "depending on whether the value is a member or the value of a member",
                          DeprecationWarning, stacklevel=2)
            raise TypeError(f"unsupported operand type(s) for 'in': '{type(member).__qualname__}' and "
                            f"'{type(cls).__qualname__}'")
        return isinstance(member, cls) and member._name_ in cls._member_map_

    @property
    def __members__(cls):
        return MappingProxyType(cls._member_map_)

    def __repr__(cls) -> str:
        return f"<enum {cls.__name__!r}>"

    def __setattr__(cls, name, value):
        if name in cls.__dict__.get("_member_map_", ()):
            raise AttributeError(f"cannot reassign member {name!r}")
        super().__setattr__(name, value)

    def __delattr__(cls, name):
        if name in cls.__dict__.get("_member_map_", ()):
            raise AttributeError(f"{cls.__name__!r} cannot delete member {name!r}.")
        super().__delattr__(name)


class StrConst(str, metaclass=_StrConstType):
    """Base of a class of string constants (see the module docstring)."""

    @property
    def name(self) -> str:
        return self._name_

    @property
    def value(self) -> str:
        return self._value_

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self._name_}"

    def __format__(self, spec: str) -> str:
        return str.__format__(str(self), spec)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self._name_}: {self._value_!r}>"

    def __reduce_ex__(self, protocol):
        return self.__class__, (self._value_,)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    __hash__ = str.__hash__
