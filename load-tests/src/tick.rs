//! `tick`: what the push ticks cost with every CSM channel subscribed while
//! a share of the accounts changes each second (in-process, one core).
//!
//! The state holds `accounts` accounts in `csms` books. Each simulated
//! second, `change` of the accounts get a ticket event (spread over the
//! four `tickets` ticks of the 250 ms cadence); after each quarter the fold
//! publishes a barrier and every channel ticks `tickets`, as the push
//! service does: CSM channels from what changed in their book (`push::book`),
//! the shared channels from their whole data. Side by side, in the same
//! run, the same ticks made the way they were before (every channel's whole
//! data rendered and diffed), on a few ticks only (they are slow). A
//! `health` tick (5-minute cadence, every book changed by then) is timed
//! once at the end and counted at 1/300 per second.

use std::time::{Duration, Instant};

use anyhow::Context;
use cspulse::event::Topic;
use cspulse::push::book::ChannelSeen;
use cspulse::push::{ChannelState, PushTopic};
use cspulse::state::view::Channel;
use cspulse::state::{Engine, Input, StateConfig};
use cspulse::time::{MICROS_PER_SEC, days, format_rfc3339, parse_rfc3339};
use rand::{Rng, SeedableRng};
use serde_json::json;

#[derive(clap::Args)]
pub struct TickArgs {
    #[arg(long, default_value_t = 100_000)]
    accounts: usize,
    #[arg(long, default_value_t = 2_000)]
    csms: usize,
    /// Share of the accounts changed per second.
    #[arg(long, default_value_t = 0.01)]
    change: f64,
    /// Simulated seconds of change-driven ticks.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Ticks made the old way (whole data of every channel), for comparison.
    #[arg(long, default_value_t = 4)]
    whole_ticks: usize,
}

struct Hub {
    channels: Vec<(Channel, ChannelState, ChannelSeen)>,
    /// Time spent on the shared channels, and on the CSM channels.
    split: [Duration; 2],
}

impl Hub {
    fn new(engine: &Engine, csms: usize) -> Hub {
        let snapshot = engine.snapshot();
        let mut names = vec![Channel::Executive, Channel::Manager, Channel::Analyst];
        names.extend((0..csms).map(|c| Channel::Csm(csm_id(c))));
        let channels = names
            .into_iter()
            .map(|c| {
                let state = ChannelState::new(c.to_string(), snapshot.channel_view(&c), 1000);
                (c, state, ChannelSeen::default())
            })
            .collect();
        Hub { channels, split: [Duration::ZERO; 2] }
    }

    /// One tick as the push service makes it; returns the messages sent.
    fn tick(&mut self, topic: PushTopic, snapshot: &cspulse::state::snapshot::Snapshot) -> usize {
        let mut sent = 0;
        for (channel, state, seen) in &mut self.channels {
            let t = Instant::now();
            let message = seen.changes(topic, snapshot, channel).and_then(|c| state.tick_changes(topic, &c));
            let i = usize::from(matches!(channel, Channel::Csm(_)));
            self.split[i] += t.elapsed();
            sent += usize::from(message.is_some());
        }
        sent
    }

    /// One tick the way it was made before: every channel's whole data.
    fn tick_whole(&mut self, topic: PushTopic, snapshot: &cspulse::state::snapshot::Snapshot) -> usize {
        let mut sent = 0;
        for (channel, state, _) in &mut self.channels {
            sent += usize::from(state.tick(topic, &snapshot.channel_view(channel)).is_some());
        }
        sent
    }
}

fn csm_id(c: usize) -> String {
    format!("csm-{c:04}")
}

/// The in-process scenarios' start instant, and a fold of JSON bodies into
/// an engine at consecutive offsets of partition 0 (a wall clock well past
/// the events: none is future-dated).
pub(crate) fn in_process() -> (cspulse::time::Ts, impl FnMut(&mut Engine, Topic, serde_json::Value)) {
    let start = parse_rfc3339("2026-11-01T00:00:00Z").expect("fixed date");
    let wall = start + days(400);
    let mut offset = 0i64;
    let fold = move |engine: &mut Engine, topic: Topic, body: serde_json::Value| {
        let payload = serde_json::to_vec(&body).expect("json");
        engine.fold(&Input { topic, partition: 0, offset, payload: &payload, wall });
        offset += 1;
    };
    (start, fold)
}

