//! Payments: what an invoice earns (base, cap, rate and tier top-ups),
//! when it becomes payable (holds and releases), and currency conversion.

use super::*;

impl Calculator {
    pub(super) fn payment(&mut self, event_id: &str, p: &Payment) {
        let key = customer_key(&p.program, &p.customer_id);
        let Some(book) = self.programs.get(&p.program) else {
            return self.problem(event_id, format!("unknown program {}", p.program));
        };
        let Some(rules) = book.rules.clone() else {
            return;
        };
        let Some(cust) = self.state.customers.get_mut(&key) else {
            return;
        };
        let Some(partner_id) = cust.partner_id.clone() else {
            return;
        };
        if cust.invoices.contains_key(&p.invoice_id) {
            return self.problem(
                event_id,
                format!("invoice {} was already paid", p.invoice_id),
            );
        }
        // Checked before anything changes: an overflow is a problem on this
        // event, never a half-applied payment.
        let total = checked_sum(p.lines.iter().map(|l| l.amount));
        let subscription = checked_sum(
            p.lines
                .iter()
                .filter(|l| l.kind == InvoiceKind::Subscription)
                .map(|l| l.amount),
        );
        let caps_fit = p.lines.iter().all(|l| {
            l.unit_price.is_none_or(|u| {
                u.checked_mul(Decimal::from(l.quantity.unwrap_or(1)))
                    .is_some()
            })
        });
        let (Some(total), Some(subscription), true) = (total, subscription, caps_fit) else {
            return self.problem(
                event_id,
                format!(
                    "invoice {}: amounts overflow; payment not applied",
                    p.invoice_id
                ),
            );
        };
        let Some(cust) = self.state.customers.get_mut(&key) else {
            return;
        };
        cust.paid_invoices += 1;
        let invoice_no = cust.paid_invoices;
        let billing_month = format!("{:04}-{:02}", p.occurred_at.year(), p.occurred_at.month());
        let (month_no, new_month) = match cust.paid_months.iter().position(|m| *m == billing_month)
        {
            Some(i) => (i as u32 + 1, false),
            None => {
                cust.paid_months.push(billing_month);
                (cust.paid_months.len() as u32, true)
            }
        };
        cust.invoices.insert(
            p.invoice_id.clone(),
            InvoiceAcct {
                total,
                ..Default::default()
            },
        );
        if cust.initial.is_none() {
            cust.initial = p
                .lines
                .iter()
                .find(|l| l.kind == InvoiceKind::Subscription && l.unit_price.is_some())
                .map(|l| {
                    (
                        l.plan.clone().unwrap_or_else(|| "plan".into()),
                        l.unit_price.unwrap_or_default(),
                    )
                })
                .or_else(|| cust.current_plan.clone());
        }
        let eligible = match rules.commission.duration {
            Duration::Lifetime => true,
            Duration::WhileSubscribed => !cust.cancelled,
            Duration::FirstInvoices { count } => invoice_no <= count,
            Duration::FirstMonths { count } => month_no <= count,
        };
        let referred_at = cust.referred_at.unwrap_or(p.occurred_at);
        let initial = cust.initial.clone();

        let standing = self.state.partners.get(&partner_id).map(|a| a.standing);
        // Tier measures are kept in the pivot currency.
        let pivot = &rules.commission.pivot;
        let to_pivot = if &p.currency == pivot {
            Some(Decimal::ONE)
        } else {
            self.cross_rate(pivot, &p.currency, pivot, p.occurred_at)
                .map(|(f, t, _)| t / f)
        };
        let (sub_p, total_p) = match to_pivot {
            Some(k) => (cents(subscription * k), cents(total * k)),
            None => (subscription, total),
        };
        if !eligible || standing != Some(Standing::Active) {
            return;
        }
        // A referral rejected in review earns nothing more; one held
        // earns into the held bucket.
        let review = self.review_status(&key);
        if review == Some(ReviewStatus::Rejected) {
            return;
        }
        // Only revenue that earns counts toward the partner's tier: a
        // cancelled account brings its partner no MRR.
        let mkey = month_key(&partner_id, p.occurred_at);
        let agg = self.state.months.entry(mkey.clone()).or_default();
        agg.referred_mrr += sub_p;
        agg.payments += total_p;

        // The base: counted line kinds, subscription capped if configured.
        let c = &rules.commission;
        let mut base = Decimal::ZERO;
        let mut parts: Vec<String> = Vec::new();
        for l in &p.lines {
            if !c.base.contains(&l.kind) {
                continue;
            }
            let kind = match l.kind {
                InvoiceKind::Subscription => "subscription",
                InvoiceKind::Usage => "usage",
                InvoiceKind::Fee => "fee",
            };
            match (c.cap, l.kind, &initial) {
                (Cap::InitialPlan, InvoiceKind::Subscription, Some((plan, price))) => {
                    let qty = Decimal::from(l.quantity.unwrap_or(1));
                    let cap = price.checked_mul(qty).unwrap_or(Decimal::MAX);
                    let counted = l.amount.min(cap);
                    base += counted;
                    let seats = l.quantity.unwrap_or(1);
                    let seat_word = if seats == 1 { "seat" } else { "seats" };
                    if counted < l.amount {
                        parts.push(format!(
                            "initial plan {plan} {} × {seats} {seat_word} (subscription {} capped)",
                            fmt2(*price),
                            fmt2(l.amount)
                        ));
                    } else {
                        parts.push(format!(
                            "{kind} {} (within initial plan {plan} {} × {seats} {seat_word})",
                            fmt2(l.amount),
                            fmt2(*price)
                        ));
                    }
                }
                _ => {
                    base += l.amount;
                    parts.push(format!("{kind} {}", fmt2(l.amount)));
                }
            }
        }
        if parts.is_empty() {
            return;
        }
        let (percent, tier_note) = match &c.rate {
            Rate::Flat { percent } => (*percent, String::new()),
            Rate::Tiered { by, tiers } => {
                let (measure, label) = match by {
                    TierMeasure::ReferredMrr => (agg.referred_mrr, "referred MRR"),
                    TierMeasure::MonthlyPayments => (agg.payments, "payments"),
                };
                let tier = tiers
                    .iter()
                    .rev()
                    .find(|t| measure >= t.from)
                    .unwrap_or(&tiers[0]);
                (
                    tier.percent,
                    format!(
                        " (tier from {}: {label} this month {})",
                        fmt2(tier.from),
                        fmt2(measure)
                    ),
                )
            }
        };
        let explanation = format!(
            "{}%{} of {} on invoice {} #{invoice_no}",
            percent.normalize(),
            tier_note,
            parts.join(" + "),
            p.invoice_id
        );
        let commission = percent_of(base, percent);
        let available_at = match c.payable {
            Payable::OnPayment => Some(p.occurred_at),
            Payable::AfterInvoices { count } => (invoice_no >= count).then_some(p.occurred_at),
            Payable::AfterMonths { count } => (month_no >= count).then_some(p.occurred_at),
            Payable::MonthsAfterClose { months } => {
                Some(p.occurred_at.max(add_months(referred_at, months)))
            }
            Payable::NextMonthDay { day } => Some(next_month_day(p.occurred_at, day)),
        };
        let Some((amount, currency, fx)) = self.convert(
            event_id,
            &rules,
            &partner_id,
            commission,
            &p.currency,
            p.occurred_at,
        ) else {
            return;
        };
        let mut explanation = explanation;
        if let Some(f) = &fx {
            explanation.push_str(&format!(
                "; {} {} → {} {} via {} (1 {} = {} {}, = {} {})",
                fmt2(f.original),
                f.from,
                fmt2(amount),
                f.to,
                f.pivot,
                f.pivot,
                f.from_rate,
                f.from,
                f.to_rate,
                f.to
            ));
        }
        let idx = self.push_line(Line {
            seq: 0,
            event_id: event_id.to_string(),
            at: p.occurred_at,
            kind: LineKind::Commission,
            partner_id: partner_id.clone(),
            program: p.program.clone(),
            amount,
            currency,
            available_at,
            customer_id: Some(p.customer_id.clone()),
            invoice_id: Some(p.invoice_id.clone()),
            explanation,
            fx,
            held_for_review: review == Some(ReviewStatus::Held),
        });
        self.invoice_lines(&key, &p.invoice_id).push(idx);

        // Tier crossed: top up this month's earlier lines.
        if matches!(c.rate, Rate::Tiered { .. }) {
            let priced = std::mem::take(
                &mut self
                    .state
                    .months
                    .get_mut(&mkey)
                    .expect("created above")
                    .priced,
            );
            let mut kept = Vec::with_capacity(priced.len() + 1);
            for (line_idx, line_base, applied) in priced {
                if applied < percent {
                    self.tier_adjustment(event_id, line_idx, line_base, applied, percent);
                }
                kept.push((line_idx, line_base, applied.max(percent)));
            }
            kept.push((idx, base, percent));
            self.state
                .months
                .get_mut(&mkey)
                .expect("created above")
                .priced = kept;
        }

        let reached = match c.payable {
            Payable::AfterInvoices { count } if invoice_no == count => {
                Some(format!("paid invoice #{count} reached"))
            }
            Payable::AfterMonths { count } if new_month && month_no == count => {
                Some(format!("billing month #{count} paid"))
            }
            _ => None,
        };
        if let Some(reached) = reached {
            self.release(
                event_id,
                &key,
                &partner_id,
                &p.program,
                &p.customer_id,
                p.occurred_at,
                &reached,
            );
        }
    }

