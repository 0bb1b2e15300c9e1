//! `GET /api/v1/fraud/summary?program=&from=&to=`: a period's clicks by
//! verdict and by fraud reason, and the partners with the largest share of
//! clicks not counted — exact however long the period.
//!
//! The period's whole UTC days are read from the rollups (one tally a
//! program and day; the flagged partners' copies), so a year costs about as
//! much as a day; only the part-days at its two ends are read click by
//! click from the log. A partner's share is over the days (or part-days)
//! on which it had clicks not counted, as `GET /api/v1/fraud/partners`
//! ranks them.

use super::fraud_api::{scan, Clicks};
use super::http::{blocking, ApiError};
use super::App;
use crate::store::rollups::{Scope, Tally};
use crate::store::{rank_suspicious, ClickQuery, StoreError};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json as j, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

const DAY_MS: i64 = 86_400_000;
/// Partners listed.
const TOP: usize = 20;
/// How far past a part-day's end its clicks' ids are read.
const ID_SLACK_MS: i64 = 60_000;

/// Clicks of a part of the period, summed.
#[derive(Default)]
struct Sums {
    tally: Tally,
    /// Partner → (clicks, not counted).
    partners: HashMap<String, (u64, u64)>,
}

impl Sums {
    fn add_partners(&mut self, from: impl IntoIterator<Item = (String, u64, u64)>) {
        for (p, all, bad) in from {
            let e = self.partners.entry(p).or_default();
            e.0 += all;
            e.1 += bad;
        }
    }
}

/// The summary of `[from_ms, to_ms)` (`from_ms` `None`: since the first
/// click), for one program or all.
pub(super) async fn summary(
    app: &Arc<App>,
    program: Option<String>,
    from_ms: Option<i64>,
    to_ms: i64,
) -> Result<Value, ApiError> {
    let clicks = Clicks::of(app);
    let c = clicks.clone();
    let first_click = blocking(move || c.first_click_ms()).await??;
    let asked = (from_ms, to_ms);
    // What is read: nothing before the first click or after tomorrow (a
    // period from year 1 to 9999 costs what the clicks kept cost).
    let from_ms = from_ms
        .unwrap_or(i64::MIN)
        .max(first_click.unwrap_or(to_ms))
        .min(to_ms);
    let to_ms = to_ms
        .min(app.clock.now_ms().saturating_add(DAY_MS))
        .max(from_ms);
    // Whole days: [first_day, end_day).
    let first_day = from_ms.div_euclid(DAY_MS) + i64::from(from_ms.rem_euclid(DAY_MS) != 0);
    let end_day = to_ms.div_euclid(DAY_MS).max(first_day);
    let mut sums = Sums::default();
    if first_day < end_day {
        super::stats_api::catch_up(app).await?;
        let (first, last) = (date(first_day)?, date(end_day - 1)?);
        let programs: Vec<String> = match &program {
            Some(p) => vec![p.clone()],
            None => app.config.programs.keys().cloned().collect(),
        };
        let store = app.store.clone();
        let (tally, partners) = blocking(move || -> Result<_, StoreError> {
            let mut tally = Tally::default();
            for p in programs {
                for (_, t) in store.daily(&Scope::Program(p), first, last)? {
                    tally.add(&t);
                }
            }
            let partners = store.suspicious_partners(first, last, usize::MAX)?;
            Ok((tally, partners))
        })
        .await??;
        sums.tally = tally;
        sums.add_partners(partners);
        // The part-days at either end.
        for (a, b) in [(from_ms, first_day * DAY_MS), (end_day * DAY_MS, to_ms)] {
            read_clicks(&clicks, &program, a, b, &mut sums).await?;
        }
    } else {
        read_clicks(&clicks, &program, from_ms, to_ms, &mut sums).await?;
    }
    if let Some(p) = &program {
        sums.partners.retain(|id, _| {
            app.directory
                .partner(id)
                .is_some_and(|partner| &partner.program == p)
        });
    }
    Ok(answer(&sums, asked.0.unwrap_or(from_ms), asked.1))
}

fn date(day: i64) -> Result<NaiveDate, ApiError> {
    DateTime::<Utc>::from_timestamp(day * 86_400, 0)
        .map(|t| t.date_naive())
        .ok_or_else(|| ApiError::invalid("from", "is out of range"))
}

/// Adds the clicks of `[from_ms, to_ms)` read one by one, a UTC day at a
/// time: a partner counts on a day only with a click not counted on it.
async fn read_clicks(
    clicks: &Clicks,
    program: &Option<String>,
    from_ms: i64,
    to_ms: i64,
    sums: &mut Sums,
) -> Result<(), ApiError> {
    if from_ms >= to_ms {
        return Ok(());
    }
    let (c, program) = (clicks.clone(), program.clone());
    let (tally, partners) = blocking(move || -> Result<_, StoreError> {
        let mut tally = Tally::default();
        let mut suspicious = Vec::new();
        let mut start = from_ms;
        while start < to_ms {
            let end = ((start.div_euclid(DAY_MS) + 1) * DAY_MS).min(to_ms);
            let mut day: HashMap<String, (u64, u64)> = HashMap::new();
            // Read by id, counted by the click's own time, as the rollups
            // count: an id's time may run a little ahead of its click's
            // (ids stay increasing when the clock steps back), hence the
            // minute.
            let q = ClickQuery {
                from_ms: Some(start),
                to_ms: Some(end.saturating_add(ID_SLACK_MS)),
                ..ClickQuery::default()
            };
            scan(&c, q, usize::MAX, |click| {
                let at = click.at.timestamp_millis();
                if (start..end).contains(&at)
                    && program.as_ref().is_none_or(|p| &click.program == p)
                {
                    tally.add(&Tally::of(click));
                    let e = day.entry(click.partner_id.clone()).or_default();
                    e.0 += 1;
                    e.1 += u64::from(click.verdict != "valid");
                }
                true
            })?;
            suspicious.extend(
                day.into_iter()
                    .filter(|(_, (_, bad))| *bad > 0)
                    .map(|(p, (all, bad))| (p, all, bad)),
            );
            start = end;
        }
        Ok((tally, suspicious))
    })
    .await??;
    sums.tally.add(&tally);
    sums.add_partners(partners);
    Ok(())
}

fn answer(sums: &Sums, from_ms: i64, to_ms: i64) -> Value {
    let t = &sums.tally;
    let by_verdict: BTreeMap<&str, u64> = [
        ("valid", t.valid),
        ("flagged", t.flagged),
        ("blocked", t.blocked),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .collect();
    let mut top: Vec<(&str, u64, u64)> = sums
        .partners
        .iter()
        .map(|(p, (all, bad))| (p.as_str(), *all, *bad))
        .collect();
    rank_suspicious(&mut top, TOP);
    let top: Vec<Value> = top
        .into_iter()
        .map(|(pid, clicks, flagged)| {
            j!({"partner_id": pid, "clicks": clicks, "flagged": flagged,
                "suspicious_share": format!("{:.4}", flagged as f64 / clicks.max(1) as f64)})
        })
        .collect();
    let time = |ms: i64| {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    j!({"from": time(from_ms), "to": time(to_ms), "clicks": t.total(),
        "by_verdict": by_verdict, "by_reason": t.by_reason(), "top_partners": top})
}
