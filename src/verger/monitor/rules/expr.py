"""Rule expressions: the part of PromQL that alerting rules need, parsed to a tree.

The same text is evaluated by verger and exported to Prometheus, so the
grammar is PromQL's: selectors with label matchers, range selectors,
``rate``/``increase``/``*_over_time``, ``histogram_quantile``, ``absent``,
aggregations with ``by``/``without``, arithmetic, comparisons (with
``bool``), and ``and``/``or``/``unless`` (with ``on``/``ignoring``).
Anything outside it is refused when the config is read, naming the position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from verger.config.types import parse_duration
from verger.monitor.store import Matcher

FUNCTIONS = {
    "rate": "range",
    "increase": "range",
    "avg_over_time": "range",
    "min_over_time": "range",
    "max_over_time": "range",
    "sum_over_time": "range",
    "last_over_time": "range",
    "count_over_time": "range",
    "absent": "instant",
    "absent_over_time": "range",
    "histogram_quantile": "quantile",
    "abs": "instant",
}
AGGREGATIONS = ("sum", "avg", "min", "max", "count")
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
SET_OPS = ("and", "or", "unless")


class ExprError(ValueError):
    """An expression verger cannot read, with where and what it expected."""


@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class Selector:
    name: str | None
    matchers: tuple[Matcher, ...]
    range: float | None = None


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Aggregate:
    op: str
    expr: Node
    by: tuple[str, ...] | None = None
    without: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node
    bool: bool = False
    on: tuple[str, ...] | None = None
    ignoring: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Negate:
    expr: Node


Node = Number | Selector | Call | Aggregate | Binary | Negate

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<duration>\d+(?:ms|s|m|h|d|w))(?![a-zA-Z0-9_])
      | (?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?)(?![a-zA-Z0-9_.])
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)
      | (?P<op>==|!=|>=|<=|=~|!~|[-+*/><=(){}\[\],])
    )""",
    re.VERBOSE,
)


@dataclass
class _Tokens:
    text: str
    items: list[tuple[str, str, int]] = field(default_factory=list)
    pos: int = 0

    def peek(self, offset: int = 0) -> tuple[str, str, int]:
        index = self.pos + offset
        if index < len(self.items):
            return self.items[index]
        return ("end", "", len(self.text))

    def next(self) -> tuple[str, str, int]:
        token = self.peek()
        self.pos += 1
        return token

    def accept(self, value: str) -> bool:
        kind, text, _ = self.peek()
        if kind in ("op", "name") and text == value:
            self.pos += 1
            return True
        return False

    def expect(self, value: str) -> None:
        if not self.accept(value):
            self.fail(f"expected {value!r}")

    def fail(self, what: str) -> None:
        kind, text, at = self.peek()
        found = "the end" if kind == "end" else repr(text)
        raise ExprError(f"{what} at column {at + 1} of {self.text!r}, found {found}")


def _tokenize(text: str) -> _Tokens:
    tokens = _Tokens(text)
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            at = len(text) - len(text[pos:].lstrip()) + 1
            raise ExprError(
                f"unexpected {text[at - 1 :][:10]!r} at column {at} of {text!r}"
            )
        kind = match.lastgroup or ""
        start = match.start(kind)
        tokens.items.append((kind, match.group(kind), start))
        pos = match.end()
    return tokens


def parse(text: str) -> Node:
    """The tree of a rule expression, or ``ExprError`` saying where it goes wrong."""
    tokens = _tokenize(text)
    node = _or(tokens)
    if tokens.peek()[0] != "end":
        tokens.fail("expected an operator or the end")
    return node


def _modifiers(tokens: _Tokens) -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    for word in ("on", "ignoring"):
        if tokens.accept(word):
            found[word] = _label_list(tokens)
    return found


def _or(tokens: _Tokens) -> Node:
    node = _and(tokens)
    while tokens.accept("or"):
        mods = _modifiers(tokens)
        node = Binary("or", node, _and(tokens), **mods)  # type: ignore[arg-type]
    return node


def _and(tokens: _Tokens) -> Node:
    node = _comparison(tokens)
    while True:
        op = next((o for o in ("and", "unless") if tokens.accept(o)), None)
        if op is None:
            return node
        mods = _modifiers(tokens)
        node = Binary(op, node, _comparison(tokens), **mods)  # type: ignore[arg-type]


def _comparison(tokens: _Tokens) -> Node:
    node = _sum(tokens)
    while True:
        op = next((o for o in COMPARISONS if tokens.accept(o)), None)
        if op is None:
            return node
        is_bool = tokens.accept("bool")
        mods = _modifiers(tokens)
        node = Binary(op, node, _sum(tokens), is_bool, **mods)


