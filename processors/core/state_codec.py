"""Stored state as data: each class of the core's state declares its stored fields and their types
(state_schema.py), and this module turns such objects into plain values (maps, arrays, numbers,
strings, bytes) and back, checking every value against its declared type.

Why not pickle: unpickling runs whatever code the bytes name, so anyone who can write under the
checkpoint prefix would run code in every processor; and a pickle follows the classes' private
attributes, so renaming one silently changes the stored format. Here nothing but declared classes
can be built, each only from its declared fields, and a field renamed in code no longer matches its
declaration (a test compares them).

Each declared class is a *part* with a version. A stored object carries the versions of its parts;
an older version is brought up to date by the part's upgrades (one function per version step), a
newer one is refused: a release never guesses at a format it does not know.
"""

from __future__ import annotations

import array
import types
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from foundation.errors import ShelfstreamError


class StateFormatError(ShelfstreamError):
    """A stored state that does not match its declared format: refused, never half trusted."""


@dataclass
class Context:
    """What restoring an object needs besides its stored fields: the configuration its derived
    attributes come from (a detector's config and slot length, say), filled in as the restore goes."""

    values: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise StateFormatError(f"restoring needs {name!r}, which was not restored before it") from None


Upgrade = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Bounded:
    """A declared type: a deque of `item` holding at most `maxlen(ctx)` (a bound that comes from the
    configuration, so it is not stored)."""

    item: Any
    maxlen: Callable[[Context], int]


@dataclass(frozen=True)
class Custom:
    """A declared type stored in a documented shape of its own: for a library's object whose state
    the library keeps in a form of its own (river's HalfSpaceTrees)."""

    name: str
    to_data: Callable[[Any], Any]
    from_data: Callable[[Any, Context, str], Any]  # raises StateFormatError on a wrong shape
    shape: str  # the stored shape, for the documentation


@dataclass(frozen=True)
class Part:
    """One class of the state as stored.

    fields: attribute -> (declared type, what it holds), in the order they are documented.
    derived: attribute -> why it is not stored (worked out from the configuration, or a cache).
    fresh: a new instance to restore onto, its derived attributes set (None: the class is built
    from its stored fields alone, `build`, or bare and filled in).
    build: make the object from its stored fields (frozen records, classes whose constructor
    derives the rest); otherwise the fields are set on the fresh (or bare) instance.
    upgrades: version n -> the function turning version n's fields into version n+1's.
    """

    cls: type
    name: str
    version: int
    fields: Mapping[str, tuple[Any, str]]
    derived: Mapping[str, str] = field(default_factory=dict)
    fresh: Callable[[Context], Any] | None = None
    build: Callable[..., Any] | None = None
    upgrades: Mapping[int, Upgrade] = field(default_factory=dict)
    doc: str = ""
    # Settings, not learned state: a field this release added takes its default and one it dropped
    # is left out, so a checkpoint outlives a change of settings.
    settings: bool = False


_SCALARS = (int, float, str, bool, bytes)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


