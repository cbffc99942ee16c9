"""Monthly ingestion: one export folder -> the ``raw`` schema, all or nothing.

A month is read and checked completely before the database is touched: every
cell against its declared kind (``raw_schema``), user ids unique and present
in that month's ``users.csv``. Any problem raises :class:`IngestError` naming
the file, line, column and value. Only then, in one transaction, the month's
previous rows are deleted and the six files are COPYed in. Other months are
never touched.

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
from psycopg import sql

from streamflow.db import connect
from streamflow.errors import IngestError
from streamflow.raw_schema import (
    EXPORT_FILES,
    FALSE_WORDS,
    INGESTION_LOG_SQL,
    RAW_SCHEMA,
    ROSTER,
    TRUE_WORDS,
    Column,
    ExportFile,
    create_table_sql,
)
from streamflow.settings import Settings

FIRST_AS_OF = date(2024, 1, 31)  # as_of of month_000 when a seeds folder has no as_of.csv
MONTH_DIR = re.compile(r"^month_(\d{3,})$")

# A cell of each kind, after stripping. Decimal point only: "1.234,56" and "1,5" are rejected,
# as are nan/inf, which no export should contain.
PATTERNS = {
    "int": re.compile(r"[+-]?\d+"),
    "float": re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"),
    "numeric": re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"),
    "date": re.compile(r"\d{4}-\d{2}-\d{2}"),
}
INT32_MAX = 2**31 - 1
KIND_HELP = {
    "int": "a whole number",
    "float": "a number with '.' as decimal point",
    "numeric": "a number with '.' as decimal point",
    "date": "a date YYYY-MM-DD",
    "bool": f"a boolean ({'/'.join(sorted(TRUE_WORDS))} or {'/'.join(sorted(FALSE_WORDS))}, "
            "case-insensitive; empty = unknown)",
}


@dataclass
class CheckedFile:
    export: ExportFile
    path: Path
    frame: pd.DataFrame  # normalised text cells, None for NULL, in declared column order

    def content_digest(self) -> str:
        """A digest of the normalised rows: a BOM/CRLF copy of the same data has the same digest."""
        row_hashes = pd.util.hash_pandas_object(self.frame.fillna("\x00NULL"), index=False)
        header = ",".join(self.frame.columns).encode()
        return hashlib.sha256(header + row_hashes.to_numpy().tobytes()).hexdigest()

    def copy_payload(self, as_of: date, loaded_at) -> str:
        """as_of, loaded_at and the file's columns as COPY-ready CSV (empty unquoted field = NULL)."""
        frame = self.frame.copy(deep=False)
        frame.insert(0, "loaded_at", loaded_at.isoformat())
        frame.insert(0, "as_of", as_of.isoformat())
        buf = io.StringIO()
        frame.to_csv(buf, index=False, header=False, lineterminator="\n", na_rep="",
                     quoting=csv.QUOTE_MINIMAL)
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


def _line(index: int) -> int:
    # Line numbers as a text editor shows them: the header is line 1.
    return int(index) + 2


def _check_column(path: Path, col: Column, cells: pd.Series) -> pd.Series:
    """Validate and normalise one column; returns it with None for NULL."""
    stripped = cells.str.strip()
    empty = stripped == ""
    if not col.nullable and empty.any():
        idx = empty.idxmax()
        _fail(path, _line(idx), col.name, cells[idx], "empty; every row needs a value here")
    if col.kind == "bool":
        lowered = stripped.str.lower()
        is_true, is_false = lowered.isin(TRUE_WORDS), lowered.isin(FALSE_WORDS)
        bad = ~(is_true | is_false | empty)
        if bad.any():
            idx = bad.idxmax()
            _fail(path, _line(idx), col.name, cells[idx], f"expected {KIND_HELP['bool']}")
        out = pd.Series(None, index=cells.index, dtype=object)
        out[is_true] = "t"
        out[is_false] = "f"
        return out
    if col.kind in PATTERNS:
        ok = stripped.str.fullmatch(PATTERNS[col.kind]) | empty
        if col.kind == "date" and ok.all():
            parsed = pd.to_datetime(stripped.where(~empty), format="%Y-%m-%d", errors="coerce")
            ok = ok & (parsed.notna() | empty)
        if col.kind == "int" and ok.all():
            ok = ok & (empty | (pd.to_numeric(stripped.where(~empty), errors="coerce").abs() <= INT32_MAX))
        if not ok.all():
            idx = (~ok).idxmax()
            _fail(path, _line(idx), col.name, cells[idx], f"expected {KIND_HELP[col.kind]}")
    return stripped.where(~empty, None)


