"""`--where`: one boolean expression over samples.parquet's columns, parsed and checked before anything runs.

The text is tokenised and parsed by DuckDB's own parser (`json_serialize_sql`) as the condition of a fixed
query, and accepted only when the parsed query is that fixed query with exactly one expression in its
condition, and the expression is built from an allowlist: column references to the samples table's own
columns, literals, comparisons, AND/OR/NOT, IN lists, BETWEEN, LIKE/ILIKE, IS [NOT] NULL, CASE, CAST,
arithmetic and a few scalar functions. No statements, comments, subqueries, set operations, table
references or table functions get through. What runs is the SQL DuckDB rebuilds from the checked tree
(`json_deserialize_sql`), never the user's text, on a connection without file access or extensions; the
expression must be of type BOOLEAN. Any refusal is a FilterError with a one-line reason."""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pandas as pd

from ..errors import RunError


class FilterError(RunError, ValueError):
    """A filter that is not a valid, safe boolean expression: one line naming the column or token."""


ROW = "_row"
# the fixed query the expression is parsed into: its second select item is the filter
_TEMPLATE = f"SELECT {ROW}, ({{}}) FROM samples"

COMPARISONS = {
    "COMPARE_EQUAL",
    "COMPARE_NOTEQUAL",
    "COMPARE_LESSTHAN",
    "COMPARE_GREATERTHAN",
    "COMPARE_LESSTHANOREQUALTO",
    "COMPARE_GREATERTHANOREQUALTO",
    "COMPARE_DISTINCT_FROM",
    "COMPARE_NOT_DISTINCT_FROM",
}
OPERATORS = {
    "OPERATOR_NOT",
    "OPERATOR_IS_NULL",
    "OPERATOR_IS_NOT_NULL",
    "COMPARE_IN",
    "COMPARE_NOT_IN",
    "OPERATOR_COALESCE",
    "ARRAY_EXTRACT",  # before_keypoints[3]
}
# operators DuckDB's parser turns into functions, and the scalar functions a filter may call
FUNCTIONS = {
    "+", "-", "*", "/", "//", "%", "^", "**", "||",
    "~~", "!~~", "~~*", "!~~*",  # LIKE, NOT LIKE, ILIKE, NOT ILIKE
    "abs", "sign", "round", "floor", "ceil", "ceiling", "sqrt", "least", "greatest", "isnan", "isfinite",
    "lower", "upper", "length", "len", "strlen", "trim", "ltrim", "rtrim", "substring", "substr",
    "starts_with", "ends_with", "prefix", "suffix", "contains", "regexp_matches", "regexp_full_match",
    "nullif", "ifnull", "coalesce", "list_value", "array_length", "list_contains",
}  # fmt: skip


def _reason(where: str, why: str) -> FilterError:
    return FilterError(f"bad --where filter {where!r}: {why}")


def _check_tokens(where: str) -> None:
    """No comments, no statement separators, and parentheses that close inside the expression."""
    tokens = duckdb.tokenize(where)
    depth = 0
    for i, (pos, kind) in enumerate(tokens):
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(where)
        text = where[pos:end].strip()
        if kind == duckdb.token_type.comment:
            raise _reason(where, "comments are not allowed")
        if kind != duckdb.token_type.operator:
            continue
        if ";" in text:
            raise _reason(where, "one expression only, not statements (';')")
        for ch in text:
            depth += (ch == "(") - (ch == ")")
            if depth < 0:
                raise _reason(where, "a ')' closes a parenthesis the expression did not open")
    if depth:
        raise _reason(where, "unbalanced parentheses")


def _serialize(con: duckdb.DuckDBPyConnection, sql: str, where: str) -> dict[str, Any]:
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    if tree.get("error"):
        msg = str(tree.get("error_message", "does not parse")).splitlines()[0]
        raise _reason(where, f"{tree.get('error_type', 'parser')} error: {msg}")
    return tree


def _shape(tree: Any) -> Any:
    """The tree without source positions, to compare two parses."""
    if isinstance(tree, dict):
        return {k: _shape(v) for k, v in tree.items() if not k.startswith("query_location")}
    if isinstance(tree, list):
        return [_shape(v) for v in tree]
    return tree


