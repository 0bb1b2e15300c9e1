//! Refunds and chargebacks: each invoice line brought down to the
//! invoice's unrefunded share, voided or withheld.

use super::*;

impl Calculator {
    pub(super) fn reversal(&mut self, event_id: &str, r: &Reversal, what: &str) {
        let key = customer_key(&r.program, &r.customer_id);
        let Some(cust) = self.state.customers.get_mut(&key) else {
            return;
        };
        let Some(inv) = cust.invoices.get_mut(&r.invoice_id) else {
            if cust.partner_id.is_some() {
                self.problem(
                    event_id,
                    format!("{what} of unknown invoice {}", r.invoice_id),
                );
            }
            return;
        };
        let remaining = inv.total - inv.refunded;
        let amount = r.amount.min(remaining);
        if amount <= Decimal::ZERO || inv.total.is_zero() {
            return;
        }
        inv.refunded += amount;
        let share = (amount * Decimal::ONE_HUNDRED / inv.total)
            .round_dp(2)
            .normalize();
        let lines = inv.lines.clone();
        let why = format!(
            "{what} of {} of {} on invoice {}: {share}%",
            fmt2(amount),
            fmt2(inv.total),
            r.invoice_id
        );
        for idx in lines {
            self.reverse_line(event_id, &key, &r.invoice_id, idx, r.occurred_at, &why);
        }
    }

    /// Reverses invoice line `idx` down to the invoice's refunded share
    /// (cumulative, so rounding never adds up to more than was earned):
    /// the exact product `amount × refunded / total` rounded once. What
    /// was not yet paid is voided; what was paid is withheld from future
    /// payouts. A line already forfeited is gone and is not taken twice.
    pub(super) fn reverse_line(
        &mut self,
        event_id: &str,
        key: &str,
        invoice: &str,
        idx: usize,
        at: DateTime<Utc>,
        why: &str,
    ) {
        if self.state.forfeited.contains(&idx) {
            return;
        }
        // Rejected in review: every held line was voided then.
        let review = self.review_status(key);
        if review == Some(ReviewStatus::Rejected) {
            return;
        }
        let Some(cust) = self.state.customers.get_mut(key) else {
            return;
        };
        let released_at = cust.released_at;
        let Some(inv) = cust.invoices.get_mut(invoice) else {
            return;
        };
        if inv.total.is_zero() {
            return;
        }
        let orig = self.state.ledger[idx].clone();
        let done = inv.reversed.get(&idx).copied().unwrap_or_default();
        let reverse = cents(orig.amount * inv.refunded / inv.total) - done;
        if reverse.is_zero() {
            return;
        }
        inv.reversed.insert(idx, done + reverse);
        let effective = orig.available_at.or(released_at);
        let paid_through = self
            .state
            .paid_through
            .get(&format!("{}\u{1f}{}", orig.partner_id, orig.currency))
            .copied();
        let paid = effective.is_some_and(|a| paid_through.is_some_and(|p| a <= p));
        let still_held = orig.held_for_review && review == Some(ReviewStatus::Held);
        let (kind, available_at, verb) = if still_held {
            (
                LineKind::Void,
                orig.available_at,
                "voided while held for review",
            )
        } else if paid {
            (LineKind::Clawback, Some(at), "withheld from future payouts")
        } else {
            (LineKind::Void, effective, "voided")
        };
        self.push_line(Line {
            seq: 0,
            event_id: event_id.to_string(),
            at,
            kind,
            partner_id: orig.partner_id.clone(),
            program: orig.program.clone(),
            amount: -reverse,
            currency: orig.currency.clone(),
            available_at,
            customer_id: orig.customer_id.clone(),
            invoice_id: orig.invoice_id.clone(),
            explanation: format!("{why} of line {} {verb}", orig.seq),
            fx: orig.fx.clone(),
            held_for_review: still_held,
        });
    }
}
