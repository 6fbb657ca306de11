"""The one YAML loader of sggraph: safe by construction against hostile files.

Graphs, cells, ``train --config`` files and sweep specs are all read by :func:`read_yaml`
(text already in memory by :func:`parse_yaml`). The document is built in one pass over the
parser's events, and the limits are enforced event by event — before anything past them is
built — each with an error naming the file and line:

* the file is at most :data:`MAX_FILE_BYTES` bytes and UTF-8 text (a byte that is not
  UTF-8 is reported with its byte offset and line);
* collections nest at most :data:`MAX_DEPTH` levels deep;
* the document holds at most :data:`MAX_VALUES` values *after alias expansion*, so that a
  "billion laughs" file of a few hundred bytes (``b: &b [*a, *a, ...]`` nested nine times)
  is refused in milliseconds instead of growing memory without bound; an alias to a
  collection that contains it (``&a [*a]``) is refused too.

Only YAML's standard tags are built (``yaml.SafeLoader``; libyaml's parser when present).

Examples
--------
>>> doc = parse_yaml("name: g\\nnodes:\\n  - {name: z, dim: 2}\\n", file="g.yaml")
>>> doc.data["nodes"][0]["dim"], doc.lines["$.nodes[0].dim"]
(2, 3)
>>> bomb = "a: &a [x, x]\\nb: &b [*a, *a]\\nc: [*b, *b, *b]\\n"
>>> parse_yaml(bomb, file="b.yaml", max_values=20)
Traceback (most recent call last):
...
sggraph.exceptions.SpecError: b.yaml:3: the document holds more than 20 values once its aliases (*name) are expanded. Fix: write the values out, or use fewer and smaller aliases; sggraph files are far smaller than this.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs
import yaml

from ..exceptions import SpecError

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "MAX_VALUES", "YamlDocument", "parse_yaml", "read_yaml"]

#: Largest YAML file read (bytes).
MAX_FILE_BYTES = 32 * 1024 * 1024
#: Deepest nesting of mappings and lists.
MAX_DEPTH = 64
#: Most values (scalars, lists, mappings) in one document, aliases counted at their expanded size.
MAX_VALUES = 2_000_000

_BASE_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPEN = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSE = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


class _BadValue(yaml.YAMLError):
    """A scalar that YAML types (a date, an integer) but Python cannot build, with its place."""

    def __init__(self, node: yaml.Node, exc: Exception) -> None:
        self.problem_mark = node.start_mark
        value = node.value if len(node.value) <= 40 else node.value[:37] + "..."
        self.problem = f"cannot read the value {value!r}: {str(exc).split(';')[0]}"
        super().__init__(self.problem)


class _Loader(_BASE_LOADER):  # type: ignore[misc, valid-type]
    """The safe loader, reporting where a value Python rejects (``2001-13-45``) was written."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError) as exc:
            raise _BadValue(node, exc) from None


@attrs.frozen
class YamlDocument:
    """A parsed YAML file.

    Attributes
    ----------
    data : object
        The document (mappings, lists, scalars); None for an empty file.
    lines : mapping
        Document path (``$.nodes[1].dim``) → 1-based line, for errors.
    file : str or None
        The file name used in errors.
    """

    data: Any
    lines: Mapping[str, int] = attrs.field(repr=False)
    file: str | None = None


def read_yaml(path: str | os.PathLike, *, what: str = "file", max_bytes: int = MAX_FILE_BYTES,
              max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES) -> YamlDocument:
    """Read and parse a YAML file within the limits; every error is a :class:`~sggraph.SpecError`
    naming the file (and the line or byte offset where known).

    Parameters
    ----------
    path : path
        The file.
    what : str
        What the file is, for messages (``"graph"``, ``"sweep spec"``, ``"config"``).
    max_bytes, max_depth, max_values : int
        The limits (defaults :data:`MAX_FILE_BYTES`, :data:`MAX_DEPTH`, :data:`MAX_VALUES`).

    Raises
    ------
    SpecError
        Unreadable, too large, not UTF-8, not valid YAML, or over a limit.
    """
    file = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise SpecError(f"cannot read the {what}: {exc.strerror or exc}", file=file, fix="check the path") from None
    if len(raw) > max_bytes:
        raise SpecError(f"the {what} is larger than {max_bytes:,} bytes", file=file,
                        fix=f"sggraph reads YAML files of at most {max_bytes:,} bytes; check that this is the "
                            "intended file")
    return parse_yaml(raw, file=file, max_depth=max_depth, max_values=max_values)