    pub(super) fn invoice_lines(&mut self, key: &str, invoice: &str) -> &mut Vec<usize> {
        &mut self
            .state
            .customers
            .get_mut(key)
            .expect("customer exists")
            .invoices
            .get_mut(invoice)
            .expect("invoice exists")
            .lines
    }

    pub(super) fn tier_adjustment(
        &mut self,
        event_id: &str,
        line_idx: usize,
        base: Decimal,
        old_pct: Decimal,
        new_pct: Decimal,
    ) {
        let orig = self.state.ledger[line_idx].clone();
        // The top-up follows its customer's review as it stands now.
        let review = orig
            .customer_id
            .as_ref()
            .and_then(|c| self.review_status(&customer_key(&orig.program, c)));
        if review == Some(ReviewStatus::Rejected) {
            return;
        }
        // Rounded once overall: the line and its top-ups add up to the new
        // percentage of the base rounded to cents.
        let delta = percent_of(base, new_pct) - percent_of(base, old_pct);
        let delta_pct = new_pct - old_pct;
        if delta.is_zero() {
            return;
        }
        let (amount, fx) = match &orig.fx {
            Some(f) => {
                let converted = cents(delta / f.from_rate * f.to_rate);
                let mut f2 = f.clone();
                f2.original = delta;
                (converted, Some(f2))
            }
            None => (delta, None),
        };
        let idx = self.push_line(Line {
            seq: 0,
            event_id: event_id.to_string(),
            at: self.state.ledger.last().map_or(orig.at, |l| l.at),
            kind: LineKind::TierAdjustment,
            partner_id: orig.partner_id.clone(),
            program: orig.program.clone(),
            amount,
            currency: orig.currency.clone(),
            available_at: orig.available_at,
            customer_id: orig.customer_id.clone(),
            invoice_id: orig.invoice_id.clone(),
            explanation: format!(
                "tier reached {}%: +{}% of base {} of line {} (invoice {})",
                new_pct.normalize(),
                delta_pct.normalize(),
                fmt2(base),
                orig.seq,
                orig.invoice_id.as_deref().unwrap_or("-")
            ),
            fx,
            held_for_review: review == Some(ReviewStatus::Held),
        });
        if let (Some(c), Some(inv)) = (&orig.customer_id, &orig.invoice_id) {
            let key = customer_key(&orig.program, c);
            let refunded = self
                .state
                .customers
                .get_mut(&key)
                .and_then(|acct| acct.invoices.get_mut(inv))
                .map(|i| {
                    i.lines.push(idx);
                    (i.refunded, i.total)
                });
            // A top-up is commission on its invoice: what of the invoice
            // was already refunded or charged back takes its share of the
            // top-up with it.
            if let Some((refunded, total)) = refunded.filter(|(r, _)| !r.is_zero()) {
                let why =
                    format!(
                    "invoice {inv} was already {}% refunded or charged back ({} of {}): that share",
                    (refunded * Decimal::ONE_HUNDRED / total).round_dp(2).normalize(),
                    fmt2(refunded),
                    fmt2(total)
                );
                let at = self.state.ledger[idx].at;
                self.reverse_line(event_id, &key, inv, idx, at, &why);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn release(
        &mut self,
        event_id: &str,
        key: &str,
        partner_id: &str,
        program: &str,
        customer: &str,
        at: DateTime<Utc>,
        reached: &str,
    ) {
        // Lines still held for review stay in that bucket: only their
        // payable date changes.
        let mut held: BTreeMap<(String, bool), Decimal> = BTreeMap::new();
        if let Some(p) = self.state.partners.get(partner_id) {
            for &i in &p.lines {
                let l = &self.state.ledger[i];
                if l.available_at.is_none()
                    && l.customer_id.as_deref() == Some(customer)
                    && l.program == program
                {
                    *held
                        .entry((l.currency.clone(), l.held_for_review))
                        .or_default() += l.amount;
                }
            }
        }
        if let Some(c) = self.state.customers.get_mut(key) {
            c.released_at = Some(at);
        }
        for ((currency, held_for_review), amount) in held {
            if amount.is_zero() {
                continue;
            }
            for (sign, available_at) in [(-Decimal::ONE, None), (Decimal::ONE, Some(at))] {
                self.push_line(Line {
                    seq: 0,
                    event_id: event_id.to_string(),
                    at,
                    kind: LineKind::Release,
                    partner_id: partner_id.to_string(),
                    program: program.to_string(),
                    amount: amount * sign,
                    currency: currency.clone(),
                    available_at,
                    customer_id: Some(customer.to_string()),
                    invoice_id: None,
                    explanation: format!(
                        "held commission {} {} payable now: {reached}",
                        fmt2(amount),
                        currency
                    ),
                    fx: None,
                    held_for_review,
                });
            }
        }
    }

    /// Converts an invoice-currency amount per the program's currency rule.
    pub(super) fn convert(
        &mut self,
        event_id: &str,
        rules: &Rules,
        partner_id: &str,
        amount: Decimal,
        from: &str,
        at: DateTime<Utc>,
    ) -> Option<(Decimal, String, Option<FxUsed>)> {
        let to = match rules.commission.currency {
            CurrencyRule::Invoice => return Some((amount, from.to_string(), None)),
            CurrencyRule::Partner => self
                .state
                .partners
                .get(partner_id)
                .map(|p| p.record.currency.clone())
                .unwrap_or_else(|| from.to_string()),
        };
        if to == from {
            return Some((amount, to, None));
        }
        let pivot = &rules.commission.pivot;
        match self.cross_rate(pivot, from, &to, at) {
            Some((from_rate, to_rate, rates_at)) => {
                let Some(converted) = amount
                    .checked_div(from_rate)
                    .and_then(|v| v.checked_mul(to_rate))
                    .map(cents)
                else {
                    self.problem(
                        event_id,
                        format!(
                            "converting {amount} {from} to {to} overflows; commission not recorded"
                        ),
                    );
                    return None;
                };
                Some((
                    converted,
                    to.clone(),
                    Some(FxUsed {
                        original: amount,
                        from: from.to_string(),
                        to,
                        pivot: pivot.clone(),
                        from_rate,
                        to_rate,
                        rates_at,
                    }),
                ))
            }
            None => {
                self.problem(event_id, format!("no {pivot}-based exchange rate for {from} and {to} at {at}; commission not recorded"));
                None
            }
        }
    }

    /// Rates of `from` and `to` per 1 `pivot`, from the newest table at or
    /// before `at` that has both.
    pub(super) fn cross_rate(
        &self,
        pivot: &str,
        from: &str,
        to: &str,
        at: DateTime<Utc>,
    ) -> Option<(Decimal, Decimal, DateTime<Utc>)> {
        let end = self.state.fx.partition_point(|x| x.at <= at);
        self.state.fx[..end]
            .iter()
            .rev()
            .filter(|t| t.base == pivot)
            .find_map(|t| {
                let rate = |c: &str| {
                    if c == pivot {
                        Some(Decimal::ONE)
                    } else {
                        t.rates.get(c).map(|r| r.0)
                    }
                };
                Some((rate(from)?, rate(to)?, t.at))
            })
    }
}
