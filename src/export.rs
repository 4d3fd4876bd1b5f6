//! Tables as files (SPEC §19): CSV (one table), a zip of CSVs (several),
//! and XLSX workbooks (a sheet per table). The channels' and the accounts
//! list's exports are built here, and reports attach the same files.
//!
//! A table is named columns of JSON values as the API shows them (money in
//! currency units, ratios unrounded); a column's unit comes from the metric
//! catalogue and decides its XLSX number format. Text cells stay text: in
//! XLSX a string is never a formula, and in CSV a text cell that a
//! spreadsheet would run as a formula (it starts with `=`, `+`, `-`, `@`,
//! a tab or a carriage return) is written with a leading `'`.

use std::io::Write as _;

use rust_xlsxwriter::{Format, FormatAlign, Workbook, XlsxError};
use serde_json::Value;

use crate::metric::{ACCOUNT, KPI, Unit};

/// A column: its header (a dotted path of the object it came from) and
/// what it measures.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub path: String,
    pub unit: Unit,
}

impl Column {
    /// A column of text (an id, a name).
    pub fn text(path: &str) -> Column {
        Column { path: path.to_owned(), unit: Unit::Text }
    }

    /// `path` with the unit the catalogue gives it (account figures first,
    /// then KPI figures; a count where the catalogue does not list it).
    pub fn of_path(path: &str) -> Column {
        let unit = ACCOUNT
            .iter()
            .map(|m| (m.path, m.unit))
            .chain(KPI.iter().map(|m| (m.path, m.unit)))
            .find(|(p, _)| *p == path)
            .map(|(_, u)| u)
            .unwrap_or(Unit::Count);
        Column { path: path.to_owned(), unit }
    }
}

/// A named table (the name is a file name inside a zip and a sheet name).
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    /// The table whose rows are `objects`, one column per path (absent
    /// values are empty cells).
    pub fn of_objects<'a>(name: &str, columns: Vec<Column>, objects: impl IntoIterator<Item = &'a Value>) -> Table {
        let rows = objects.into_iter().map(|o| columns.iter().map(|c| at_path(o, &c.path).clone()).collect()).collect();
        Table { name: name.to_owned(), columns, rows }
    }
}

/// The value at a dotted `path` of `v` (null where absent).
pub fn at_path<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| v.get(k).unwrap_or(&Value::Null))
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("XLSX: {0}")]
    Xlsx(#[from] XlsxError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A CSV cell: null empty, text as written (guarded, see the module), the
/// rest as JSON writes it.
fn csv_cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) if s.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{s}"),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The table as CSV: a header row of the column paths, then the rows.
pub fn csv(table: &Table) -> Result<Vec<u8>, ExportError> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(table.columns.iter().map(|c| c.path.as_str()))?;
    for row in &table.rows {
        out.write_record(row.iter().map(csv_cell))?;
    }
    out.into_inner().map_err(|e| ExportError::Io(e.into_error()))
}

/// The tables as one zip of `<name>.csv` files, in order.
pub fn csv_zip(tables: &[Table]) -> Result<Vec<u8>, ExportError> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for table in tables {
        zip.start_file(format!("{}.csv", table.name), options)?;
        zip.write_all(&csv(table)?)?;
    }
    Ok(zip.finish()?.into_inner())
}

/// The XLSX number format of a unit (`None`: the cell's default).
fn number_format(unit: Unit) -> Option<&'static str> {
    match unit {
        Unit::Money => Some("#,##0.00"),
        Unit::Ratio => Some("0.0000"),
        Unit::Score | Unit::Minutes => Some("0.0"),
        Unit::Count | Unit::Days => Some("0"),
        Unit::Text | Unit::Date | Unit::Instant => None,
    }
}

/// The tables as one workbook, a sheet per table: a bold, frozen header
/// row with a filter, numbers as numbers in their unit's format (the full
/// value is kept; the format only rounds what is displayed), text as text.
pub fn xlsx(tables: &[Table]) -> Result<Vec<u8>, ExportError> {
    let mut workbook = Workbook::new();
    write_sheets(&mut workbook, tables)?;
    Ok(workbook.save_to_buffer()?)
}