def read_export(path: Path, export: ExportFile) -> CheckedFile:
    """Read one CSV, check its header and every cell; raise IngestError on the first problem."""
    if not path.is_file():
        _fail(path, None, None, None, f"missing file: a month folder must hold {export.filename}")
    try:
        # utf-8-sig drops a BOM; the csv parser accepts CRLF. Everything is read as text so
        # leading zeros and exact decimals survive, and nothing is guessed from the data.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False,
                            encoding="utf-8-sig", skipinitialspace=False)
    except pd.errors.EmptyDataError:
        _fail(path, 1, None, None, "the file is empty (no header line)")
    except UnicodeDecodeError as exc:
        _fail(path, None, None, None, f"not UTF-8 text: {exc}")
    except pd.errors.ParserError as exc:
        _fail(path, None, None, None, f"malformed CSV: {exc}")
    header = [str(c).strip() for c in frame.columns]
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
    frame.columns = header
    if frame.empty:
        _fail(path, None, None, None, "header only: the file has no data rows")
    short = frame.isna().any(axis=1)
    if short.any():
        idx = short.idxmax()
        _fail(path, _line(idx), None, None, f"fewer fields than the header's {len(expected)}")
    frame = frame[expected]
    checked = pd.DataFrame({c.name: _check_column(path, c, frame[c.name]) for c in export.columns})
    dup = checked["user_id"].duplicated(keep="first")
    if dup.any():
        idx = dup.idxmax()
        first = checked.index[checked["user_id"] == checked["user_id"][idx]][0]
        _fail(path, _line(idx), "user_id", checked["user_id"][idx],
              f"duplicate user_id (first seen on line {_line(first)})")
    return CheckedFile(export, path, checked)


def read_month(month_dir: Path) -> list[CheckedFile]:
    """Check a whole month folder; the roster (users.csv) comes first."""
    month_dir = Path(month_dir)
    if not month_dir.is_dir():
        raise IngestError(f"{month_dir}: not a folder")
    files = [read_export(month_dir / e.filename, e) for e in EXPORT_FILES]
    roster = next(f for f in files if f.export.name == ROSTER)
    known = pd.Index(roster.frame["user_id"])
    for f in files:
        if f is roster:
            continue
        unknown = ~f.frame["user_id"].isin(known)
        if unknown.any():
            idx = unknown.idxmax()
            _fail(f.path, _line(idx), "user_id", f.frame["user_id"][idx],
                  f"user_id not in this month's {roster.export.filename} "
                  f"({int(unknown.sum())} such row(s))")
    return files


def _ensure_raw_schema(conn) -> None:
    conn.execute(f"create schema if not exists {RAW_SCHEMA}")
    for export in EXPORT_FILES:
        conn.execute(create_table_sql(export))
    conn.execute(INGESTION_LOG_SQL)


def ingest_month(settings: Settings, month_dir: Path, as_of: date, *, quiet: bool = False) -> bool:
    """Load one month. Returns False when the month was already loaded with identical content."""
    if not isinstance(as_of, date):
        raise IngestError(f"as_of must be a date, got {as_of!r}")
    started = time.monotonic()
    say = (lambda *_: None) if quiet else (lambda msg: print(msg, flush=True))
    say(f"[{as_of}] checking {month_dir}")
    files = read_month(Path(month_dir))
    digests = {f.export.name: f.content_digest() for f in files}
    counts = {f.export.name: len(f.frame) for f in files}

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
            table = sql.Identifier(RAW_SCHEMA, f.export.name)
            conn.execute(sql.SQL("delete from {} where as_of = %s").format(table), (as_of,))
            columns = sql.SQL(", ").join(map(sql.Identifier, ["as_of", "loaded_at", *f.export.column_names]))
            copy_sql = sql.SQL("copy {} ({}) from stdin (format csv)").format(table, columns)
            with conn.cursor().copy(copy_sql) as copy:
                copy.write(f.copy_payload(as_of, loaded_at))
            say(f"[{as_of}]   {f.export.filename:<22}{counts[f.export.name]:>11,} rows")
        conn.execute(
            f"""insert into {RAW_SCHEMA}.ingestion_log (as_of, source_dir, loaded_at, row_counts, file_sha256)
                values (%s, %s, %s, %s, %s)
                on conflict (as_of) do update set source_dir = excluded.source_dir,
                    loaded_at = excluded.loaded_at, row_counts = excluded.row_counts,
                    file_sha256 = excluded.file_sha256""",
            (as_of, str(Path(month_dir).resolve()), loaded_at, json.dumps(counts), json.dumps(digests)),
        )
        for f in files:
            conn.execute(sql.SQL("analyze {}").format(sql.Identifier(RAW_SCHEMA, f.export.name)))
        conn.commit()
    say(f"[{as_of}] loaded in {time.monotonic() - started:.1f}s")
    return True


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
