"""A PromQL check without Prometheus: an expression parses and names what is exported.

Not a full parser: it tokenizes, nests brackets, and knows what may follow what, which is
enough to catch a typo in a metric, label or function name, a broken regular expression,
a range function without its range, or an unbalanced bracket.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w.]))
    |(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    |(?P<op>==|!=|<=|>=|=~|!~|[-+*/%^<>=,(){}\[\]:])
    """,
    re.VERBOSE,
)
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
# Functions whose (last) argument is a range vector.
RANGE_FUNCTIONS = {
    "rate", "irate", "increase", "delta", "idelta", "deriv", "changes", "resets",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "quantile_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
    "present_over_time", "absent_over_time", "predict_linear", "holt_winters",
}  # fmt: skip
FUNCTIONS = RANGE_FUNCTIONS | {
    "abs", "absent", "ceil", "floor", "round", "clamp", "clamp_max", "clamp_min", "exp",
    "ln", "log2", "log10", "sqrt", "scalar", "vector", "sort", "sort_desc", "time",
    "timestamp", "histogram_quantile", "label_replace", "label_join", "day_of_week",
    "day_of_month", "days_in_month", "hour", "minute", "month", "year",
}  # fmt: skip
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
BINARY_WORDS = {"and", "or", "unless", "bool", "offset"}
COMPARISONS = {"==", "!=", "<", ">", "<=", ">="}
MATCHERS = {"=", "!=", "=~", "!~"}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}


@dataclass
class Token:
    kind: str
    text: str


Reader = Callable[[list[Token]], None]


@dataclass
class Expression:
    """What an expression names: its metrics with their matchers, and its grouping labels."""

    metrics: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    grouping: set[str] = field(default_factory=set)
    comparisons: int = 0


def tokenize(expr: str) -> list[Token]:
    tokens: list[Token] = []
    index = 0
    while index < len(expr):
        match = TOKEN.match(expr, index)
        if match is None:
            raise ValueError(f"cannot read {expr[index : index + 20]!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(Token(kind, match.group()))
        index = match.end()
    return tokens


def unquote(literal: str) -> str:
    """A PromQL string's value: Go's escapes in '' and "", none in ``."""
    if literal.startswith("`"):
        return literal[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), literal[1:-1])


def parse(expr: str) -> Expression:
    """Read `expr`; `ValueError` says the first thing wrong with it."""
    tokens = [*tokenize(expr), Token("end", "")]
    found = Expression()
    # Open brackets: the bracket and, for `(`, what it opened (a function name, "labels"
    # for a label list, or "" for plain grouping).
    stack: list[tuple[str, str]] = []
    index = 0

    def after(offset: int = 1) -> Token:
        return tokens[index + offset]

    while tokens[index].kind != "end":
        token = tokens[index]
        text = token.text
        if token.kind == "ident" and text in GROUPING:
            if after().text == "(":
                index = label_list(tokens, index + 2, found.grouping)
                continue
            if text not in ("group_left", "group_right"):
                raise ValueError(f"{text} without a label list")
        elif token.kind == "ident" and text in BINARY_WORDS:
            pass
        elif token.kind == "ident" and text in AGGREGATIONS:
            if after().text not in ("(", "by", "without"):
                raise ValueError(f"{text} is not followed by its arguments")
            if after().text in ("by", "without"):
                if after(2).text != "(":
                    raise ValueError(f"{text} by without a label list")
                index = label_list(tokens, index + 3, found.grouping)
                if tokens[index].text != "(":
                    raise ValueError(f"{text} by (...) has no arguments")
            else:
                index += 1
            stack.append(("(", text))
        elif token.kind == "ident" and after().text == "(":
            if text not in FUNCTIONS:
                raise ValueError(f"unknown function {text}")
            stack.append(("(", text))
            index += 1
        elif token.kind == "ident":
            matchers = found.metrics.setdefault(text, {})
            if after().text == "{":
                index = selector(tokens, index + 2, matchers)
                continue
        elif text == "{":
            raise ValueError("a selector without a metric name")
        elif text == "[":
            before = tokens[index - 1].text if index else ""
            if not (tokens[index - 1].kind == "ident" or before in ("}", ")")):
                raise ValueError("a range that follows no selector")
            if after().kind != "duration":
                raise ValueError(f"{after().text!r} is not a duration")
            index += 2
            if before == ")" and tokens[index].text == ":":
                index += 2 if after().kind == "duration" else 1
            if tokens[index].text != "]":
                raise ValueError(f"a range ends with {tokens[index].text!r}")
        elif text == "(":
            stack.append(("(", ""))
        elif text == ")":
            if not stack:
                raise ValueError("a ')' closes nothing")
            _, opened = stack.pop()
            if opened in RANGE_FUNCTIONS and tokens[index - 1].text != "]":
                raise ValueError(f"{opened} needs a range vector")
        elif text in ("}", "]"):
            raise ValueError(f"a {text!r} closes nothing")
        elif text in COMPARISONS:
            found.comparisons += 1
        index += 1
    if stack:
        raise ValueError("an unclosed '('")
    return found


def items(tokens: list[Token], index: int, closer: str, width: int, read: Reader) -> int:
    """Hand each comma-separated item of `width` tokens to `read`, up to `closer`.

    Return the index after `closer`.
    """
    while tokens[index].text != closer:
        read(tokens[index : index + width])
        index += width
        if tokens[index].text == ",":
            index += 1
        elif tokens[index].text != closer:
            raise ValueError(f"{tokens[index].text!r} where ',' or {closer!r} belongs")
    return index + 1


def label_list(tokens: list[Token], index: int, into: set[str]) -> int:
    """Read `label, label)` from `index`; return the index after `)`."""

    def label(item: list[Token]) -> None:
        if item[0].kind != "ident":
            raise ValueError(f"{item[0].text!r} in a label list")
        into.add(item[0].text)

    return items(tokens, index, ")", 1, label)


def selector(tokens: list[Token], index: int, into: dict[str, tuple[str, str]]) -> int:
    """Read `label op "value", ...}` from `index`; return the index after `}`."""

    def matcher(item: list[Token]) -> None:
        label, op, value = item
        if label.kind != "ident" or op.text not in MATCHERS or value.kind != "string":
            raise ValueError(f"a matcher {label.text}{op.text}{value.text} in a selector")
        text = unquote(value.text)
        if op.text in ("=~", "!~"):
            try:
                re.compile(text)
            except re.error as exc:
                raise ValueError(f"{label.text}{op.text}{value.text}: {exc}") from None
        into[label.text] = (op.text, text)

    return items(tokens, index, "}", 3, matcher)


def problems(expr: str, known: Mapping[str, set[str]]) -> list[str]:
    """What is wrong with an alert's expression, given each known series and its labels."""
    try:
        found = parse(expr)
    except ValueError as exc:
        return [str(exc)]
    said: list[str] = []
    for metric, matchers in found.metrics.items():
        if metric not in known:
            said.append(f"unknown metric {metric}")
            continue
        unknown = set(matchers) - known[metric] - TARGET_LABELS
        said.extend(f"{metric} has no label {label}" for label in sorted(unknown))
    labels = set(TARGET_LABELS).union(*(known.get(m, set()) for m in found.metrics))
    said.extend(f"no metric here has the label {g}" for g in sorted(found.grouping - labels))
    if not found.comparisons:
        said.append("no comparison: the alert would fire on every series")
    return said