/// Adds a sheet per table to `workbook` (one empty sheet for none).
pub fn write_sheets(workbook: &mut Workbook, tables: &[Table]) -> Result<(), ExportError> {
    let header = Format::new().set_bold().set_align(FormatAlign::Center);
    for table in tables {
        let sheet = workbook.add_worksheet_with_constant_memory();
        sheet.set_name(&table.name)?;
        let formats: Vec<Format> = table
            .columns
            .iter()
            .map(|c| number_format(c.unit).map_or_else(Format::new, |f| Format::new().set_num_format(f)))
            .collect();
        for (col, c) in table.columns.iter().enumerate() {
            let col = col as u16;
            sheet.write_string_with_format(0, col, &c.path, &header)?;
            sheet.set_column_width(col, (c.path.len() as f64 + 2.0).clamp(10.0, 40.0))?;
        }
        for (i, row) in table.rows.iter().enumerate() {
            let r = i as u32 + 1;
            for (col, v) in row.iter().enumerate() {
                let c = col as u16;
                match v {
                    Value::Null => {}
                    Value::Number(n) => {
                        sheet.write_number_with_format(r, c, n.as_f64().unwrap_or(f64::NAN), &formats[col])?;
                    }
                    Value::Bool(b) => {
                        sheet.write_boolean(r, c, *b)?;
                    }
                    Value::String(s) => {
                        sheet.write_string(r, c, s)?;
                    }
                    other => {
                        sheet.write_string(r, c, other.to_string())?;
                    }
                }
            }
        }
        if !table.columns.is_empty() {
            sheet.set_freeze_panes(1, 0)?;
            sheet.autofilter(0, 0, table.rows.len() as u32, table.columns.len() as u16 - 1)?;
        }
    }
    if tables.is_empty() {
        workbook.add_worksheet();
    }
    Ok(())
}

/// A file name part made of what any file system and `Content-Disposition`
/// take: letters, digits, `.`, `_`, `-` (anything else becomes `-`).
pub fn file_part(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table() -> Table {
        let objects = [
            json!({"account_id": "a", "revenue": {"arr": 1234.5}, "info": {"name": "=HYPERLINK(1)"}}),
            json!({"account_id": "b", "revenue": {"arr": null}, "info": {"name": "Beta, Inc."}}),
        ];
        let columns = vec![Column::text("account_id"), Column::of_path("revenue.arr"), Column::of_path("info.name")];
        Table::of_objects("accounts", columns, &objects)
    }

    #[test]
    fn csv_writes_paths_values_and_guards_formulas() {
        let text = String::from_utf8(csv(&table()).unwrap()).unwrap();
        assert_eq!(text, "account_id,revenue.arr,info.name\na,1234.5,'=HYPERLINK(1)\nb,,\"Beta, Inc.\"\n");
        assert_eq!(Column::of_path("revenue.arr").unit, Unit::Money);
        assert_eq!(Column::of_path("revenue.nrr_qtd").unit, Unit::Ratio);
    }

    #[test]
    fn a_zip_holds_one_csv_per_table_and_a_workbook_opens() {
        let mut second = table();
        second.name = "again".into();
        let bytes = csv_zip(&[table(), second]).unwrap();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(
            archive.file_names().collect::<std::collections::BTreeSet<_>>(),
            ["accounts.csv", "again.csv"].into()
        );
        let mut inner = String::new();
        std::io::Read::read_to_string(&mut archive.by_name("again.csv").unwrap(), &mut inner).unwrap();
        assert_eq!(inner.as_bytes(), csv(&table()).unwrap());
        let book = xlsx(&[table()]).unwrap();
        assert_eq!(&book[..2], b"PK", "an XLSX is a zip");
        assert_eq!(file_part("csm:é 1/x"), "csm---1-x");
    }
}
