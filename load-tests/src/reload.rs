//! `reload`: how long a rule reload (SIGHUP) holds the engine, in-process.
//!
//! The state holds `accounts` accounts (an upsert, a revenue event, and an
//! open P1 ticket on every tenth). Each run swaps the rule set: the
//! defaults, then the defaults without `p1_ticket_open` and with a renamed
//! P1 rule and a CSM-scope rule, and back; every account and scope is
//! evaluated under the new rules. Side by side, in the same run, the floor:
//! the same engine folding one event per account (each fold refreshes the
//! account and evaluates its rules), which a reload cannot beat by much.

use std::time::Instant;

use cspulse::alert::Rules;
use cspulse::event::Topic;
use cspulse::state::{Engine, StateConfig};
use cspulse::time::format_rfc3339;
use serde_json::json;

#[derive(clap::Args)]
pub struct ReloadArgs {
    #[arg(long, default_value_t = 100_000)]
    accounts: usize,
    #[arg(long, default_value_t = 2_000)]
    csms: usize,
}

fn rule_sets() -> [Rules; 2] {
    let names = Topic::ALL.map(|t| t.default_name().to_owned());
    let defaults = cspulse::alert::rules::default_rules();
    let mut other: Vec<serde_json::Value> =
        defaults.iter().filter(|r| r["name"] != "p1_ticket_open").cloned().collect();
    other.push(json!({"name": "p1_any", "scope": "account", "severity": "warning",
        "when": [{"metric": "tickets.open_p1", "op": ">=", "value": 1}]}));
    other.push(json!({"name": "book_at_risk", "scope": "csm", "severity": "warning",
        "when": [{"metric": "health.at_risk_share", "op": ">", "value": 0.1}]}));
    [Rules::parse(&defaults, &names).expect("defaults"), Rules::parse(&other, &names).expect("valid rules")]
}

/// The in-process scenarios' portfolio: `accounts` accounts in `csms`
/// books across 3 segments and 4 regions, each with an upsert (renewal date
/// `renewal(a)`) and a new-business ARR of `arr(a)` dollars, every tenth
/// with an open P1 ticket; the engine, its fold, and the events' instant.
pub(crate) fn portfolio(
    accounts: usize,
    csms: usize,
    renewal: impl Fn(usize) -> String,
    arr: impl Fn(usize) -> u64,
) -> (Engine, impl FnMut(&mut Engine, Topic, serde_json::Value), cspulse::time::Ts) {
    let (start, mut fold) = crate::tick::in_process();
    let mut engine = Engine::new(StateConfig::default());
    let ts = format_rfc3339(start);
    let (segments, regions) = (["enterprise", "mid-market", "smb"], ["na", "emea", "apac", "latam"]);
    let built = Instant::now();
    for a in 0..accounts {
        let id = format!("acc-{a:06}");
        fold(
            &mut engine,
            Topic::Accounts,
            json!({"event_id": format!("a{a}"), "ts": ts, "account_id": id, "name": format!("Account {a}"),
                "csm_id": format!("csm-{:04}", a % csms), "segment": segments[a % 3],
                "region": regions[a % 4], "seats": 50, "renewal_date": renewal(a)}),
        );
        fold(
            &mut engine,
            Topic::Revenue,
            json!({"event_id": format!("r{a}"), "ts": ts, "account_id": id, "kind": "new", "arr": arr(a)}),
        );
        if a % 10 == 0 {
            fold(
                &mut engine,
                Topic::Tickets,
                json!({"event_id": format!("t{a}"), "ts": ts, "account_id": id, "ticket_id": format!("T{a}"),
                    "action": "opened", "priority": "p1"}),
            );
        }
    }
    eprintln!("state: {accounts} accounts built in {:.1} s", built.elapsed().as_secs_f64());
    (engine, fold, start)
}

pub fn reload(args: ReloadArgs, runs: usize) -> anyhow::Result<()> {
    crate::push::pin_self(0);
    let (mut engine, mut fold, start) = portfolio(args.accounts, args.csms, |_| "2027-03-31".into(), |_| 25_000);
    let ts = format_rfc3339(start);
    engine.take_alerts();
    let sets = rule_sets();
    let (mut reloads, mut floors) = (Vec::new(), Vec::new());
    for run in 0..runs.max(1) * 2 {
        let t = Instant::now();
        let resolved = engine.replace_rules(sets[(run + 1) % 2].clone());
        reloads.push(t.elapsed().as_secs_f64());
        let transitions = engine.take_alerts().len();
        // The floor: one event per account, folded (refresh + rules).
        let t = Instant::now();
        for a in 0..args.accounts {
            fold(
                &mut engine,
                Topic::Accounts,
                json!({"event_id": format!("f{run}-{a}"), "ts": ts, "account_id": format!("acc-{a:06}"), "seats": 50 + run}),
            );
        }
        floors.push(t.elapsed().as_secs_f64());
        engine.take_alerts();
        eprintln!(
            "run {run}: reload {:.3} s ({transitions} transitions, {resolved} resolved by removal); fold of one event per account {:.3} s",
            reloads[run], floors[run]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "reload at {} accounts: median {:.3} s holding the engine; floor (fold of one upsert per account) median {:.3} s",
        args.accounts,
        median(&mut reloads),
        median(&mut floors)
    );
    Ok(())
}
