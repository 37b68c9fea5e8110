"""One plugin contract: every kind of part (architecture, likelihood, posterior, prior,
objective, dataset format, sampler, condition) is a class found by name in a ``Registry``.

A part is a class with

* ``name``: its registry key, the value of its flag (``--arch mlp``), recorded in config.json;
* ``Options``: a dataclass of its own options (``option(...)`` fields), empty by default.
  Each field becomes a flag of the commands that choose this kind (``--hidden 200,200``),
  is validated against its metadata, and is recorded in config.json only for the chosen part;
* a docstring, whose first line is its help text;
* whatever the rest of vaekit needs to know about it, as the kind's base class says
  (for example, a likelihood tells the latent explorer how to compute its mean).

Adding a part is adding one file: the kind's package imports every module in it when it is
first imported, and ``@REGISTRY.register`` on the class does the rest. A file outside the
package is loaded at run time with ``load_plugin(path)`` (``vaekit --plugin FILE``, or
``VAEKIT_PLUGINS``); runs record the plugin files they used, so that loading them later
finds their parts again.

Options of the same name in different parts of one kind share one flag (``--activation``
of ``mlp`` and ``conv``) and must have the same type; an option name belongs to one kind only.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Iterator, TypeVar

__all__ = [
    "Registry", "Part", "NoOptions", "option", "field_kind", "validate", "options_from_dict", "load_plugin",
    "load_plugins", "loaded_plugins", "plugin_paths_from_env", "REGISTRIES", "discover",
]

P = TypeVar("P", bound=type)


def option(default: Any, help: str, **meta: Any) -> Any:
    """A config or options field: its default, its help text and its bounds (``min``, ``gt``, ``lt``, ``choices``)."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class NoOptions:
    """A part without options."""


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _type_name(f: dataclasses.Field) -> str:
    """A field's type as written, ``"int | None"``, whether annotations are strings or types."""
    t = f.type
    return t.__name__ if isinstance(t, type) else str(t).replace("typing.Optional[", "").replace("]", " | None")


def field_kind(f: dataclasses.Field) -> type:
    """The scalar type of a config field: ``int | None`` -> int (every field is int, float, str or bool)."""
    return {"int": int, "float": float, "str": str, "bool": bool}[_type_name(f).split("|")[0].strip()]


def is_optional(f: dataclasses.Field) -> bool:
    return "None" in _type_name(f)


def validate(cfg: Any, what: str = "") -> None:
    """Check each scalar field's type and bounds against its metadata; ValueError naming the field.

    Fields whose type is not int, float, str or bool (a dict of options) are left to their owner.
    ``what`` prefixes the field's name in messages (``"arch mlp: "``).
    """
    for f in dataclasses.fields(cfg):
        if _type_name(f).split("|")[0].strip() not in _TYPES:
            continue
        value = getattr(cfg, f.name)
        optional = is_optional(f)
        if value is None:
            if optional:
                continue
            raise ValueError(f"{what}{f.name} must not be None")
        kind = field_kind(f).__name__
        if not isinstance(value, _TYPES[kind]) or (kind != "bool" and isinstance(value, bool)):
            raise ValueError(f"{what}{f.name} must be of type {kind}{' or None' if optional else ''}, got {value!r}")
        if "min" in f.metadata and value < f.metadata["min"]:
            raise ValueError(f"{what}{f.name} must be >= {f.metadata['min']}, got {value!r}")
        if "gt" in f.metadata and not value > f.metadata["gt"]:
            raise ValueError(f"{what}{f.name} must be > {f.metadata['gt']}, got {value!r}")
        if "lt" in f.metadata and not value < f.metadata["lt"]:
            raise ValueError(f"{what}{f.name} must be < {f.metadata['lt']}, got {value!r}")
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ValueError(f"{what}{f.name} must be one of {', '.join(map(str, choices))}, got {value!r}")


class Part:
    """The base of every part: a name, an ``Options`` dataclass, and a docstring whose first line is its help."""

    name: str = ""
    Options: type = NoOptions

    @classmethod
    def help(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0].strip() if doc else cls.name

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls.Options)]


def options_from_dict(part: type[Part], values: dict[str, Any] | None, what: str) -> Any:
    """``part.Options`` from ``values`` (missing keys keep their defaults), validated; ValueError naming
    ``what`` (e.g. "arch mlp") for an unknown key or a bad value."""
    values = dict(values or {})
    names = part.option_names()
    unknown = sorted(set(values) - set(names))
    if unknown:
        takes = ", ".join(f"--{n.replace('_', '-')}" for n in names) or "no options"
        raise ValueError(f"{what} has no option {', '.join(unknown)}; it takes {takes}")
    try:
        opts = part.Options(**values)
    except TypeError as e:
        raise ValueError(f"{what}: {e}") from None
    validate(opts, f"{what}: ")
    return opts


