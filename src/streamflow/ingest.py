"""Monthly ingestion: one export folder -> the ``raw`` schema, all or nothing.

A month is read and checked completely before the database is touched: every
cell against its declared kind (``raw_schema``), user ids unique and present
in that month's ``users.csv``. Any problem raises :class:`IngestError` naming
the file, line, column and value. Only then, in one transaction, the six files are
COPYed into new tables that replace the month's partitions of the raw tables.
Other months are never touched.

Re-ingesting a month whose normalised content is unchanged (same rows, even
with a BOM or CRLF line endings) is a no-op: the month keeps its ``loaded_at``,
so nothing downstream sees a change. Surrounding spaces are stripped from
every cell (``user_id`` included); empty cells become NULL.
"""

from __future__ import annotations

import calendar
import csv
import hashlib
import io
import json
import re
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from streamflow.db import connect
from streamflow.errors import IngestError
from streamflow.features import FEAST_SCHEMA
from streamflow.marts import FEATURE_COLUMNS, SOURCE_EXPORT, as_of_instant
from streamflow.raw_schema import (
    EXPORT_FILES,
    FALSE_WORDS,
    INGESTION_LOG_SQL,
    RAW_SCHEMA,
    ROSTER,
    TRUE_WORDS,
    USER_ID,
    USER_ID_PATTERN,
    Column,
    ExportFile,
    create_table_sql,
    partition_name,
)
from streamflow.settings import Settings

FIRST_AS_OF = date(2024, 1, 31)  # as_of of month_000 when a seeds folder has no as_of.csv
MONTH_DIR = re.compile(r"^month_(\d{3,})$")

# A cell of each kind, after stripping (RE2 syntax, matched by Arrow). Decimal point only:
# "1.234,56" and "1,5" are rejected, as are nan/inf, which no export should contain.
NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
PATTERNS = {
    "int": r"^[+-]?\d{1,10}$",
    "float": NUMBER,
    "numeric": NUMBER,
    "date": r"^\d{4}-\d{2}-\d{2}$",
}
INT32_MAX = 2**31 - 1
MANTISSA_NOT_ZERO = r"^[^eE]*[1-9]"  # "0.0e5" is zero; "1e-400" is not (but is 0 as a double)
# Arrow reads a CSV in blocks; a row must fit in one.
BLOCK_SIZE = 16 << 20


def _numeric_precisions() -> dict[tuple[str, str], tuple[int, int]]:
    """(export, column) -> (precision, scale) of the numeric(p,s) the marts keep it as, so a
    value that would overflow there is refused here, with its line, not deep in `dbt build`."""
    out = {}
    for mart, columns in FEATURE_COLUMNS.items():
        for name, pg_type in columns:
            found = re.fullmatch(r"numeric\((\d+),(\d+)\)", pg_type)
            if found:
                out[(SOURCE_EXPORT[mart], name)] = (int(found[1]), int(found[2]))
    return out


NUMERIC_PRECISION = _numeric_precisions()
KIND_HELP = {
    "int": "a whole number (32-bit)",
    "float": "a number with '.' as decimal point",
    "numeric": "a number with '.' as decimal point",
    "date": "a date YYYY-MM-DD",
    "bool": f"a boolean ({'/'.join(sorted(TRUE_WORDS))} or {'/'.join(sorted(FALSE_WORDS))}, "
            "case-insensitive; empty = unknown)",
}
_CSV_OUT = pacsv.WriteOptions(include_header=False, quoting_style="needed")


@dataclass
class CheckedFile:
    export: ExportFile
    path: Path
    table: pa.Table  # normalised text cells (null for NULL), in declared column order

    @property
    def rows(self) -> int:
        return self.table.num_rows

    def user_ids(self) -> pa.ChunkedArray:
        return self.table.column("user_id")

    def csv_bytes(self) -> bytes:
        """The rows as COPY-ready CSV (an empty unquoted field is NULL)."""
        buf = io.BytesIO()
        pacsv.write_csv(self.table, buf, _CSV_OUT)
        return buf.getvalue()