pub fn tick(args: TickArgs) -> anyhow::Result<()> {
    crate::push::pin_self(0);
    let (start, mut fold) = in_process();
    let mut engine = Engine::new(StateConfig::default());
    let built = Instant::now();
    let ts = format_rfc3339(start);
    let (segments, regions) = (["enterprise", "mid-market", "smb"], ["na", "emea", "apac", "latam"]);
    for a in 0..args.accounts {
        fold(
            &mut engine,
            Topic::Accounts,
            json!({"event_id": format!("a{a}"), "ts": ts, "account_id": format!("acc-{a:06}"),
                "name": format!("Account {a}"), "csm_id": csm_id(a % args.csms), "segment": segments[a % 3],
                "region": regions[a % 4], "seats": 50, "renewal_date": "2027-03-31"}),
        );
        fold(
            &mut engine,
            Topic::Revenue,
            json!({"event_id": format!("r{a}"), "ts": ts, "account_id": format!("acc-{a:06}"), "kind": "new", "arr": 25000}),
        );
    }
    engine.publish();
    let mut hub = Hub::new(&engine, args.csms);
    let mut old = Hub::new(&engine, args.csms);
    eprintln!(
        "state: {} accounts in {} books, {} channels, built in {:.1} s",
        args.accounts,
        args.csms,
        hub.channels.len(),
        built.elapsed().as_secs_f64()
    );
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let per_tick = ((args.accounts as f64 * args.change) / 4.0).round().max(1.0) as usize;
    let mut now = start;
    let mut event = 0u64;
    let (mut publish, mut ticks, mut whole) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut sent, mut sent_whole, mut whole_done) = (0usize, 0usize, 0usize);
    let quarters = args.seconds as usize * 4;
    for q in 0..quarters {
        for _ in 0..per_tick {
            now += MICROS_PER_SEC / 4 / per_tick as i64;
            event += 1;
            let a = rng.random_range(0..args.accounts);
            let action = if event.is_multiple_of(2) { "opened" } else { "resolved" };
            fold(
                &mut engine,
                Topic::Tickets,
                json!({"event_id": format!("t{event}"), "ts": format_rfc3339(now), "account_id": format!("acc-{a:06}"),
                    "ticket_id": format!("T{}", event / 2), "action": action, "priority": "p2"}),
            );
        }
        let t = Instant::now();
        let snapshot = engine.publish();
        publish += t.elapsed();
        let t = Instant::now();
        sent += hub.tick(PushTopic::Tickets, &snapshot);
        ticks += t.elapsed();
        if q >= quarters.saturating_sub(args.whole_ticks) {
            // The last few ticks the old way too (its channels were kept in
            // step untimed, so each timed tick meets one quarter's change).
            let t = Instant::now();
            sent_whole += old.tick_whole(PushTopic::Tickets, &snapshot);
            whole += t.elapsed();
            whole_done += 1;
        } else if q + 1 == quarters.saturating_sub(args.whole_ticks) {
            old.tick_whole(PushTopic::Tickets, &snapshot);
        }
    }
    let split = hub.split.map(|d| d.as_secs_f64() * 1e3 / quarters as f64);
    let snapshot = engine.publish();
    let t = Instant::now();
    let health_sent = hub.tick(PushTopic::Health, &snapshot);
    let health = t.elapsed();
    let seconds = args.seconds as f64;
    let per_second = ticks.as_secs_f64() / seconds + health.as_secs_f64() / 300.0;
    let whole_per_tick = whole.as_secs_f64() / whole_done.max(1) as f64;
    let result = json!({
        "accounts": args.accounts, "csms": args.csms, "change_per_second": args.change, "seconds": args.seconds,
        "tickets_ticks": quarters, "tickets_tick_ms": ticks.as_secs_f64() * 1e3 / quarters as f64,
        "tickets_messages_per_tick": sent as f64 / quarters as f64,
        "tickets_tick_ms_shared_channels": split[0], "tickets_tick_ms_csm_channels": split[1],
        "health_tick_ms": health.as_secs_f64() * 1e3, "health_messages": health_sent,
        "core_share": per_second,
        "publish_ms_per_barrier": publish.as_secs_f64() * 1e3 / quarters as f64,
        "whole_data_tick_ms": whole_per_tick * 1e3, "whole_data_ticks": whole_done,
        "whole_data_messages_per_tick": sent_whole as f64 / whole_done.max(1) as f64,
        "whole_data_core_share": whole_per_tick * 4.0,
    });
    println!(
        "\npush ticks: {} accounts, {} CSM channels + 3 shared, {:.1}% of accounts changing per second",
        args.accounts,
        args.csms,
        args.change * 100.0
    );
    println!(
        "  change-driven: tickets tick {:.2} ms ({:.0} messages), health tick {:.0} ms once per 5 min → {:.2}% of one core (goal <= 10%)",
        result["tickets_tick_ms"].as_f64().unwrap_or_default(),
        result["tickets_messages_per_tick"].as_f64().unwrap_or_default(),
        health.as_secs_f64() * 1e3,
        per_second * 100.0
    );
    println!("    of which the 3 shared channels {:.2} ms, the CSM channels {:.2} ms", split[0], split[1]);
    println!(
        "  whole data (before): tickets tick {:.1} ms → {:.0}% of one core at 4 ticks/s",
        whole_per_tick * 1e3,
        whole_per_tick * 400.0
    );
    println!("  publish barrier (fold thread): {:.2} ms each", publish.as_secs_f64() * 1e3 / quarters as f64);
    println!(
        "reproduce: ./target/release/cspulse-load tick --accounts {} --csms {} --change {} --seconds {}",
        args.accounts, args.csms, args.change, args.seconds
    );
    crate::write_results("push-tick", json!({"result": result, "machine": crate::machine()})).context("writing results")
}