class Registry(Generic[P]):
    """The parts of one kind, by name: ``REG["mlp"]`` is the class, ``"mlp" in REG``, ``list(REG)`` the names.

    ``kind`` names the kind in messages and flags ("arch", "likelihood", ...); ``base`` is the class
    every entry must subclass; ``package`` is the package whose modules hold the built-in parts
    (imported on first use, so that a registry can be created before its parts exist).
    """

    def __init__(self, kind: str, base: P, package: str | None = None, title: str | None = None):
        self.kind, self.base, self.package = kind, base, package
        self.title = title or kind
        self._parts: dict[str, P] = {}
        self._discovered = package is None
        REGISTRIES[kind] = self

    def register(self, part: P) -> P:
        """Add ``part`` (a class decorator): its ``name`` must be new, it must subclass the kind's base, and its
        ``Options`` must be a dataclass of int, float, str or bool fields."""
        if not isinstance(part, type) or not issubclass(part, self.base):
            raise TypeError(f"a {self.kind} must be a subclass of {self.base.__name__}, got {part!r}")
        name = getattr(part, "name", "")
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r} on {part.__qualname__}")
        old = self._parts.get(name)
        if old is not None and old is not part and (old.__module__, old.__qualname__) != (part.__module__, part.__qualname__):
            raise ValueError(f"{self.kind} {name!r} is registered twice: by {old.__module__} and {part.__module__}")
        if not dataclasses.is_dataclass(part.Options):
            raise TypeError(f"{self.kind} {name!r}: Options must be a dataclass, got {part.Options!r}")
        for f in dataclasses.fields(part.Options):
            field_kind(f)  # KeyError for an unsupported type
            if f.default is dataclasses.MISSING:
                raise TypeError(f"{self.kind} {name!r}: option {f.name} needs a default")
        self._parts[name] = part
        return part

    def discover(self) -> None:
        """Import every module of the kind's package (each registers its parts)."""
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def __getitem__(self, name: str) -> P:
        self.discover()
        if not isinstance(name, str) or name not in self._parts:
            raise ValueError(f"{self.kind} must be one of {', '.join(self.names())}, got {name!r}")
        return self._parts[name]

    def get(self, name: str, default: Any = None) -> Any:
        self.discover()
        return self._parts.get(name, default)

    def names(self) -> list[str]:
        self.discover()
        return list(self._parts)

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._parts

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def items(self) -> list[tuple[str, P]]:
        self.discover()
        return list(self._parts.items())

    def options(self, name: str, values: dict[str, Any] | None = None) -> Any:
        """The options of part ``name`` from ``values`` (a dict holding at most its option names)."""
        return options_from_dict(self[name], values, f"{self.kind} {name}")

    def pick_options(self, name: str, values: dict[str, Any]) -> dict[str, Any]:
        """The entries of ``values`` that are options of part ``name``."""
        names = set(self[name].option_names())
        return {k: v for k, v in values.items() if k in names}

    def option_fields(self) -> dict[str, tuple[dataclasses.Field, list[str]]]:
        """Every option name of this kind: (its field in the first part that declares it, the parts that take it)."""
        out: dict[str, tuple[dataclasses.Field, list[str]]] = {}
        for name, part in self.items():
            for f in dataclasses.fields(part.Options):
                if f.name in out:
                    out[f.name][1].append(name)
                else:
                    out[f.name] = (f, [name])
        return out

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


#: every registry by kind, in the order they were created
REGISTRIES: dict[str, Registry] = {}


def discover() -> dict[str, Registry]:
    """Import every built-in part of every kind (the packages that define registries), then return them all."""
    for module in ("vaekit.architectures", "vaekit.likelihoods", "vaekit.posteriors", "vaekit.priors", "vaekit.objectives",
                   "vaekit.samplers", "vaekit.data.formats", "vaekit.conditions"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
    for reg in list(REGISTRIES.values()):
        reg.discover()
    return REGISTRIES


# ----------------------------------------------------------------------------- plugins: parts from files

_PLUGINS: dict[str, str] = {}  # resolved path -> module name


def load_plugin(path: str | os.PathLike) -> str:
    """Import the Python file ``path`` once, so that the parts it registers can be chosen by name.

    Returns its resolved path. A file that does not exist or fails to import raises ValueError
    naming it (the import error's own message included).
    """
    p = Path(path).expanduser()
    try:
        resolved = str(p.resolve(strict=True))
    except (OSError, RuntimeError):
        raise ValueError(f"plugin file {str(path)!r} does not exist") from None
    if not p.is_file() or p.suffix != ".py":
        raise ValueError(f"plugin {str(path)!r} must be a Python file (.py)")
    if resolved in _PLUGINS:
        return resolved
    name = f"vaekit_plugin_{len(_PLUGINS)}_{p.stem}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    discover()  # the built-in parts first: a plugin may not take their names
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as e:
        sys.modules.pop(name, None)
        raise ValueError(f"plugin file {resolved} failed to load: {type(e).__name__}: {e}") from e
    _PLUGINS[resolved] = name
    return resolved


def plugin_paths_from_env() -> list[str]:
    """The files named in ``VAEKIT_PLUGINS`` (separated by ``os.pathsep``)."""
    return [p for p in os.environ.get("VAEKIT_PLUGINS", "").split(os.pathsep) if p.strip()]


def load_plugins(paths: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Load ``paths`` and the files in ``VAEKIT_PLUGINS``; returns every plugin loaded so far (resolved paths)."""
    for path in [*plugin_paths_from_env(), *paths]:
        load_plugin(path)
    return loaded_plugins()


def loaded_plugins() -> list[str]:
    return list(_PLUGINS)