class Codec:
    """Encodes and decodes values of declared types (see the module)."""

    def __init__(self, parts: Sequence[Part]) -> None:
        self.parts: dict[type, Part] = {}
        self.by_name: dict[str, Part] = {}
        for part in parts:
            if part.cls in self.parts or part.name in self.by_name:
                raise ValueError(f"part {part.name} is declared twice")
            self.parts[part.cls] = part
            self.by_name[part.name] = part

    def versions(self) -> dict[str, int]:
        return {name: part.version for name, part in sorted(self.by_name.items())}

    # --- encoding --------------------------------------------------------------------------------

    def encode(self, value: Any, tp: Any) -> Any:
        """A value of the declared type as plain data."""
        if tp is Any:
            raise TypeError("a stored value needs a declared type")
        if isinstance(tp, Bounded):
            return self.encode(value, types.GenericAlias(list, (tp.item,)))
        if isinstance(tp, Custom):
            return tp.to_data(value)
        if tp in (int, str, bool, bytes):
            return value
        if tp is float:
            return float(value)
        if tp is type(None):
            return None
        part = self.parts.get(tp) if isinstance(tp, type) else None
        if part is not None:
            return {name: self.encode(getattr(value, name), ftp) for name, (ftp, _) in part.fields.items()}
        origin = get_origin(tp)
        args = get_args(tp)
        if origin in (Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            inner = [a for a in args if a is not type(None)]
            if len(inner) != 1:
                raise TypeError(f"only `X | None` unions are stored, not {tp}")
            return self.encode(value, inner[0])
        if origin is Literal:
            return value
        if tp is bytearray:
            return bytes(value)
        if tp is array.array:
            return value.tobytes() if value.itemsize == 8 and value.typecode == "d" else list(value)
        if origin in (list, deque, set, frozenset):
            (item,) = args
            items = sorted(value) if origin in (set, frozenset) else value
            if item in _SCALARS:
                return [item(v) if item is float else v for v in items]
            return [self.encode(v, item) for v in items]
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return [self.encode(v, args[0]) for v in value]
            if len(args) != len(value):
                raise TypeError(f"{value!r} is not a {tp}")
            return [self.encode(v, a) for v, a in zip(value, args, strict=True)]
        if origin in (dict, Counter):
            key, val = args if origin is dict else (args[0], int)
            if key is str:
                return {k: self.encode(v, val) for k, v in value.items()}
            # Keys that are not strings (tuples, ints) go as pairs: msgpack maps want simple keys.
            return [[self.encode(k, key), self.encode(v, val)] for k, v in value.items()]
        raise TypeError(f"no stored form for {tp}")

    def encode_part(self, value: Any) -> dict[str, Any]:
        part = self.parts.get(type(value))
        if part is None:
            raise TypeError(f"{type(value).__name__} is not a declared part of the state")
        encoded: dict[str, Any] = self.encode(value, part.cls)
        return encoded

    # --- decoding --------------------------------------------------------------------------------

    def decode(self, data: Any, tp: Any, ctx: Context, where: str, versions: Mapping[str, int]) -> Any:
        """A value of the declared type from plain data; StateFormatError when it is not one."""
        if tp in _SCALARS or tp is type(None):
            return self._scalar(data, tp, where)
        if isinstance(tp, Bounded):
            items = self.decode(data, types.GenericAlias(list, (tp.item,)), ctx, where, versions)
            return deque(items, maxlen=tp.maxlen(ctx))
        if isinstance(tp, Custom):
            return tp.from_data(data, ctx, where)
        part = self.parts.get(tp) if isinstance(tp, type) else None
        if part is not None:
            return self._decode_part(part, data, ctx, where, versions)
        origin = get_origin(tp)
        args = get_args(tp)
        if origin in (Union, types.UnionType):
            if data is None and type(None) in args:
                return None
            (inner,) = [a for a in args if a is not type(None)]
            return self.decode(data, inner, ctx, where, versions)
        if origin is Literal:
            if data not in args:
                raise StateFormatError(f"{where}: {data!r} is not one of {', '.join(map(repr, args))}")
            return data
        if tp is bytearray or tp is array.array:
            return self._buffer(data, tp, where)
        if origin in (list, deque, set, frozenset, tuple):
            return self._sequence(data, tp, origin, args, ctx, where, versions)
        if origin in (dict, Counter):
            return self._mapping(data, tp, origin, args, ctx, where, versions)
        raise StateFormatError(f"{where}: no stored form for {tp}")

    def _scalar(self, data: Any, tp: Any, where: str) -> Any:
        if tp is float:
            if type(data) is float:
                return data
            if type(data) is int:
                return float(data)
        elif type(data) is tp or (tp is type(None) and data is None):
            return data
        raise self._wrong(where, tp, data)

    def _buffer(self, data: Any, tp: Any, where: str) -> Any:
        if type(data) is bytes and tp is bytearray:
            return bytearray(data)
        if type(data) is bytes and len(data) % 8 == 0:
            values = array.array("d")
            values.frombytes(data)
            return values
        raise self._wrong(where, tp, data)

    def _sequence(
        self,
        data: Any,
        tp: Any,
        origin: Any,
        args: tuple[Any, ...],
        ctx: Context,
        where: str,
        versions: Mapping[str, int],
    ) -> Any:
        if type(data) is not list:
            raise self._wrong(where, tp, data)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(data) != len(args):
                raise StateFormatError(f"{where}: {len(data)} items where {len(args)} belong")
            return tuple(
                self.decode(v, a, ctx, f"{where}[{i}]", versions)
                for i, (v, a) in enumerate(zip(data, args, strict=True))
            )
        item = args[0]
        if item in _SCALARS and all(type(v) is item for v in data):
            items = list(data)  # the common case of long lists of numbers: checked at once
        else:
            items = [self.decode(v, item, ctx, f"{where}[{i}]", versions) for i, v in enumerate(data)]
        if origin is list:
            return items
        if origin is tuple:
            return tuple(items)
        if origin is deque:
            return deque(items)
        return set(items) if origin is set else frozenset(items)

    def _mapping(
        self,
        data: Any,
        tp: Any,
        origin: Any,
        args: tuple[Any, ...],
        ctx: Context,
        where: str,
        versions: Mapping[str, int],
    ) -> Any:
        key, val = args if origin is dict else (args[0], int)
        out: dict[Any, Any] = Counter() if origin is Counter else {}
        if key is str:
            if type(data) is not dict:
                raise self._wrong(where, tp, data)
            for k, v in data.items():
                if type(k) is not str:
                    raise StateFormatError(f"{where}: key {k!r} is not a string")
                out[k] = self.decode(v, val, ctx, f"{where}[{k!r}]", versions)
            return out
        if type(data) is not list:
            raise self._wrong(where, tp, data)
        for i, pair in enumerate(data):
            if type(pair) is not list or len(pair) != 2:
                raise StateFormatError(f"{where}[{i}]: not a (key, value) pair")
            k = self.decode(pair[0], key, ctx, f"{where}[{i}].key", versions)
            out[k] = self.decode(pair[1], val, ctx, f"{where}[{k!r}]", versions)
        return out

    def decode_part(self, name: str, data: Any, ctx: Context, where: str, versions: Mapping[str, int]) -> Any:
        part = self.by_name.get(name)
        if part is None:
            raise StateFormatError(f"{where}: {name!r} is no part of the state this release knows")
        return self._decode_part(part, data, ctx, where, versions)

    def _decode_part(
        self, part: Part, data: Any, ctx: Context, where: str, versions: Mapping[str, int]
    ) -> Any:
        if type(data) is not dict:
            raise self._wrong(where, part.cls, data)
        stored = versions.get(part.name, part.version)
        if stored > part.version:
            raise StateFormatError(
                f"{where}: {part.name} is stored in version {stored}, newer than this release's "
                f"{part.version}: written by a newer release"
            )
        while stored < part.version:
            step = part.upgrades.get(stored)
            if step is None:
                raise StateFormatError(f"{where}: {part.name} version {stored} has no upgrade")
            data = step(dict(data))
            stored += 1
        names = part.fields.keys()
        if part.settings:
            data = {k: v for k, v in data.items() if k in names}
            names = data.keys()
        if data.keys() != names:
            missing = sorted(names - data.keys())
            extra = sorted(k for k in data if k not in names)
            raise StateFormatError(
                f"{where}: {part.name} fields differ from version {part.version}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(map(str, extra))}" if extra else "")
            )
        values = {
            name: self.decode(data[name], ftp, ctx, f"{where}.{name}", versions)
            for name, (ftp, _) in part.fields.items()
            if name in names
        }
        if part.build is not None:
            try:
                return part.build(**values)
            except (TypeError, ValueError) as exc:
                raise StateFormatError(f"{where}: {part.name} refused its fields: {exc}") from exc
        obj = part.fresh(ctx) if part.fresh is not None else object.__new__(part.cls)
        for name, value in values.items():
            current = getattr(obj, name, None)
            if isinstance(current, deque) and current.maxlen is not None:
                value = deque(value, maxlen=current.maxlen)
            object.__setattr__(obj, name, value)
        return obj

    @staticmethod
    def _wrong(where: str, tp: Any, data: Any) -> StateFormatError:
        shown = repr(data)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return StateFormatError(f"{where}: {shown} is not a {_type_name(tp)}")