def _fail(path: Path, line: int | None, column: str | None, value: str | None, problem: str):
    where = str(path)
    if line is not None:
        where += f", line {line}"
    if column is not None:
        where += f", column '{column}'"
    if value is not None:
        shown = value if len(value) <= 60 else value[:57] + "..."
        where += f", value {shown!r}"
    raise IngestError(f"{where}: {problem}")


def _first(mask) -> int | None:
    """Index of the first True in a boolean Arrow array, or None."""
    index = pc.index(mask.fill_null(False), True).as_py()
    return None if index < 0 else index


def _rows_with_lines(path: Path):
    """(line, fields) of every data row, line as a text editor numbers it (the header is 1).

    Only for error messages: Arrow's reader does not know line numbers. Python's csv reader,
    like Arrow, skips blank lines and lets a quoted cell span lines, so the n-th row here is
    Arrow's n-th row."""
    with path.open(encoding="utf-8-sig", newline="", errors="replace") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        start = reader.line_num + 1
        while True:
            try:
                fields = next(reader, None)
            except csv.Error as exc:  # e.g. a quote never closed swallows the rest of the file
                _fail(path, start, None, None, f"unreadable row ({exc}): an unbalanced quote?")
            if fields is None:
                return
            if fields:
                yield start, fields
            start = reader.line_num + 1


def _line(path: Path, index: int) -> int | None:
    """The line where data row ``index`` (0-based) starts."""
    for n, (line, _) in enumerate(_rows_with_lines(path)):
        if n == index:
            return line
    return None


def _check_column(path: Path, export: ExportFile, col: Column, cells: pa.ChunkedArray) -> pa.ChunkedArray:
    """Validate and normalise one column; returns it stripped, with null for NULL."""
    stripped = pc.utf8_trim_whitespace(cells)
    empty = pc.equal(stripped, "")

    def fail_at(mask, problem: str):
        idx = _first(mask)
        if idx is not None:
            _fail(path, _line(path, idx), col.name, cells[idx].as_py(), problem)

    if not col.nullable:
        fail_at(empty, "empty; every row needs a value here")
    if col.kind == "bool":
        lowered = pc.utf8_lower(stripped)
        is_true = pc.is_in(lowered, value_set=pa.array(sorted(TRUE_WORDS)))
        is_false = pc.is_in(lowered, value_set=pa.array(sorted(FALSE_WORDS)))
        fail_at(pc.invert(pc.or_(pc.or_(is_true, is_false), empty)), f"expected {KIND_HELP['bool']}")
        return pc.if_else(is_true, "t", pc.if_else(is_false, "f", pa.scalar(None, pa.string())))
    if col.kind in PATTERNS:
        ok = pc.or_(pc.match_substring_regex(stripped, PATTERNS[col.kind]), empty)
        fail_at(pc.invert(ok), f"expected {KIND_HELP[col.kind]}")
        if col.kind == "date":  # well-formed but impossible dates (2022-02-30) do not round-trip
            parsed = pc.strptime(stripped, format="%Y-%m-%d", unit="s", error_is_null=True)
            same = pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), stripped)
            fail_at(pc.invert(pc.or_(same.fill_null(False), empty)), f"expected {KIND_HELP['date']}")
        nulled = pc.if_else(empty, pa.scalar(None, pa.string()), stripped)
        if col.kind == "int":
            values = pc.cast(nulled, pa.int64())
            fail_at(pc.greater(pc.abs(values), INT32_MAX), f"expected {KIND_HELP['int']}")
        if col.kind in ("float", "numeric"):
            values = pc.cast(nulled, pa.float64())
            # PostgreSQL refuses a double that overflows to infinity or underflows to zero.
            underflow = pc.and_(pc.equal(values, 0), pc.match_substring_regex(stripped, MANTISSA_NOT_ZERO))
            fail_at(pc.or_(pc.is_inf(values), underflow), "the number is out of range for a double")
        precision = NUMERIC_PRECISION.get((export.name, col.name))
        if precision is not None:
            digits, scale = precision
            limit = 10.0 ** (digits - scale) - 0.5 * 10.0 ** -scale  # rounded to the scale, still fits
            fail_at(pc.greater_equal(pc.abs(values), limit),
                    f"the number is too large: at most {digits - scale} digits before the decimal point "
                    f"(kept as numeric({digits},{scale}))")
    else:  # text: one line per row, so the COPY payload can be prefixed line by line
        fail_at(pc.match_substring_regex(stripped, r"[\r\n]"), "line breaks inside a cell are not allowed")
        fail_at(pc.match_substring_regex(stripped, r"\x00"), "NUL characters are not allowed in text")
        if col == USER_ID:
            fail_at(pc.invert(pc.or_(pc.match_substring_regex(stripped, USER_ID_PATTERN), empty)),
                    f"a user_id must match {USER_ID_PATTERN} (letters, digits, _ . : @ -; "
                    "at most 64 characters)")
    return pc.if_else(empty, pa.scalar(None, pa.string()), stripped)


