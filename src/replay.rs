//! `refedge replay`: run a JSON-lines file of setup records and events
//! through a fresh, temporary calculator and report the outcome, so a
//! program change can be tried against last year's events before it goes
//! live. Every line is parsed and checked before anything is applied.

use crate::commission::calculator::{PayoutBatch, Referral, Rejection};
use crate::commission::ledger::{Balance, Line};
use crate::commission::{Calculator, Event, ProgramBook};
use crate::program::Program;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// A line of the input that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// Field and reason.
    pub message: String,
}

/// What a replay produced.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub as_of: Option<DateTime<Utc>>,
    pub referrals: Vec<Referral>,
    pub rejections: Vec<Rejection>,
    pub partners: BTreeMap<String, PartnerOutcome>,
    pub payouts: Vec<PayoutBatch>,
    pub problems: Vec<crate::commission::calculator::Problem>,
}

/// One partner's result.
#[derive(Debug, Serialize)]
pub struct PartnerOutcome {
    pub balances: BTreeMap<String, Balance>,
    pub lines: Vec<Line>,
}

/// The calculator's view of configured programs.
pub fn books(programs: &BTreeMap<String, Program>) -> Vec<ProgramBook> {
    programs
        .values()
        .map(|p| ProgramBook {
            key: p.key.clone(),
            cookie_days: p.cookie_days,
            min_click_to_signup_seconds: if p.fraud.enabled {
                p.fraud.min_click_to_signup_seconds
            } else {
                0
            },
            rules: p.money.clone(),
        })
        .collect()
}

fn event_time(e: &Event) -> Option<DateTime<Utc>> {
    Some(match e {
        Event::Signup(x) => x.occurred_at,
        Event::Payment(x) => x.occurred_at,
        Event::Refund(x) | Event::Chargeback(x) => x.occurred_at,
        Event::Cancellation(x) => x.occurred_at,
        Event::PlanChange(x) => x.occurred_at,
        Event::FxRates(x) => x.at,
        Event::Click(x) => x.occurred_at,
        Event::PayoutRun(x) => x.as_of,
        _ => return None,
    })
}

/// Parses every line; on any error returns all of them and applies nothing.
pub fn parse(
    text: &str,
    programs: &BTreeMap<String, Program>,
) -> Result<Vec<(String, Event)>, Vec<LineError>> {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = match serde_json::from_str(raw) {
            Ok(v) => v,
            Err(e) => {
                errors.push(LineError {
                    line,
                    message: format!("malformed JSON: {e}"),
                });
                continue;
            }
        };
        // Links only matter to the redirect: accepted and skipped.
        if value.get("type").and_then(|t| t.as_str()) == Some("link") {
            continue;
        }
        match Event::from_value(value) {
            Ok(e) => {
                if let Some(p) = e.program() {
                    if !programs.contains_key(p) {
                        errors.push(LineError {
                            line,
                            message: format!("program: unknown program {p:?}"),
                        });
                        continue;
                    }
                }
                let id = e
                    .id()
                    .map(String::from)
                    .unwrap_or_else(|| format!("line-{line}"));
                events.push((id, e));
            }
            Err(e) => errors.push(LineError {
                line,
                message: e.to_string(),
            }),
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(errors)
    }
}

/// Applies parsed events in order to a fresh calculator.
pub fn run(
    events: &[(String, Event)],
    programs: &BTreeMap<String, Program>,
    as_of: Option<DateTime<Utc>>,
) -> Outcome {
    let mut calc = Calculator::new(books(programs));
    calc.auto_confirm = true;
    let mut seen = std::collections::HashSet::new();
    for (id, e) in events {
        // Replays honour idempotency like the server: a repeated id is a no-op.
        if e.id().is_some() && !seen.insert(id.clone()) {
            continue;
        }
        calc.apply(id, e);
    }
    let as_of = as_of.or_else(|| events.iter().filter_map(|(_, e)| event_time(e)).max());
    let mut partners = BTreeMap::new();
    let ids: Vec<String> = calc.partner_ids().cloned().collect();
    for pid in ids {
        let balances = as_of
            .and_then(|t| calc.balances(&pid, t))
            .unwrap_or_default();
        let lines = calc.lines(&pid).into_iter().cloned().collect();
        partners.insert(pid, PartnerOutcome { balances, lines });
    }
    Outcome {
        as_of,
        referrals: calc.state.referrals.clone(),
        rejections: calc.state.rejections.clone(),
        partners,
        payouts: calc.state.payouts.values().cloned().collect(),
        problems: calc.state.problems.clone(),
    }
}