def parse_yaml(source: str | bytes, *, file: str | None = None, max_depth: int = MAX_DEPTH,
               max_values: int = MAX_VALUES) -> YamlDocument:
    """Parse YAML text (or UTF-8 bytes) within the limits; see :func:`read_yaml`."""
    text = _decode(source, file) if isinstance(source, bytes) else source
    text = text.removeprefix("\ufeff")
    try:
        try:
            return _Builder(text, file, _Budget(file, max_depth, max_values)).run()
        except _NeedsComposer:  # a feature the one-pass builder leaves to PyYAML: merge keys, tagged collections
            return _composed(text, file, max_depth, max_values)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, text, file, max_depth) from None


def _composed(text: str, file: str | None, max_depth: int, max_values: int) -> YamlDocument:
    """PyYAML's own composer and constructor, after the limits are checked on the events."""
    budget = _Budget(file, max_depth, max_values)
    loader = _Loader(text)
    try:
        while loader.check_event():
            budget.see(loader.get_event())
    finally:
        loader.dispose()
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        _check_unique_keys(node, file)
        data = None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()
    return YamlDocument(data, _line_index(node), file)


def _duplicate(key: str, path: str, first: int, again: int, file: str | None) -> SpecError:
    where = "the top level" if path == "$" else path.removeprefix("$.")
    return SpecError(f"the key '{key}' appears twice in the same mapping ({where}): on line {first} and on line "
                     f"{again}", file=file, line=again,
                     fix="YAML mapping keys are unique: keep one of the two (the other would be silently lost)")


def _check_unique_keys(root: yaml.Node | None, file: str | None) -> None:
    """Raise :class:`~sggraph.SpecError` on a mapping that names a scalar key twice (merge keys ``<<`` aside:
    a key written next to a merge overrides the merged one, as YAML intends)."""
    stack = [] if root is None else [(root, "$")]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
                    line = key.start_mark.line + 1
                    first = lines.get((key.tag, key.value))
                    if first is not None:
                        raise _duplicate(key.value, path, first, line, file)
                    lines[(key.tag, key.value)] = line
                stack.append((value, f"{path}.{key.value}" if isinstance(key, yaml.ScalarNode) else f"{path}.?"))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))


def _decode(raw: bytes, file: str | None) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SpecError(f"byte {exc.start} (0x{raw[exc.start]:02x}) is not UTF-8 text", file=file, line=line,
                        fix="save the file as UTF-8 text; a binary or otherwise encoded file cannot be read") \
            from None


