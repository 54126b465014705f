"""Plain records for the stage-1 modules: what they used of dataclasses, without it.

``dataclasses`` imports ``inspect`` (ast, dis, tokenize, enum: ~12 ms here), and the
create's forker (forkserver.serve_forker, a fresh ``python -I -S``) imports these
modules on a served ``execdriver-oci create``'s critical path: its imports are what
the worker waits for before the first fork. So the kernel's records are declared as
dataclasses are (annotations, defaults, ``field(default_factory=...)``,
``__post_init__``) and get ``__init__``, ``__repr__`` and ``__eq__`` from this
module, which imports nothing. Type checkers see a dataclass (dataclass_transform).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, dataclass_transform

    T = TypeVar("T")
else:
    def dataclass_transform(**_: object) -> Callable[[T], T]:
        return lambda decorated: decorated

_MISSING = object()


class _Field:
    __slots__ = ("compare", "factory", "repr")

    def __init__(self, factory: Callable[[], Any], repr: bool, compare: bool) -> None:
        self.factory, self.repr, self.compare = factory, repr, compare


def field(*, default_factory: Callable[[], Any], repr: bool = True,
          compare: bool = True) -> Any:
    """A field whose default is made per instance (a list, a ctypes buffer); typed Any,
    as the annotation it stands in for says what it holds."""
    return _Field(default_factory, repr, compare)


@dataclass_transform(field_specifiers=(field,))
def record(cls: type[T]) -> type[T]:
    """The dataclass decorator's ``__init__``, ``__repr__`` and ``__eq__``, for the
    class's own annotated fields (no inheritance, no frozen, no slots)."""
    # (inspect.get_annotations would import inspect: the cost this module avoids)
    own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
    names = [n for n, a in own.items()
             if not str(a).startswith(("ClassVar", "typing.ClassVar"))]
    defaults: dict[str, Any] = {}
    factories: dict[str, Callable[[], Any]] = {}
    shown, compared = [], []
    for name in names:
        value = cls.__dict__.get(name, _MISSING)
        if isinstance(value, _Field):
            factories[name] = value.factory
            delattr(cls, name)
            if value.repr:
                shown.append(name)
            if value.compare:
                compared.append(name)
            continue
        if value is not _MISSING:
            defaults[name] = value
        shown.append(name)
        compared.append(name)
    post_init = getattr(cls, "__post_init__", None)
    qualname = cls.__qualname__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(names):
            raise TypeError(f"{qualname}() takes {len(names)} positional arguments "
                            f"but {len(args)} were given")
        values = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key not in names:
                raise TypeError(f"{qualname}() got an unexpected keyword argument {key!r}")
            if key in values:
                raise TypeError(f"{qualname}() got multiple values for argument {key!r}")
            values[key] = value
        for name in names:
            if name in values:
                setattr(self, name, values[name])
            elif name in factories:
                setattr(self, name, factories[name]())
            elif name in defaults:
                setattr(self, name, defaults[name])
            else:
                raise TypeError(f"{qualname}() missing required argument {name!r}")
        if post_init is not None:
            post_init(self)

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in shown)
        return f"{qualname}({inner})"

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in compared)

    for method in (__init__, __repr__, __eq__):
        method.__qualname__ = f"{qualname}.{method.__name__}"
        setattr(cls, method.__name__, method)
    cls.__hash__ = None  # type: ignore[assignment]  # mutable, compared by value: as dataclasses
    return cls
