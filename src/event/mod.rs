//! The input vocabulary (SPEC §1): topics and validated events.
//!
//! Events borrow from the Kafka payload where they can; the fold copies only
//! what it keeps.

pub mod decode;

use std::borrow::Cow;

use crate::time::Ts;

/// The four input topics, by role (their names are configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Topic {
    Accounts,
    Usage,
    Tickets,
    Revenue,
}

impl Topic {
    pub const ALL: [Topic; 4] = [Topic::Accounts, Topic::Usage, Topic::Tickets, Topic::Revenue];

    /// The default topic name (SPEC §1), also the label used in metrics.
    pub fn default_name(self) -> &'static str {
        match self {
            Topic::Accounts => "cs.accounts",
            Topic::Usage => "cs.usage",
            Topic::Tickets => "cs.tickets",
            Topic::Revenue => "cs.revenue",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A validated input event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    pub ts: Ts,
    pub account_id: Cow<'a, str>,
    pub body: Body<'a>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body<'a> {
    Account(AccountUpsert<'a>),
    Usage { user_id: Cow<'a, str>, feature: Cow<'a, str> },
    Ticket(TicketEvent<'a>),
    Revenue { kind: RevenueKind, arr_cents: i64 },
}

impl Body<'_> {
    pub fn topic(&self) -> Topic {
        match self {
            Body::Account(_) => Topic::Accounts,
            Body::Usage { .. } => Topic::Usage,
            Body::Ticket(_) => Topic::Tickets,
            Body::Revenue { .. } => Topic::Revenue,
        }
    }
}

/// The fields an account upsert carries; absent fields are `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccountUpsert<'a> {
    pub name: Option<Cow<'a, str>>,
    /// `Some(None)` is an explicit `null`: the account becomes unassigned.
    pub csm_id: Option<Option<Cow<'a, str>>>,
    pub segment: Option<Cow<'a, str>>,
    pub region: Option<Cow<'a, str>>,
    pub seats: Option<u64>,
    /// Days since 1970-01-01.
    pub renewal_date: Option<i32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TicketEvent<'a> {
    pub ticket_id: Cow<'a, str>,
    pub action: TicketAction,
    /// Only kept where the action uses it (opened, reopened, escalated).
    pub priority: Option<Priority>,
    /// Only kept on `csat`.
    pub score: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TicketAction {
    Opened,
    FirstResponse,
    Escalated,
    Resolved,
    Reopened,
    Csat,
}

impl TicketAction {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "opened" => Self::Opened,
            "first_response" => Self::FirstResponse,
            "escalated" => Self::Escalated,
            "resolved" => Self::Resolved,
            "reopened" => Self::Reopened,
            "csat" => Self::Csat,
            _ => return None,
        })
    }
}

/// Ticket priority; `P1` is the most urgent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Priority {
    P1,
    P2,
    P3,
    P4,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Priority::P1, Priority::P2, Priority::P3, Priority::P4];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "p1" => Self::P1,
            "p2" => Self::P2,
            "p3" => Self::P3,
            "p4" => Self::P4,
            _ => return None,
        })
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum RevenueKind {
    New,
    Renewal,
    Expansion,
    Contraction,
    Churn,
}

impl RevenueKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "new" => Self::New,
            "renewal" => Self::Renewal,
            "expansion" => Self::Expansion,
            "contraction" => Self::Contraction,
            "churn" => Self::Churn,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Renewal => "renewal",
            Self::Expansion => "expansion",
            Self::Contraction => "contraction",
            Self::Churn => "churn",
        }
    }
}
