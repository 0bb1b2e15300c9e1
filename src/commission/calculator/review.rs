//! The review queue: which soft signals a signup shows, the hold on a new
//! referral's commissions, and an analyst's approval (the held lines join
//! the program's normal schedule) or rejection (they are voided).

use super::*;
use crate::commission::review::{
    review_id, Decision, ReviewDecision, ReviewFlag, Signal, SHARED_IP_DAYS,
};

impl Calculator {
    /// Records the signup's address (when the program holds for
    /// `shared_ip`) and returns the signal when another customer of the
    /// program signed up from it within 30 days. Every signup counts,
    /// refused or not: a farm of refused signups is what this looks for.
    pub(super) fn shared_address(&mut self, s: &Signup) -> Option<Signal> {
        let policy = &self.programs.get(&s.program)?.review;
        if !policy.holds(ReviewFlag::SharedIp) {
            return None;
        }
        let ip = s.customer.ip_hash.as_ref().or(s.customer.ip.as_ref())?;
        let window = chrono::Duration::days(SHARED_IP_DAYS);
        let seen = self
            .state
            .signup_addresses
            .entry(format!("{}\u{1f}{ip}", s.program))
            .or_default();
        seen.retain(|(at, _)| *at + window >= s.occurred_at);
        let other = seen
            .iter()
            .filter(|(at, c)| c != &s.customer.id && (*at - s.occurred_at).abs() <= window)
            .max_by_key(|(at, _)| *at)
            .map(|(at, c)| (*at, c.clone()));
        if !seen.iter().any(|(_, c)| c == &s.customer.id) {
            seen.push((s.occurred_at, s.customer.id.clone()));
        }
        let (at, customer) = other?;
        Some(Signal {
            flag: ReviewFlag::SharedIp,
            detail: format!(
                "signed up from the same address as customer {customer}, {} days earlier",
                (s.occurred_at - at).num_days()
            ),
        })
    }

    /// Holds a new referral's commissions for review.
    pub(super) fn hold_for_review(
        &mut self,
        event_id: &str,
        s: &Signup,
        partner_id: &str,
        signals: Vec<Signal>,
    ) {
        self.state.reviews.insert(
            customer_key(&s.program, &s.customer.id),
            Review {
                id: review_id(&s.program, &s.customer.id),
                program: s.program.clone(),
                customer_id: s.customer.id.clone(),
                partner_id: partner_id.to_string(),
                event_id: event_id.to_string(),
                held_at: s.occurred_at,
                signals,
                status: ReviewStatus::Held,
                decided_at: None,
                actor: None,
                reason: None,
            },
        );
    }

    /// Where a customer's review stands (`None`: never held).
    pub(super) fn review_status(&self, key: &str) -> Option<ReviewStatus> {
        self.state.reviews.get(key).map(|r| r.status)
    }

