//! A rendered report's content (SPEC §17), independent of its format: the
//! header (what, for whom, which period in which zone, the data's `as_of`
//! and the input positions) and titled sections, each a table of the
//! export module's kind. CSV and XLSX are written from it here; the same
//! document feeds HTML and PDF.
//!
//! Rendering is deterministic: the same document gives the same bytes. A
//! zip's entries carry the zip format's fixed default time (no clock is
//! read), and a workbook's creation time is the period's end.

use rust_xlsxwriter::{DocProperties, ExcelDateTime, Workbook};
use serde_json::{Value, json};

use crate::export::{Column, ExportError, Table};
use crate::time::{Ts, format_rfc3339};

/// A consumer's position in one input partition when the data was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// What a report says about itself at the top.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// The report's name (`[[reports]]` name, or the template's for a render).
    pub name: String,
    pub template: &'static str,
    /// `executive`, `manager` or `csm:<id>`.
    pub audience: String,
    pub period_start: Ts,
    pub period_end: Ts,
    pub time_zone: String,
    /// The data's watermark (null: nothing folded yet).
    pub as_of: Option<Ts>,
    pub positions: Vec<Position>,
}

/// A titled table of the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    pub title: String,
    /// What the table shows and how it was chosen (one sentence).
    pub note: String,
    pub table: Table,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub title: String,
    pub header: Header,
    pub sections: Vec<Section>,
}

impl Document {
    /// Whether every section is empty (`skip_if_empty`).
    pub fn is_empty(&self) -> bool {
        self.sections.iter().all(|s| s.table.rows.is_empty())
    }

    /// The header as a two-column table (`field`, `value`), the first file
    /// of a CSV export and the first sheet of a workbook.
    pub fn header_table(&self) -> Table {
        let h = &self.header;
        let positions: Vec<String> =
            h.positions.iter().map(|p| format!("{}/{}@{}", p.topic, p.partition, p.offset)).collect();
        let rows = vec![
            vec![json!("report"), json!(h.name)],
            vec![json!("title"), json!(self.title)],
            vec![json!("template"), json!(h.template)],
            vec![json!("audience"), json!(h.audience)],
            vec![json!("period_start"), json!(format_rfc3339(h.period_start))],
            vec![json!("period_end"), json!(format_rfc3339(h.period_end))],
            vec![json!("time_zone"), json!(h.time_zone)],
            vec![json!("as_of"), h.as_of.map_or(Value::Null, |t| json!(format_rfc3339(t)))],
            vec![json!("positions"), json!(positions.join(" "))],
        ];
        Table { name: "report".into(), columns: vec![Column::text("field"), Column::text("value")], rows }
    }

    /// The tables of the CSV and XLSX forms: the header, then each section.
    pub fn tables(&self) -> Vec<Table> {
        std::iter::once(self.header_table()).chain(self.sections.iter().map(|s| s.table.clone())).collect()
    }

    /// CSV: one file per table, zipped (the header is always one of them).
    pub fn csv_zip(&self) -> Result<Vec<u8>, ExportError> {
        crate::export::csv_zip(&self.tables())
    }

    /// XLSX: a sheet per table, typed cells, created at the period's end.
    pub fn xlsx(&self) -> Result<Vec<u8>, ExportError> {
        let end = time::OffsetDateTime::from_unix_timestamp(self.header.period_end.div_euclid(1_000_000))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let created = ExcelDateTime::from_ymd(end.year() as u16, end.month() as u8, end.day())?.and_hms(
            u16::from(end.hour()),
            end.minute(),
            end.second(),
        )?;
        let properties = DocProperties::new()
            .set_title(&self.title)
            .set_author("cspulse")
            .set_comment(format!("{} for {}", self.header.template, self.header.audience))
            .set_creation_datetime(&created);
        let mut workbook = Workbook::new();
        workbook.set_properties(&properties);
        crate::export::write_sheets(&mut workbook, &self.tables())?;
        Ok(workbook.save_to_buffer()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Document {
        let table = Table {
            name: "attention".into(),
            columns: vec![Column::text("account_id"), Column::of_path("revenue.arr")],
            rows: vec![vec![json!("acme"), json!(1234.5)]],
        };
        Document {
            title: "Daily operations".into(),
            header: Header {
                name: "CSM morning".into(),
                template: "daily_ops",
                audience: "csm:csm-1".into(),
                period_start: 1_800_000_000_000_000,
                period_end: 1_800_086_400_000_000,
                time_zone: "Europe/Berlin".into(),
                as_of: Some(1_800_086_399_000_000),
                positions: vec![Position { topic: "cs.usage".into(), partition: 0, offset: 42 }],
            },
            sections: vec![Section { title: "Needs attention".into(), note: "".into(), table }],
        }
    }

    #[test]
    fn renders_are_byte_identical_and_carry_the_header() {
        let d = document();
        assert_eq!(d.csv_zip().unwrap(), d.csv_zip().unwrap());
        let first = d.xlsx().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(first, d.xlsx().unwrap(), "no clock in the workbook");
        let header = String::from_utf8(crate::export::csv(&d.header_table()).unwrap()).unwrap();
        assert!(header.contains("period_end,2027-01-16T08:00:00Z"), "{header}");
        assert!(header.contains("positions,cs.usage/0@42"), "{header}");
        assert!(!d.is_empty());
    }
}
