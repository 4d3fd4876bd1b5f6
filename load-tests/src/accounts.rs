//! `accounts`: the cost of one accounts-list page (SPEC §19) at 100,000
//! accounts, in-process on one core, beside its floor.
//!
//! The state holds `accounts` accounts (an upsert with a segment, region,
//! CSM and renewal date, a revenue event; every tenth with a P1 ticket, so
//! tiers and alerts vary). Each run times `--requests` first pages of the
//! list (filter, sort key, partial sort, rendering of the page, as the
//! handler does) and, interleaved, the floor: a raw loop over the same
//! snapshot reading what the filter and the sort key read (tier, ARR) and
//! keeping the page's best ARRs, the least a page of that query can do
//! without an index.

use std::time::Instant;

use cspulse::auth::{Principal, Role};

#[derive(clap::Args)]
pub struct AccountsArgs {
    #[arg(long, default_value_t = 100_000)]
    accounts: usize,
    #[arg(long, default_value_t = 2_000)]
    csms: usize,
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// The query of the page (as after `?`).
    #[arg(long, default_value = "tier=red&tier=yellow&sort=-revenue.arr&limit=100")]
    query: String,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// The portfolio the accounts-list scenarios read, published: renewal
/// dates spread over 2027, ARR varied by account.
pub fn published_portfolio(accounts: usize, csms: usize) -> cspulse::state::snapshot::Snapshot {
    let (mut engine, _, _) = crate::reload::portfolio(
        accounts,
        csms,
        |a| format!("2027-{:02}-15", 1 + a % 12),
        |a| 1000 + (a as u64 * 7919) % 250_000,
    );
    engine.publish()
}

pub fn accounts(args: AccountsArgs, runs: usize) -> anyhow::Result<()> {
    crate::push::pin_self(0);
    let snapshot = published_portfolio(args.accounts, args.csms);
    let who = Principal { sub: "bench".into(), role: Role::Manager, csm_id: None };
    let limit = 100;
    let (mut pages, mut floors) = (Vec::new(), Vec::new());
    let mut matched = 0;
    for _ in 0..runs.max(1) {
        for _ in 0..args.requests {
            let t = Instant::now();
            let (total, shown) = cspulse::http::accounts::first_page(&snapshot, &who, &args.query)
                .map_err(|e| anyhow::anyhow!("{}: {e}", args.query))?;
            pages.push(t.elapsed().as_secs_f64() * 1e3);
            matched = total;
            std::hint::black_box(shown);
            let t = Instant::now();
            let mut best: Vec<i64> = Vec::with_capacity(limit + 1);
            for (_, r) in snapshot.records() {
                if r.metrics.tier() != cspulse::state::health::Tier::Green {
                    let arr = r.metrics.arr;
                    if best.len() < limit || arr > best[limit - 1] {
                        let at = best.partition_point(|&b| b >= arr);
                        best.insert(at, arr);
                        best.truncate(limit);
                    }
                }
            }
            floors.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(best);
        }
    }
    for v in [&mut pages, &mut floors] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "\naccounts list in-process: {} accounts, one core, {} pages of `{}` ({matched} match)",
        args.accounts,
        pages.len(),
        args.query
    );
    println!(
        "  page (handler work): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&pages, 0.5),
        percentile(&pages, 0.99),
        pages[pages.len() - 1]
    );
    println!(
        "  floor (raw loop over the snapshot, tier + ARR, top 100): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&floors, 0.5),
        percentile(&floors, 0.99),
        floors[floors.len() - 1]
    );
    println!(
        "reproduce: ./target/release/cspulse-load accounts --accounts {} --requests {} --runs {runs}",
        args.accounts, args.requests
    );
    Ok(())
}
