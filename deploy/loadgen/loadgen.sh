#!/bin/sh
# Synthetic cspulse traffic for deploy/compose.yaml (`--profile load`), with
# nothing but the Kafka image's console producer: a portfolio of accounts
# (cs.accounts, cs.revenue), then every second LOADGEN_RATE usage events and a
# few ticket lifecycles and ARR changes, all stamped with the wall clock and
# keyed by account_id. A smoke-load for dashboards and alerts, not a benchmark
# (the benchmark generator is load-tests/, issue #7).
#
#   LOADGEN_ACCOUNTS (500), LOADGEN_CSMS (20), LOADGEN_RATE (200 usage events/s),
#   BOOTSTRAP (kafka:9092), LOADGEN_SECONDS (0 = until stopped)
set -eu

ACCOUNTS=${LOADGEN_ACCOUNTS:-500}
CSMS=${LOADGEN_CSMS:-20}
RATE=${LOADGEN_RATE:-200}
SECONDS_TO_RUN=${LOADGEN_SECONDS:-0}
BOOTSTRAP=${BOOTSTRAP:-kafka:9092}
PRODUCER=${PRODUCER:-/opt/kafka/bin/kafka-console-producer.sh}
# Distinct per run, so a restarted generator's event_ids are not duplicates.
RUN=${LOADGEN_RUN:-$(date -u +%Y%m%d%H%M%S)}

now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# Lines `account_id|json` on stdin go to topic $1, keyed by account_id.
produce() {
    "$PRODUCER" --bootstrap-server "$BOOTSTRAP" --topic "$1" \
        --property parse.key=true --property key.separator='|' \
        --producer-property linger.ms=20 --producer-property acks=all
}

# The event lines of one second ($1 = tick, $2 = timestamp), for topic $3.
events() {
    awk -v tick="$1" -v ts="$2" -v topic="$3" -v n="$ACCOUNTS" -v csms="$CSMS" -v rate="$RATE" -v run="$RUN" '
    function acct(i) { return sprintf("acct-%05d", i) }
    function line(a, body) { printf "%s|{\"event_id\":\"%s-%s\",\"ts\":\"%s\",\"account_id\":\"%s\",%s}\n", a, topic, id, ts, a, body }
    BEGIN {
        srand(tick + 7 * length(run));
        split("dashboards reports api exports alerts integrations sso audit", features, " ");
        split("enterprise mid-market smb", segments, " ");
        split("emea amer apac latam", regions, " ");
        split("new renewal expansion contraction", kinds, " ");
        if (topic == "cs.accounts" && tick == 0) {
            for (i = 1; i <= n; i++) {
                a = acct(i); id = run "-" a;
                line(a, sprintf("\"name\":\"Account %05d\",\"csm_id\":\"csm-%02d\",\"segment\":\"%s\",\"region\":\"%s\",\"seats\":%d,\"renewal_date\":\"%d-%02d-28\"",
                    i, (i % csms) + 1, segments[(i % 3) + 1], regions[(i % 4) + 1], 10 + (i * 37) % 990, 2027 + i % 2, (i % 12) + 1));
            }
        }
        if (topic == "cs.revenue" && tick == 0) {
            for (i = 1; i <= n; i++) {
                a = acct(i); id = run "-" a;
                line(a, sprintf("\"kind\":\"new\",\"arr\":%d.00", 5000 + (i * 7919) % 400000));
            }
        }
        if (topic == "cs.revenue" && tick > 0 && tick % 10 == 0) {
            i = int(rand() * n) + 1; a = acct(i); id = run "-" tick;
            k = kinds[int(rand() * 4) + 1];
            line(a, sprintf("\"kind\":\"%s\",\"arr\":%d.00", k, 1000 + int(rand() * 500000)));
        }
        if (topic == "cs.usage" && tick > 0) {
            for (e = 0; e < rate; e++) {
                # A few busy accounts, a long tail, and some that go quiet.
                i = (rand() < 0.3) ? int(rand() * (n / 10 + 1)) + 1 : int(rand() * n) + 1;
                if (i % 17 == 0) continue;
                a = acct(i); id = run "-" tick "-" e;
                line(a, sprintf("\"user_id\":\"%s-u%02d\",\"feature\":\"%s\",\"duration_s\":%d",
                    a, int(rand() * 25), features[int(rand() * 8) + 1], int(rand() * 600)));
            }
        }
        if (topic == "cs.tickets" && tick > 0) {
            # Ticket T opened at tick t is answered at t+5 and resolved at t+40,
            # except every fifth (left to breach its SLA); every 7th is escalated.
            for (back = 0; back <= 40; back++) {
                t = tick - back; if (t < 1) break;
                a = acct((t * 7919) % n + 1); tid = sprintf("T-%s-%d", run, t);
                if (back == 0) { id = tid "-o"; line(a, sprintf("\"ticket_id\":\"%s\",\"action\":\"opened\",\"priority\":\"p%d\"", tid, (t % 4) + 1)) }
                if (back == 5 && t % 5 != 0) { id = tid "-f"; line(a, sprintf("\"ticket_id\":\"%s\",\"action\":\"first_response\"", tid)) }
                if (back == 10 && t % 7 == 0) { id = tid "-e"; line(a, sprintf("\"ticket_id\":\"%s\",\"action\":\"escalated\"", tid)) }
                if (back == 40 && t % 5 != 0) {
                    id = tid "-r"; line(a, sprintf("\"ticket_id\":\"%s\",\"action\":\"resolved\"", tid));
                    id = tid "-c"; line(a, sprintf("\"ticket_id\":\"%s\",\"action\":\"csat\",\"score\":%d", tid, (t % 5) + 1));
                }
            }
        }
    }'
}

# One producer per topic, fed one second of events at a time.
stream() {
    topic=$1
    tick=0
    while [ "$SECONDS_TO_RUN" -eq 0 ] || [ "$tick" -le "$SECONDS_TO_RUN" ]; do
        events "$tick" "$(now)" "$topic"
        tick=$((tick + 1))
        sleep 1
    done | produce "$topic"
}

echo "loadgen: $ACCOUNTS accounts, $CSMS CSMs, $RATE usage events/s into $BOOTSTRAP (run $RUN)"
for topic in cs.accounts cs.revenue cs.usage cs.tickets; do
    stream "$topic" &
done
wait
