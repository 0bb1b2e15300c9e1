//! `refedge replay`: run a JSON-lines file of setup records and events
//! through a fresh, temporary calculator and report the outcome, so a
//! program change can be tried against last year's events before it goes
//! live. Every line is parsed and checked before anything is applied.

use crate::commission::calculator::{PayoutBatch, Referral, Rejection};
use crate::commission::ledger::{Balance, Line};
use crate::commission::quarantine::{try_apply, Quarantined};
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
    /// Events the calculator failed on, set aside as the server would.
    pub quarantined: Vec<Quarantined>,
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
            review: p.review.clone(),
        })
        .collect()
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
        let value = match crate::json::parse_strict(raw.as_bytes()) {
            Ok(v) => v,
            Err(Ok(f)) => {
                errors.push(LineError {
                    line,
                    message: format!("{}: {}", f.field, f.reason),
                });
                continue;
            }
            Err(Err(e)) => {
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
                // As the server names it: an internal event (a payout
                // run, a confirmation) by what it is, not by its line.
                let id = crate::conversions::internal_id(&e);
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
    let fresh = || {
        let mut c = Calculator::new(books(programs));
        c.auto_confirm = true;
        c
    };
    let mut calc = fresh();
    let mut seen = std::collections::HashSet::new();
    // Indices applied so far, to rebuild without an event that failed.
    let mut applied: Vec<usize> = Vec::new();
    let mut quarantined = Vec::new();
    for (i, (id, e)) in events.iter().enumerate() {
        // Replays honour idempotency like the server: a repeated id is a no-op.
        if e.id().is_some() && !seen.insert(id.clone()) {
            continue;
        }
        match try_apply(&mut calc, id, e) {
            Ok(()) => applied.push(i),
            Err(error) => {
                quarantined.push(Quarantined {
                    seq: None,
                    event_id: id.clone(),
                    program: e.program().map(String::from),
                    error,
                    at: e.occurred_at().unwrap_or_default(),
                });
                // The calculator may be half-way through the event: start
                // again without it (each event applied before did not fail).
                calc = fresh();
                for &j in &applied {
                    let _ = try_apply(&mut calc, &events[j].0, &events[j].1);
                }
            }
        }
    }
    let as_of = as_of.or_else(|| events.iter().filter_map(|(_, e)| e.occurred_at()).max());
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
        quarantined,
    }
}
