//! `exports`: the cost of exporting the whole accounts list (SPEC §19) at
//! 100,000 accounts, in-process on one core, beside its floor.
//!
//! The state is `accounts`'s portfolio. Each run times, for every account
//! and every column of the export: building the table (filter, order, the
//! account objects, the cells), writing it as CSV, and writing it as an
//! XLSX workbook; and, on the same table, the floor of a CSV: a raw loop
//! writing each cell's text with a separator (no quoting, no escaping),
//! the least any CSV of those cells costs.

use std::io::Write as _;
use std::time::Instant;

use cspulse::auth::{Principal, Role};
use serde_json::Value;

#[derive(clap::Args)]
pub struct ExportsArgs {
    #[arg(long, default_value_t = 100_000)]
    accounts: usize,
    #[arg(long, default_value_t = 2_000)]
    csms: usize,
    /// The export's query (as after `?`; empty: every account).
    #[arg(long, default_value = "")]
    query: String,
}

fn floor_csv(table: &cspulse::export::Table) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 << 20);
    for row in &table.rows {
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match v {
                Value::Null => {}
                Value::String(s) => out.extend_from_slice(s.as_bytes()),
                other => {
                    let _ = write!(out, "{other}");
                }
            }
        }
        out.push(b'\n');
    }
    out
}

pub fn exports(args: ExportsArgs, runs: usize) -> anyhow::Result<()> {
    crate::push::pin_self(0);
    let snapshot = crate::accounts::published_portfolio(args.accounts, args.csms);
    let who = Principal { sub: "bench".into(), role: Role::Manager, csm_id: None };
    println!("\naccounts export in-process: {} accounts, one core, query `{}`", args.accounts, args.query);
    for run in 1..=runs.max(1) {
        let t = Instant::now();
        let table = cspulse::http::accounts::export_table(&snapshot, &who, &args.query)
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.query))?;
        let build = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let csv = cspulse::export::csv(&table)?;
        let csv_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let xlsx = cspulse::export::xlsx(std::slice::from_ref(&table))?;
        let xlsx_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let floor = floor_csv(&table);
        let floor_s = t.elapsed().as_secs_f64();
        println!(
            "  run {run}: {} rows × {} columns: table {build:.2} s; CSV {csv_s:.2} s ({:.1} MiB); XLSX {xlsx_s:.2} s \
             ({:.1} MiB); floor of the CSV (raw cell text) {floor_s:.2} s ({:.1} MiB)",
            table.rows.len(),
            table.columns.len(),
            csv.len() as f64 / 1048576.0,
            xlsx.len() as f64 / 1048576.0,
            floor.len() as f64 / 1048576.0,
        );
    }
    println!("reproduce: ./target/release/cspulse-load exports --accounts {} --runs {runs}", args.accounts);
    Ok(())
}