def _check_expression(node: Any, columns: set[str], where: str) -> None:
    """Every node of the expression is on the allowlist; columns are the samples table's own."""
    if isinstance(node, list):
        for v in node:
            _check_expression(v, columns, where)
        return
    if not isinstance(node, dict):
        return
    if {"node", "from_table", "select_list", "statements"} & node.keys():
        raise _reason(where, "subqueries are not allowed")
    cls, typ = node.get("class"), node.get("type")
    if cls is None:
        pass  # a part of an expression (a literal's value, a CASE branch, a function argument)
    elif cls == "COLUMN_REF":
        names = node.get("column_names") or []
        if len(names) != 1:
            raise _reason(where, f"qualified names are not allowed: {'.'.join(map(str, names))}")
        if str(names[0]).lower() not in columns:
            raise _reason(where, f"unknown column {names[0]!r} (samples.parquet has no such column)")
    elif cls == "FUNCTION":
        name = str(node.get("function_name", ""))
        if name.lower() not in FUNCTIONS or node.get("schema") or node.get("catalog"):
            raise _reason(where, f"function {name!r} is not allowed")
        if node.get("filter") is not None or node.get("distinct") or node.get("export_state"):
            raise _reason(where, f"aggregate forms of {name!r} are not allowed")
        if (node.get("order_bys") or {}).get("orders"):
            raise _reason(where, f"ORDER BY inside {name!r} is not allowed")
        if any(a.get("name") for a in node.get("arguments") or []):
            raise _reason(where, f"named arguments of {name!r} are not allowed")
    elif cls == "SUBQUERY":
        raise _reason(where, "subqueries are not allowed")
    elif cls == "PARAMETER":
        raise _reason(where, "parameters are not allowed")
    elif cls == "OPERATOR" and typ not in OPERATORS:
        raise _reason(where, f"operator {typ} is not allowed")
    elif cls == "COMPARISON" and typ not in COMPARISONS:
        raise _reason(where, f"comparison {typ} is not allowed")
    elif cls not in {"CONSTANT", "CONJUNCTION", "BETWEEN", "CASE", "CAST", "TYPE", "OPERATOR", "COMPARISON"}:
        raise _reason(where, f"{str(cls).lower()} expressions are not allowed")
    for value in node.values():
        _check_expression(value, columns, where)


def parse_where(con: duckdb.DuckDBPyConnection, where: str, columns: set[str]) -> str:
    """The SQL (rebuilt from the checked tree) of `SELECT _row, (<where>) FROM samples`; raises FilterError."""
    _check_tokens(where)
    tree = _serialize(con, _TEMPLATE.format(where), where)
    skeleton = _serialize(con, _TEMPLATE.format("TRUE"), where)
    stmts = tree.get("statements") or []
    if len(stmts) != 1:
        raise _reason(where, "one expression only, not statements")
    node = stmts[0].get("node") or {}
    if node.get("type") != "SELECT_NODE":
        raise _reason(where, "set operations (UNION, EXCEPT, INTERSECT) are not allowed")
    items = node.get("select_list") or []
    if len(items) != 2:
        raise _reason(where, "one expression only")
    expr = items[1]
    if expr.get("alias"):
        raise _reason(where, "aliases are not allowed")
    _check_expression(expr, columns, where)
    # everything but the filter must be the fixed query exactly: no FROM of other tables, no WHERE or
    # GROUP BY smuggled in, no CTEs, no modifiers, no parameters
    mine, fixed = _shape(tree), _shape(skeleton)
    mine["statements"][0]["node"]["select_list"][1] = fixed["statements"][0]["node"]["select_list"][1] = None
    if mine != fixed:
        raise _reason(where, "one expression only, over the samples table")
    return con.execute("SELECT json_deserialize_sql(?)", [json.dumps(tree)]).fetchall()[0][0]


def select_rows(samples: pd.DataFrame, where: str | None) -> pd.DataFrame:
    """The rows of `samples` for which the --where expression is TRUE (all rows when there is none)."""
    if not where or not where.strip():
        return samples
    columns = {str(c).lower() for c in samples.columns} - {ROW}
    con = duckdb.connect(
        ":memory:",
        config={"enable_external_access": False, "autoload_known_extensions": False, "lock_configuration": True},
    )
    try:
        sql = parse_where(con, where, columns)
        con.register("samples", samples.assign(**{ROW: range(len(samples))}))
        cur = con.execute(sql)
        kind = str(cur.description[1][1])
        if kind != "BOOLEAN":
            raise _reason(where, f"must be a boolean expression, not {kind}")
        rows = [r for r, keep in cur.fetchall() if keep is True]
    except duckdb.Error as e:
        raise _reason(where, str(e).splitlines()[0]) from e
    finally:
        con.close()
    return samples.iloc[sorted(rows)]