def _sum(tokens: _Tokens) -> Node:
    node = _product(tokens)
    while True:
        op = next((o for o in ("+", "-") if tokens.accept(o)), None)
        if op is None:
            return node
        mods = _modifiers(tokens)
        node = Binary(op, node, _product(tokens), **mods)  # type: ignore[arg-type]


def _product(tokens: _Tokens) -> Node:
    node = _unary(tokens)
    while True:
        op = next((o for o in ("*", "/") if tokens.accept(o)), None)
        if op is None:
            return node
        mods = _modifiers(tokens)
        node = Binary(op, node, _unary(tokens), **mods)  # type: ignore[arg-type]


def _unary(tokens: _Tokens) -> Node:
    if tokens.accept("-"):
        inner = _unary(tokens)
        return Number(-inner.value) if isinstance(inner, Number) else Negate(inner)
    return _primary(tokens)


def _primary(tokens: _Tokens) -> Node:
    kind, text, _ = tokens.peek()
    if kind == "number":
        tokens.next()
        return Number(float(text))
    if tokens.accept("("):
        node = _or(tokens)
        tokens.expect(")")
        return node
    if kind == "name" and text in AGGREGATIONS:
        return _aggregate(tokens)
    if kind == "name" and text in FUNCTIONS and tokens.peek(1)[1] == "(":
        return _call(tokens)
    if kind == "name" or (kind == "op" and text == "{"):
        return _selector(tokens)
    tokens.fail("expected a number, a metric, a function or '('")
    raise AssertionError  # fail always raises


def _label_list(tokens: _Tokens) -> tuple[str, ...]:
    tokens.expect("(")
    labels: list[str] = []
    while not tokens.accept(")"):
        kind, text, _ = tokens.next()
        if kind != "name":
            tokens.pos -= 1
            tokens.fail("expected a label name")
        labels.append(text)
        if not tokens.accept(","):
            tokens.expect(")")
            break
    return tuple(labels)


def _aggregate(tokens: _Tokens) -> Node:
    op = tokens.next()[1]
    grouping: dict[str, tuple[str, ...]] = {}
    for word in ("by", "without"):
        if tokens.accept(word):
            grouping[word] = _label_list(tokens)
    tokens.expect("(")
    inner = _or(tokens)
    tokens.expect(")")
    for word in ("by", "without"):
        if not grouping and tokens.accept(word):
            grouping[word] = _label_list(tokens)
    return Aggregate(op, inner, **grouping)


def _call(tokens: _Tokens) -> Node:
    function = tokens.next()[1]
    tokens.expect("(")
    args = [_or(tokens)]
    while tokens.accept(","):
        args.append(_or(tokens))
    tokens.expect(")")
    kind = FUNCTIONS[function]
    wants_range = kind == "range"
    last = args[-1]
    if wants_range != (isinstance(last, Selector) and last.range is not None):
        what = "a range selector such as x[5m]" if wants_range else "an instant vector"
        raise ExprError(f"{function}() takes {what} in {tokens.text!r}")
    if kind == "quantile" and (len(args) != 2 or not isinstance(args[0], Number)):
        raise ExprError(
            f"histogram_quantile() takes a number and a vector in {tokens.text!r}"
        )
    return Call(function, tuple(args))


def _selector(tokens: _Tokens) -> Node:
    name: str | None = None
    if tokens.peek()[0] == "name":
        name = tokens.next()[1]
    matchers: list[Matcher] = []
    if tokens.accept("{"):
        while not tokens.accept("}"):
            matchers.append(_matcher(tokens))
            if not tokens.accept(","):
                tokens.expect("}")
                break
    if name is None and not matchers:
        tokens.fail("expected a metric name or label matchers")
    window: float | None = None
    if tokens.accept("["):
        kind, text, _ = tokens.next()
        if kind != "duration":
            tokens.pos -= 1
            tokens.fail("expected a duration such as 5m")
        window = parse_duration(text)
        tokens.expect("]")
    return Selector(name, tuple(matchers), window)


def _matcher(tokens: _Tokens) -> Matcher:
    kind, label, _ = tokens.next()
    if kind != "name":
        tokens.pos -= 1
        tokens.fail("expected a label name")
    op = next((o for o in ("=~", "!~", "!=", "=") if tokens.accept(o)), None)
    if op is None:
        tokens.fail("expected =, !=, =~ or !~")
    kind, value, _ = tokens.next()
    if kind != "string":
        tokens.pos -= 1
        tokens.fail("expected a quoted value")
    return Matcher(label, op or "=", _unquote(value))


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), body)


def selectors(node: Node) -> list[Selector]:
    """Every selector in an expression, left to right."""
    if isinstance(node, Selector):
        return [node]
    if isinstance(node, Call):
        return [s for arg in node.args for s in selectors(arg)]
    if isinstance(node, Aggregate | Negate):
        return selectors(node.expr)
    if isinstance(node, Binary):
        return selectors(node.left) + selectors(node.right)
    return []