    /// An analyst's decision: approval moves every held line to the
    /// program's schedule, rejection voids them; either way one pair or
    /// line per currency and payable date, the analyst's reason in its
    /// explanation. A review is decided once.
    pub(super) fn review_decision(&mut self, event_id: &str, d: &ReviewDecision) {
        let key = customer_key(&d.program, &d.customer_id);
        let Some(review) = self.state.reviews.get(&key).filter(|r| r.id == d.review_id) else {
            return self.problem(event_id, format!("no review {}", d.review_id));
        };
        if review.status != ReviewStatus::Held {
            return self.problem(
                event_id,
                format!(
                    "review {} was already {}",
                    d.review_id,
                    review.status.label()
                ),
            );
        }
        let (program, customer, partner_id) = (
            review.program.clone(),
            review.customer_id.clone(),
            review.partner_id.clone(),
        );
        let groups = self.held_groups(&partner_id, &program, &customer);
        let status = match d.decision {
            Decision::Approve => ReviewStatus::Approved,
            Decision::Reject => ReviewStatus::Rejected,
        };
        for ((currency, available_at), amount) in groups {
            let line = |amount: Decimal, kind, held_for_review, explanation: String| Line {
                seq: 0,
                event_id: event_id.to_string(),
                at: d.occurred_at,
                kind,
                partner_id: partner_id.clone(),
                program: program.clone(),
                amount,
                currency: currency.clone(),
                available_at,
                customer_id: Some(customer.clone()),
                invoice_id: None,
                explanation,
                fx: None,
                held_for_review,
            };
            match d.decision {
                Decision::Approve => {
                    let why = format!(
                        "approved in review by {}: {}; held commission {} {currency} follows the program's schedule",
                        d.actor,
                        d.reason,
                        fmt2(amount)
                    );
                    self.push_line(line(-amount, LineKind::Release, true, why.clone()));
                    self.push_line(line(amount, LineKind::Release, false, why));
                }
                Decision::Reject => {
                    let why = format!(
                        "rejected in review by {}: {}; held commission {} {currency} voided",
                        d.actor,
                        d.reason,
                        fmt2(amount)
                    );
                    self.push_line(line(-amount, LineKind::Void, true, why));
                }
            }
        }
        if status == ReviewStatus::Rejected {
            self.state.rejections.push(Rejection {
                customer_id: customer.clone(),
                program: program.clone(),
                partner_id: Some(partner_id.clone()),
                reason: RejectReason::RejectedInReview,
                detail: format!("rejected in review by {}: {}", d.actor, d.reason),
                at: d.occurred_at,
                event_id: event_id.to_string(),
            });
        }
        let review = self.state.reviews.get_mut(&key).expect("looked up");
        review.status = status;
        review.decided_at = Some(d.occurred_at);
        review.actor = Some(d.actor.clone());
        review.reason = Some(d.reason.clone());
    }

    /// Sums of a customer's lines still held for review, by currency and
    /// payable date (lines already forfeited are gone).
    fn held_groups(
        &self,
        partner_id: &str,
        program: &str,
        customer: &str,
    ) -> BTreeMap<(String, Option<DateTime<Utc>>), Decimal> {
        let mut groups: BTreeMap<(String, Option<DateTime<Utc>>), Decimal> = BTreeMap::new();
        let Some(p) = self.state.partners.get(partner_id) else {
            return groups;
        };
        for &i in &p.lines {
            let l = &self.state.ledger[i];
            if l.held_for_review
                && l.program == program
                && l.customer_id.as_deref() == Some(customer)
                && !self.state.forfeited.contains(&i)
            {
                *groups
                    .entry((l.currency.clone(), l.available_at))
                    .or_default() += l.amount;
            }
        }
        groups.retain(|_, v| !v.is_zero());
        groups
    }

    /// What a review holds now, per currency.
    pub fn held_amounts(&self, review: &Review) -> BTreeMap<String, Decimal> {
        let mut out: BTreeMap<String, Decimal> = BTreeMap::new();
        for ((currency, _), v) in
            self.held_groups(&review.partner_id, &review.program, &review.customer_id)
        {
            *out.entry(currency).or_default() += v;
        }
        out
    }

    /// A review by id (a scan: reviews are few, and decided by id rarely).
    pub fn review(&self, id: &str) -> Option<&Review> {
        self.state.reviews.values().find(|r| r.id == id)
    }

    /// The review of a program's customer, if its referral was held.
    pub fn review_of(&self, program: &str, customer: &str) -> Option<&Review> {
        self.state.reviews.get(&customer_key(program, customer))
    }

    /// Reviews, newest first, optionally of one status, program and partner.
    pub fn reviews(
        &self,
        status: Option<ReviewStatus>,
        program: Option<&str>,
        partner: Option<&str>,
    ) -> Vec<&Review> {
        let mut all: Vec<&Review> = self
            .state
            .reviews
            .values()
            .filter(|r| {
                status.is_none_or(|s| r.status == s)
                    && program.is_none_or(|p| r.program == p)
                    && partner.is_none_or(|p| r.partner_id == p)
            })
            .collect();
        all.sort_by(|a, b| b.held_at.cmp(&a.held_at).then(a.id.cmp(&b.id)));
        all
    }
}