class _Budget:
    """The limits, checked event by event: nesting depth, values with aliases expanded, recursive aliases."""

    def __init__(self, file: str | None, max_depth: int, max_values: int) -> None:
        self.file, self.max_depth, self.max_values = file, max_depth, max_values
        self.count = 0  # values so far, aliases expanded
        self.sizes: list[int] = []  # expanded size of each open collection
        self.anchors: list[str | None] = []  # the anchor of each open collection
        self.done: dict[str, int] = {}  # anchor -> expanded size of its (closed) value

    def _add(self, size: int, event: yaml.Event) -> None:
        self.count += size
        if self.sizes:
            self.sizes[-1] += size
        if self.count > self.max_values:
            raise SpecError(f"the document holds more than {self.max_values:,} values once its aliases (*name) are "
                            "expanded", file=self.file, line=event.start_mark.line + 1,
                            fix="write the values out, or use fewer and smaller aliases; sggraph files are far "
                                "smaller than this")

    def see(self, event: yaml.Event) -> None:
        """Account for one parser event; raise :class:`~sggraph.SpecError` past a limit."""
        if isinstance(event, _OPEN):
            if len(self.sizes) >= self.max_depth:
                raise SpecError(f"lists and mappings nest more than {self.max_depth} levels deep", file=self.file,
                                line=event.start_mark.line + 1,
                                fix="flatten the structure; sggraph files nest a few levels only")
            self._add(1, event)
            self.sizes.append(0)
            self.anchors.append(event.anchor)
        elif isinstance(event, _CLOSE):
            size, anchor = self.sizes.pop() + 1, self.anchors.pop()
            if anchor is not None:
                self.done[anchor] = size
        elif isinstance(event, yaml.ScalarEvent):
            self._add(1, event)
            if event.anchor is not None:
                self.done[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in self.anchors:
                raise SpecError(f"the alias *{event.anchor} refers to a value that contains it", file=self.file,
                                line=event.start_mark.line + 1,
                                fix="an alias must not point into itself; write the value out")
            self._add(self.done.get(event.anchor, 1), event)


class _NeedsComposer(Exception):
    """The document uses a feature the one-pass builder leaves to PyYAML's composer."""


_SEQ_TAGS = (None, "!", "tag:yaml.org,2002:seq")
_MAP_TAGS = (None, "!", "tag:yaml.org,2002:map")
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Frame:
    """An open list or mapping of :class:`_Builder`."""

    __slots__ = ("anchor", "container", "has_key", "key", "key_lines", "key_text", "length", "path")

    def __init__(self, container: list | dict, path: str, anchor: str | None) -> None:
        self.container, self.path, self.anchor = container, path, anchor
        self.key_lines: dict[Any, int] = {}  # a mapping's keys so far -> their lines
        self.key: Any = None
        self.key_text = ""
        self.has_key = False
        self.length = 0


class _Builder:
    """One pass over the parser's events: the limits, the Python values and the line index at once.

    Scalars are typed exactly as by ``yaml.safe_load`` (PyYAML's resolver and safe constructor; plain
    scalars are cached by text, so a repeated ``dim: 1`` costs one dictionary look-up); merge keys
    (``<<``), explicitly tagged collections (``!!set``, ``!!omap``), collections as keys and several
    documents go to :func:`_composed`.
    """

    def __init__(self, text: str, file: str | None, budget: _Budget) -> None:
        self.file, self.budget = file, budget
        self.loader = _Loader(text)
        self.cache: dict[tuple[str, str], Any] = {}
        self.anchored: dict[str, Any] = {}
        self.index: dict[str, int] = {}
        self.stack: list[_Frame] = []
        self.root: Any = None
        self.documents = 0

    def run(self) -> YamlDocument:
        loader = self.loader
        try:
            while loader.check_event():
                event = loader.get_event()
                self.budget.see(event)
                self._event(event)
        finally:
            loader.dispose()
        return YamlDocument(self.root, self.index, self.file)

    def _event(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.ScalarEvent):
            self._place(self._scalar(event), event)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in self.anchored:
                raise yaml.composer.ComposerError(None, None, f"found undefined alias {event.anchor!r}",
                                                  event.start_mark)
            self._place(self.anchored[event.anchor], event)
        elif isinstance(event, yaml.SequenceStartEvent):
            self._open([], event, _SEQ_TAGS)
        elif isinstance(event, yaml.MappingStartEvent):
            self._open({}, event, _MAP_TAGS)
        elif isinstance(event, _CLOSE):
            frame = self.stack.pop()
            if frame.anchor is not None:
                self.anchored[frame.anchor] = frame.container
            self._attach(frame.container)
        elif isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:  # PyYAML's composer words the error
                raise _NeedsComposer

    def _scalar(self, event: yaml.ScalarEvent) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag == _MERGE_TAG:
            raise _NeedsComposer
        key = (tag, event.value)
        if key in self.cache:
            value = self.cache[key]
        else:
            node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
            value = self.loader.construct_object(node, deep=True)
            self.loader.constructed_objects.clear()
            if isinstance(value, (str, int, float, bool, type(None))):
                self.cache[key] = value
        if event.anchor is not None:
            self.anchored[event.anchor] = value
        return value

    def _path(self) -> str | None:
        """The document path of the next value (None: the next value is a mapping key)."""
        if not self.stack:
            return "$"
        frame = self.stack[-1]
        if isinstance(frame.container, dict):
            return f"{frame.path}.{frame.key_text}" if frame.has_key else None
        return f"{frame.path}[{frame.length}]"

    def _open(self, container: list | dict, event: yaml.Event, tags: tuple) -> None:
        path = self._path()
        if event.tag not in tags or path is None:  # a tagged collection, or a collection as a mapping key
            raise _NeedsComposer
        self.index.setdefault(path, event.start_mark.line + 1)
        self.stack.append(_Frame(container, path, event.anchor))

    def _place(self, value: Any, event: yaml.Event) -> None:
        path = self._path()
        if path is None:  # a mapping key: the next value is stored under it
            frame = self.stack[-1]
            frame.key, frame.has_key = value, True
            frame.key_text = event.value if isinstance(event, yaml.ScalarEvent) else \
                value if isinstance(value, str) else "?"
            line = event.start_mark.line + 1
            try:
                first = frame.key_lines.get(value)
            except TypeError:  # an unhashable key (an alias of a list): PyYAML's constructor words the error
                raise _NeedsComposer from None
            if first is not None:
                raise _duplicate(frame.key_text, frame.path, first, line, self.file)
            frame.key_lines[value] = line
            self.index[f"{frame.path}.{frame.key_text}"] = line
            return
        self.index.setdefault(path, event.start_mark.line + 1)
        self._attach(value)

    def _attach(self, value: Any) -> None:
        if not self.stack:
            self.root = value
            return
        frame = self.stack[-1]
        if isinstance(frame.container, dict):
            try:
                frame.container[frame.key] = value
            except TypeError:  # an unhashable key (an alias of a list): PyYAML's constructor words the error
                raise _NeedsComposer from None
            frame.has_key = False
        else:
            frame.container.append(value)
            frame.length += 1


def _syntax_error(exc: yaml.YAMLError, text: str, file: str | None, max_depth: int) -> SpecError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or (str(exc).strip().splitlines() or ["invalid YAML"])[0]
    if isinstance(exc, _BadValue):
        return SpecError(exc.problem, file=file, line=line, fix="quote the value to keep it as text, or correct it")
    if "nesting depth" in problem:  # libyaml's own limit, met while it reads ahead
        return SpecError(f"lists and mappings nest more than {max_depth} levels deep", file=file, line=line,
                         fix="flatten the structure; sggraph files nest a few levels only")
    if "constructor for the tag" in problem:
        return SpecError(f"YAML tag not allowed: {problem}", file=file, line=line,
                         fix="sggraph files hold plain values (numbers, text, lists, mappings): remove the !tag")
    if isinstance(exc, yaml.reader.ReaderError) or "special characters are not allowed" in str(exc):
        position = getattr(exc, "position", None)
        if line is None and isinstance(position, int):
            line = text.count("\n", 0, position) + 1
        char = getattr(exc, "character", None)
        what = f"#x{ord(char):04x}" if isinstance(char, str) else "a control character"
        return SpecError(f"the file contains {what}, which YAML text may not hold", file=file, line=line,
                         fix="a YAML file is plain text: remove the character (is this a binary file?)")
    return SpecError(f"YAML syntax error: {problem}", file=file, line=line,
                     fix="check indentation, colons and brackets on this line and the one before")


def _line_index(root: yaml.Node | None) -> dict[str, int]:
    """Document paths → 1-based lines; an aliased value is indexed once, at its first use."""
    index: dict[str, int] = {}
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [] if root is None else [(root, "$")]
    while stack:
        node, path = stack.pop()
        index.setdefault(path, node.start_mark.line + 1)
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in reversed(node.value):
                sub = f"{path}.{key.value}" if isinstance(key, yaml.ScalarNode) else f"{path}.?"
                index[sub] = key.start_mark.line + 1
                stack.append((value, sub))
        elif isinstance(node, yaml.SequenceNode):
            for i in range(len(node.value) - 1, -1, -1):
                stack.append((node.value[i], f"{path}[{i}]"))
    return index
