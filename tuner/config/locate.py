"""Where a field of a config.pbtxt is written: (line, col), 1-based, from protobuf's tokenizer.

`FieldPositions(text)` walks the file once with `text_format.Tokenizer` (the
tokenizer protobuf's own parser uses, so comments, quoting and both list
spellings, `dims: [1, 2]` and `dims: 1 dims: 2`, are handled as protobuf
handles them) and keeps, for every field occurrence, the position of its name
(or of the list item). A path names a field the way a refusal does:

    ("max_batch_size",)
    ("input", 0, "dims", 1)                                # the 2nd dim of the 1st input
    ("dynamic_batching", "priority_queue_policy", ("key", 3), "value")

A str is a field, an int the n-th element of a repeated field (text order,
which is the message's order), a (field, value) pair the map entry or element
whose scalar `field` holds `value`. A path that runs past what the file
states (a missing field) stops at the deepest element found: a missing
data_type is reported at its input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf import text_format

Position = tuple[int, int]
OPENERS = {"{": "}", "<": ">"}


@dataclass
class _Element:
    pos: Position
    value: str | None = None  # a scalar's token text (strings unquoted)
    fields: dict[str, list["_Element"]] = field(default_factory=dict)
    named_at: dict[str, Position] = field(default_factory=dict)  # where each field's name first appears


class FieldPositions:
    """Positions of the fields written in one config.pbtxt text."""

    def __init__(self, text: str):
        self._root = _Element((1, 1))
        try:
            tok = text_format.Tokenizer(text.splitlines())
            _message(tok, None, self._root)
        except Exception:  # noqa: BLE001 - positions are a courtesy: never fail a check over them
            self._root = _Element((1, 1))

    def has(self, name: str) -> bool:
        """Whether the file states top-level field `name` (proto3 cannot tell 0 from absent)."""
        return name in self._root.named_at

    def find(self, path: tuple) -> Position | None:
        """(line, col) of `path`, or of the deepest element of it the file states; None if none."""
        node, found = self._root, None
        items: list[_Element] | None = None
        for step in path:
            if isinstance(step, str):  # a field: where its name is written
                if step not in node.named_at:
                    break
                items, found = node.fields[step], node.named_at[step]
                if not items:  # an empty list
                    break
                node = items[-1]  # a singular field: the last occurrence is the one protobuf keeps
                continue
            if isinstance(step, int):  # an element: where it starts
                if items is None or not 0 <= step < len(items):
                    break
                node = items[step]
            else:
                key, want = step
                match = [e for e in items or () if [c.value for c in e.fields.get(key, ())] == [str(want)]]
                if not match:
                    break
                node = match[-1]
            found = node.pos
        return found


def _here(tok: text_format.Tokenizer) -> Position:
    return tok._line + 1, tok._column + 1  # the tokenizer counts from 0


def _message(tok: text_format.Tokenizer, closing: str | None, into: _Element) -> None:
    fields = into.fields
    while not tok.AtEnd() and tok.token != closing:
        if tok.token in (",", ";"):
            tok.NextToken()
            continue
        name, pos = tok.token, _here(tok)
        into.named_at.setdefault(name, pos)
        tok.NextToken()
        if tok.token == ":":
            tok.NextToken()
        items = fields.setdefault(name, [])
        if tok.token == "[":
            tok.NextToken()
            while not tok.AtEnd() and tok.token != "]":
                if tok.token == ",":
                    tok.NextToken()
                    continue
                items.append(_value(tok, _here(tok)))
            tok.NextToken()
        else:
            items.append(_value(tok, pos))


def _value(tok: text_format.Tokenizer, pos: Position) -> _Element:
    if tok.token in OPENERS:
        closing = OPENERS[tok.token]
        tok.NextToken()
        elem = _Element(pos)
        _message(tok, closing, elem)
        tok.NextToken()
        return elem
    text = tok.token
    tok.NextToken()
    if text == "-":  # "- 1": the sign may stand apart
        text += tok.token
        tok.NextToken()
    if text[:1] in ("'", '"'):
        parts = [text[1:-1]]
        while tok.token[:1] in ("'", '"'):  # adjacent strings concatenate
            parts.append(tok.token[1:-1])
            tok.NextToken()
        text = "".join(parts)
    return _Element(pos, value=text)


@dataclass(frozen=True)
class Refusal:
    """One rule a config breaks: where (a path, as above), what, and how to fix it."""

    path: tuple
    message: str
    fix: str = ""

    def line(self, where: "Where") -> str:
        return f"{where.at(self.path)}: {self.message}" + (f"; {self.fix}" if self.fix else "")


class Where:
    """How a message names the config: a label (a file, a model, a candidate) and, for a file
    tuner read, its text, so that a field can be named with its line and column."""

    def __init__(self, label: str, text: str | None = None):
        self.label, self.text = label, text
        self._positions: FieldPositions | None = None

    @property
    def positions(self) -> FieldPositions | None:
        if self._positions is None and self.text is not None:
            self._positions = FieldPositions(self.text)
        return self._positions

    def at(self, path: tuple = ()) -> str:
        """`label:line:col` for the field at `path` when the text states it, else `label`."""
        pos = self.positions.find(path) if self.positions is not None and path else None
        return f"{self.label}:{pos[0]}:{pos[1]}" if pos else self.label

    def states(self, name: str) -> bool | None:
        """Whether the text states top-level field `name`; None when there is no text."""
        return None if self.positions is None else self.positions.has(name)
