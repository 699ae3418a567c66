"""Safe subsets: `--where` is a SQL boolean expression over samples.parquet's columns, evaluated by
DuckDB with file system access, extensions and configuration changes disabled. It selects rows and can
do nothing else: no files are read or written, no Python runs, one expression only."""

from __future__ import annotations

import pandas as pd


class FilterError(ValueError):
    """A filter that is not a valid, safe boolean expression: one line naming the column or token."""


def select_rows(samples: pd.DataFrame, where: str | None) -> pd.DataFrame:
    if not where or not where.strip():
        return samples
    import duckdb

    con = duckdb.connect(
        ":memory:",
        config={"enable_external_access": False, "autoload_known_extensions": False, "lock_configuration": True},
    )
    try:
        con.register("samples", samples.assign(_row=range(len(samples))))
        # one parenthesised expression: a second statement, a UNION or a subquery on files cannot parse
        # into it, and with external access disabled no function can touch a file
        sql = f"SELECT _row FROM samples WHERE ({where})"
        statements = con.extract_statements(sql)
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise FilterError(f"bad --where filter {where!r}: must be one boolean expression, not statements")
        rows = con.execute(sql).fetchall()
    except duckdb.Error as e:
        msg = str(e).splitlines()[0]
        raise FilterError(f"bad --where filter {where!r}: {msg}") from e
    finally:
        con.close()
    return samples.iloc[sorted(r[0] for r in rows)]