def _read_header(path: Path, export: ExportFile) -> list[str]:
    with path.open("rb") as fh:
        first = fh.readline(BLOCK_SIZE)
    try:
        header = next(csv.reader([first.decode("utf-8-sig")]), None)
    except UnicodeDecodeError as exc:
        _fail(path, 1, None, None, f"not UTF-8 text: {exc.reason} at byte {exc.start + 1} of the line")
    if not header:
        _fail(path, 1, None, None, "the file is empty (no header line)")
    header = [c.strip() for c in header]
    expected = export.column_names
    missing = [c for c in expected if c not in header]
    unexpected = [c for c in header if c not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected column(s) {', '.join(unexpected)}")
        _fail(path, 1, None, None, "; ".join(parts) + f" (expected exactly: {', '.join(expected)})")
    if len(set(header)) != len(header):
        _fail(path, 1, None, None, "a column name appears twice in the header")
    return header


def _explain_unreadable(path: Path, width: int, exc: Exception):
    """Arrow could not read the file: find the first line at fault ourselves."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as bad:
                _fail(path, number, None, None,
                      f"not UTF-8 text: {bad.reason} at byte {bad.start + 1} of the line")
            if len(raw) >= BLOCK_SIZE:
                _fail(path, number, None, None, f"a line longer than {BLOCK_SIZE >> 20} MiB")
    for line, fields in _rows_with_lines(path):
        if len(fields) != width:
            _fail(path, line, None, None, f"{len(fields)} fields where the header has {width}")
    _fail(path, None, None, None, f"malformed CSV: {exc}")


def read_export(path: Path, export: ExportFile) -> CheckedFile:
    """Read one CSV, check its header and every cell; raise IngestError on the first problem."""
    if not path.is_file():
        _fail(path, None, None, None, f"missing file: a month folder must hold {export.filename}")
    header = _read_header(path, export)
    try:
        # Everything is read as text (leading zeros and exact decimals survive, nothing is
        # guessed from the data); Arrow skips a UTF-8 BOM and accepts CRLF.
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, block_size=BLOCK_SIZE),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in header}, strings_can_be_null=False,
                quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        _explain_unreadable(path, len(header), exc)
    if table.num_rows == 0:
        _fail(path, None, None, None, "header only: the file has no data rows")
    checked = pa.table({c.name: _check_column(path, export, c, table.column(c.name)) for c in export.columns})
    ids = pd.Series(checked.column("user_id").to_numpy(zero_copy_only=False))
    dup = ids.duplicated(keep="first")
    if dup.any():
        idx = int(dup.to_numpy().argmax())
        first = int((ids == ids[idx]).to_numpy().argmax())
        _fail(path, _line(path, idx), "user_id", ids[idx],
              f"duplicate user_id (first seen on line {_line(path, first)})")
    return CheckedFile(export, path, checked)


def read_month(month_dir: Path, say=lambda _msg: None) -> list[CheckedFile]:
    """Check a whole month folder; the roster (users.csv) comes first."""
    month_dir = Path(month_dir)
    if not month_dir.is_dir():
        raise IngestError(f"{month_dir}: not a folder")
    files = []
    for export in EXPORT_FILES:
        files.append(read_export(month_dir / export.filename, export))
        say(f"  checked {export.filename:<22}{files[-1].rows:>11,} rows")
    roster = next(f for f in files if f.export.name == ROSTER)
    for f in files:
        if f is roster:
            continue
        unknown = pc.invert(pc.is_in(f.user_ids(), value_set=roster.user_ids().combine_chunks()))
        idx = _first(unknown)
        if idx is not None:
            _fail(f.path, _line(f.path, idx), "user_id", f.user_ids()[idx].as_py(),
                  f"user_id not in this month's {roster.export.filename} "
                  f"({pc.sum(unknown).as_py()} such row(s))")
    return files


def _ensure_raw_schema(conn) -> None:
    conn.execute(f"create schema if not exists {RAW_SCHEMA}")
    for export in EXPORT_FILES:
        kind = conn.execute("select relkind from pg_class where oid = to_regclass(%s)",
                            (f"{RAW_SCHEMA}.{export.name}",)).fetchone()
        if kind and kind[0] != "p":
            raise IngestError(f"{RAW_SCHEMA}.{export.name} has the old, unpartitioned layout: run "
                              f"`drop schema {RAW_SCHEMA} cascade` in database {conn.info.dbname} "
                              "and ingest again")
        conn.execute(create_table_sql(export))
    conn.execute(INGESTION_LOG_SQL)


def _replace_partition(conn, f: CheckedFile, as_of: date, loaded_at, payload: bytes) -> None:
    """Load one file into a new table and swap it in as the month's partition.

    Runs inside the month's transaction: until commit, readers see the old month.
    """
    parent = sql.Identifier(RAW_SCHEMA, f.export.name)
    name = partition_name(f.export, as_of)
    staging = sql.Identifier(RAW_SCHEMA, f"{name}_new")
    conn.execute(sql.SQL("create table {} (like {} including defaults including constraints)")
                 .format(staging, parent))
    # Lets ATTACH skip its validation scan.
    conn.execute(sql.SQL("alter table {} add check (as_of = {})").format(staging, sql.Literal(as_of)))
    columns = sql.SQL(", ").join(map(sql.Identifier, ["as_of", "loaded_at", *f.export.column_names]))
    # FREEZE: the table was created in this transaction, so rows need no later vacuum freeze.
    copy_sql = sql.SQL("copy {} ({}) from stdin (format csv, freeze)").format(staging, columns)
    prefix = f"{as_of.isoformat()},{loaded_at.isoformat()},".encode()  # cells hold no line breaks
    with conn.cursor().copy(copy_sql) as copy:
        copy.write(prefix + payload[:-1].replace(b"\n", b"\n" + prefix) + b"\n")
    conn.execute(sql.SQL("alter table {} add primary key (as_of, user_id)").format(staging))
    conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(RAW_SCHEMA, name)))
    conn.execute(sql.SQL("alter table {} rename to {}").format(staging, sql.Identifier(name)))
    conn.execute(sql.SQL("alter table {} attach partition {} for values in ({})").format(
        parent, sql.Identifier(RAW_SCHEMA, name), sql.Literal(as_of)))
    conn.execute(sql.SQL("analyze {}").format(sql.Identifier(RAW_SCHEMA, name)))


def ingest_month(settings: Settings, month_dir: Path, as_of: date, *, quiet: bool = False) -> bool:
    """Load one month. Returns False when the month was already loaded with identical content."""
    if not isinstance(as_of, date):
        raise IngestError(f"as_of must be a date, got {as_of!r}")
    if as_of != month_end(as_of, 0):
        # Snapshots are monthly: the marts, the TTL rule and the API's staleness marking
        # all count in month-ends. A mid-month date is a typo more often than not.
        raise IngestError(f"{month_dir}: as_of {as_of} is not a month-end "
                          f"(did you mean {month_end(as_of, 0)}?)")
    started = time.monotonic()
    say = (lambda *_: None) if quiet else (lambda msg: print(msg, flush=True))
    say(f"[{as_of}] checking {month_dir}")
    files = read_month(Path(month_dir), say)
    payloads = {f.export.name: f.csv_bytes() for f in files}
    # A digest of the normalised rows: a BOM/CRLF copy of the same data has the same digest.
    digests = {name: hashlib.sha256(p).hexdigest() for name, p in payloads.items()}
    counts = {f.export.name: f.rows for f in files}

    with connect(settings) as conn:
        _ensure_raw_schema(conn)
        conn.commit()
        # Serialise loads of the same month; readers keep seeing the old rows until commit.
        conn.execute("select pg_advisory_xact_lock(hashtext('streamflow.ingest'), %s)",
                     (as_of.toordinal(),))
        previous = conn.execute(f"select file_sha256 from {RAW_SCHEMA}.ingestion_log where as_of = %s",
                                (as_of,)).fetchone()
        if previous and previous[0] == digests:
            say(f"[{as_of}] unchanged since the last load: nothing to do")
            conn.rollback()
            return False
        loaded_at = conn.execute("select now()").fetchone()[0]
        for f in files:
            _replace_partition(conn, f, as_of, loaded_at, payloads[f.export.name])
            say(f"  loaded  {f.export.filename:<22}{counts[f.export.name]:>11,} rows")
        conn.execute(
            f"""insert into {RAW_SCHEMA}.ingestion_log (as_of, source_dir, loaded_at, row_counts, file_sha256)
                values (%s, %s, %s, %s, %s)
                on conflict (as_of) do update set source_dir = excluded.source_dir,
                    loaded_at = excluded.loaded_at, row_counts = excluded.row_counts,
                    file_sha256 = excluded.file_sha256""",
            (as_of, str(Path(month_dir).resolve()), loaded_at, json.dumps(counts), json.dumps(digests)),
        )
        conn.commit()
    say(f"[{as_of}] loaded in {time.monotonic() - started:.1f}s")
    return True


def unload_month(settings: Settings, as_of: date) -> None:
    """Withdraw a loaded month (loaded by mistake, or under the wrong as_of), in one transaction:
    its raw partitions, its raw.ingestion_log row and its values in the online store go.

    The next `dbt build` deletes it from the marts (a month no longer loaded is dropped) and the
    gate no longer lists it; `materialize` then serves every user their newest remaining snapshot
    (the users whose online values came from this month are absent online until then).
    """

    log = f"{RAW_SCHEMA}.ingestion_log"
    with connect(settings) as conn:
        conn.execute("select pg_advisory_xact_lock(hashtext('streamflow.ingest'), %s)", (as_of.toordinal(),))
        exists = conn.execute("select to_regclass(%s) is not null", (log,)).fetchone()[0]
        if not (exists and conn.execute(f"select 1 from {log} where as_of = %s", (as_of,)).fetchone()):
            raise IngestError(f"month {as_of} is not loaded in database {settings.database}: "
                              "nothing to unload")
        for export in EXPORT_FILES:
            conn.execute(sql.SQL("drop table if exists {}").format(
                sql.Identifier(RAW_SCHEMA, partition_name(export, as_of))))
        conn.execute(f"delete from {log} where as_of = %s", (as_of,))
        # Online tables: those of Feast's PostgreSQL online store in our schema.
        online = conn.execute(
            "select table_name from information_schema.columns where table_schema = %s "
            "and column_name = 'event_ts' intersect select table_name from information_schema.columns "
            "where table_schema = %s and column_name = 'entity_key'", (FEAST_SCHEMA, FEAST_SCHEMA)).fetchall()
        removed = 0
        for (table,) in online:
            removed += conn.execute(sql.SQL("delete from {} where event_ts = %s").format(
                sql.Identifier(FEAST_SCHEMA, table)), (as_of_instant(as_of),)).rowcount
        conn.commit()
    print(f"[{as_of}] unloaded: raw rows and log entry removed, {removed} online values removed. "
          "Next: `make build` (removes it from the marts), then `make materialize`.")


def month_end(first: date, months_after: int) -> date:
    """The last day of the month ``months_after`` months after ``first``'s month."""
    index = first.year * 12 + (first.month - 1) + months_after
    year, month = divmod(index, 12)
    return date(year, month + 1, calendar.monthrange(year, month + 1)[1])


def discover_months(seeds_dir: Path) -> list[tuple[Path, date]]:
    """``(folder, as_of)`` for every ``month_NNN`` folder, oldest first.

    The as_of comes from ``seeds_dir/as_of.csv`` (columns folder,as_of) when present,
    otherwise month_NNN is the NNN-th month-end after 2024-01-31 (month_000 = 2024-01-31,
    month_001 = 2024-02-29, ...). Never the wall clock.
    """
    seeds_dir = Path(seeds_dir)
    folders = sorted(p for p in seeds_dir.iterdir() if p.is_dir() and MONTH_DIR.match(p.name))
    if not folders:
        raise IngestError(f"{seeds_dir}: no month_NNN folders found")
    manifest_path = seeds_dir / "as_of.csv"
    manifest: dict[str, date] = {}
    if manifest_path.is_file():
        with manifest_path.open(encoding="utf-8-sig", newline="") as fh:
            for line_no, row in enumerate(csv.DictReader(fh), start=2):
                try:
                    manifest[row["folder"].strip()] = date.fromisoformat(row["as_of"].strip())
                except (KeyError, AttributeError, ValueError):
                    _fail(manifest_path, line_no, "as_of", str(row.get("as_of")),
                          "expected columns folder,as_of with a date YYYY-MM-DD")
    dates = list(manifest.values())
    repeated = sorted({d for d in dates if dates.count(d) > 1})
    if repeated:
        _fail(manifest_path, None, "as_of", str(repeated[0]),
              "two month folders have the same as_of (the second would replace the first)")
    result = []
    for folder in folders:
        if manifest:
            if folder.name not in manifest:
                _fail(manifest_path, None, "folder", folder.name, "this month folder has no as_of entry")
            result.append((folder, manifest[folder.name]))
        else:
            result.append((folder, month_end(FIRST_AS_OF, int(MONTH_DIR.match(folder.name).group(1)))))
    return result


def ingest_all(settings: Settings, seeds_dir: Path, *, generate_if_missing: bool = False,
               quiet: bool = False) -> list[date]:
    """Load every month folder of ``seeds_dir`` (each month its own transaction)."""
    seeds_dir = Path(seeds_dir)
    if not seeds_dir.is_dir():
        if not generate_if_missing:
            raise IngestError(f"{seeds_dir}: seeds folder not found (set SEEDS_DIR, or run `make seeds`)")
        from streamflow.generate import generate

        print(f"{seeds_dir} not found: generating sample exports there (see `make seeds`)")
        generate(seeds_dir, users=5000, months=3, seed=42)
    months = discover_months(seeds_dir)
    for folder, as_of in months:
        ingest_month(settings, folder, as_of, quiet=quiet)
    return [as_of for _, as_of in months]
