"""Reads a downloaded export the way a spreadsheet user's tools would, for
the browser test (e2e/dashboard.mjs): CSV with Python's csv module, a zip of
CSVs with zipfile + csv, XLSX with openpyxl. Prints one JSON object:
{"tables": {name: {"header": [...], "rows": [[...], ...]}}}; XLSX cells keep
their types (numbers stay numbers, so typed money can be checked).

    python3 read_export.py FILE
"""

import csv
import io
import json
import sys
import zipfile


def read_csv(text):
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return {"header": rows[0] if rows else [], "rows": rows[1:]}


def main(path):
    with open(path, "rb") as f:
        data = f.read()
    tables = {}
    if data[:2] == b"PK" and path.endswith(".xlsx"):
        import openpyxl

        wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        for ws in wb.worksheets:
            rows = [list(r) for r in ws.iter_rows(values_only=True)]
            # Trailing empty rows (a read-only sheet may report its dimension generously).
            while rows and all(v is None for v in rows[-1]):
                rows.pop()
            tables[ws.title] = {"header": rows[0] if rows else [], "rows": rows[1:]}
    elif data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for name in z.namelist():
                stem = name.rsplit("/", 1)[-1]
                stem = stem[:-4] if stem.endswith(".csv") else stem
                tables[stem] = read_csv(z.read(name).decode("utf-8-sig"))
    else:
        tables["csv"] = read_csv(data.decode("utf-8-sig"))
    json.dump({"tables": tables}, sys.stdout, default=str)


if __name__ == "__main__":
    main(sys.argv[1])
