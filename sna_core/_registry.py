"""A small string-keyed registry with Python entry-point plugins.

Each model-layer concept (attention blocks, backbones, datasets) owns one :class:`Registry`.
Built-in entries register with the :meth:`Registry.register` decorator; third-party packages add
entries without editing sna_core by declaring an entry point in the registry's group, e.g. in
their ``pyproject.toml``::

    [project.entry-points."sna_core.attention"]
    my_block = "my_pkg.blocks:MyBlock"

Plugins are loaded lazily, once, the first time a name is looked up or listed. A plugin that
fails to import is recorded under its name (see :meth:`Registry.broken`) and reported when that
name is asked for; it never hides the other entries.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from importlib import metadata
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown or broken registry name. ``str()`` gives the whole message."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want plain text.
        return str(self.args[0]) if self.args else ""


def closest(name: str, choices: list[str]) -> str | None:
    """The closest known spelling of ``name`` (for 'did you mean' hints), or None."""
    matches = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) for one kind of thing."""

    def __init__(
        self,
        kind: str,
        entry_point_group: str | None = None,
        *,
        validate: Callable[[str, Any], None] | None = None,
    ) -> None:
        """``validate(name, obj)`` checks a loaded plugin and raises ``TypeError`` if it is unusable
        (the plugin is then recorded as broken instead of failing later, at build time)."""
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.validate = validate
        self._entries: dict[str, T] = {}
        self._broken: dict[str, str] = {}
        self._plugin_names: set[str] = set()
        self._plugins_loaded = entry_point_group is None

    def register(self, name: str, *, override: bool = False) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``."""

        def decorator(obj: T) -> T:
            self.add(name, obj, override=override)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, override: bool = False) -> None:
        if not name or name != name.strip():
            raise ValueError(f"invalid {self.kind} name {name!r}")
        if name in self._entries and not override and self._entries[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry_point in metadata.entry_points(group=self.entry_point_group):
            where = f"entry point {entry_point.value!r} in group {self.entry_point_group!r}"
            if entry_point.name in self._entries:
                # Built-ins win: a plugin must not change what an existing name means.
                warnings.warn(
                    f"{self.kind} plugin {entry_point.name!r} ({where}) ignored: "
                    f"the name is already registered",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            try:
                obj = entry_point.load()
                if self.validate is not None:
                    self.validate(entry_point.name, obj)
            except Exception as error:  # any import-time failure of third-party code
                self._broken[entry_point.name] = f"{type(error).__name__}: {error} ({where})"
                continue
            self._entries[entry_point.name] = obj
            self._plugin_names.add(entry_point.name)

    def reload_plugins(self) -> None:
        """Forget loaded plugins and read the entry points again (after installing one)."""
        if self.entry_point_group is None:
            return
        # Finders cache directory listings and distribution metadata; a plugin installed since
        # the last scan is only seen after the caches are dropped.
        importlib.invalidate_caches()
        for name in self._plugin_names:
            self._entries.pop(name, None)
        self._plugin_names.clear()
        self._broken.clear()
        self._plugins_loaded = False
        self._load_plugins()

    def names(self) -> list[str]:
        """Sorted names of every working entry, built-in and plugin."""
        self._load_plugins()
        return sorted(self._entries)

    def broken(self) -> dict[str, str]:
        """Plugins that failed to load: name → reason."""
        self._load_plugins()
        return dict(self._broken)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """The factory registered as ``name``; a clear error listing the known names if none."""
        if not isinstance(name, str):
            raise RegistryError(
                f"{self.kind} name must be a string, got {name!r} ({type(name).__name__}). "
                f"Known: {', '.join(self.names()) or '(none)'}"
            )
        self._load_plugins()
        if name in self._entries:
            return self._entries[name]
        if name in self._broken:
            raise RegistryError(f"{self.kind} plugin {name!r} failed to load: {self._broken[name]}")
        known = self.names()
        hint = closest(str(name), known)
        suggestion = f" Did you mean {hint!r}?" if hint else ""
        broken = f" Broken plugins: {', '.join(sorted(self._broken))}." if self._broken else ""
        raise RegistryError(
            f"unknown {self.kind} {name!r}.{suggestion} Known: {', '.join(known) or '(none)'}.{broken}"
        )

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)
