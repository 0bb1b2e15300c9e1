//! Payout runs, and forfeiture for inactivity and termination.

use super::*;

impl Calculator {
    /// Computes (and unless `dry_run`, records) a payout batch.
    pub fn payout_run(&mut self, event_id: &str, r: &PayoutRun) -> Option<PayoutBatch> {
        let id = format!("po_{}_{}", r.program, r.as_of.format("%Y%m%d"));
        if let Some(existing) = self.state.payouts.get(&id) {
            return Some(existing.clone());
        }
        let Some(book) = self.programs.get(&r.program) else {
            self.problem(event_id, format!("unknown program {}", r.program));
            return None;
        };
        let rules = book.rules.clone()?;
        let as_of = r.as_of;
        let partner_ids: Vec<String> = self
            .state
            .partners
            .iter()
            .filter(|(_, p)| p.record.program == r.program)
            .map(|(id, _)| id.clone())
            .collect();
        let mut items = Vec::new();
        let mut deactivated = Vec::new();
        let mut new_lines: Vec<Line> = Vec::new();
        let mut forfeited: Vec<usize> = Vec::new();
        for pid in partner_ids {
            if let Some(t) = r.last_clicks.get(&pid) {
                if !r.dry_run {
                    let p = self.state.partners.get_mut(&pid).expect("listed");
                    p.last_activity = p.last_activity.max(Some(*t));
                }
            }
            let acct = &self.state.partners[&pid];
            let last_activity = acct.last_activity.max(r.last_clicks.get(&pid).copied());
            let bals = balances(acct.lines.iter().map(|&i| &self.state.ledger[i]), as_of);
            if acct.standing == Standing::Active {
                if let Some(rule) = &rules.inactivity {
                    let dormant = last_activity.is_none_or(|t| as_of >= add_months(t, rule.months));
                    let total = self.total_in(&bals, &rule.currency, as_of);
                    if dormant && total.is_some_and(|t| t < rule.balance_below) {
                        deactivated.push(pid.clone());
                        let (lines, taken) = self.forfeit_lines(event_id, &pid, &r.program, as_of, &format!(
                            "inactive for {} months with a balance below {} {}: account deactivated, balance forfeited",
                            rule.months, fmt2(rule.balance_below), rule.currency
                        ));
                        new_lines.extend(lines);
                        forfeited.extend(taken);
                        continue;
                    }
                }
            }
            // Suspended: held. Inactive: forfeited. Terminated: what was
            // earned until the termination date is still paid (or was
            // forfeited at termination, per the program).
            if matches!(acct.standing, Standing::Suspended | Standing::Inactive) {
                continue;
            }
            for (currency, bal) in &bals {
                if bal.available <= Decimal::ZERO {
                    continue;
                }
                let minimum = match rules.payout.minimum {
                    None => Decimal::ZERO,
                    Some(m) if currency == &rules.payout.minimum_currency => m,
                    Some(m) => match self.cross_rate(
                        &rules.commission.pivot,
                        &rules.payout.minimum_currency,
                        currency,
                        as_of,
                    ) {
                        Some((f, t, _)) => cents(m / f * t),
                        None => {
                            self.problem(event_id, format!("no rate to compare {currency} with the payout minimum; {pid} skipped"));
                            continue;
                        }
                    },
                };
                let meets = match rules.payout.minimum_rule {
                    MinimumRule::AtLeast => bal.available >= minimum,
                    MinimumRule::MoreThan => bal.available > minimum,
                };
                let (kind, method) = if meets {
                    (LineKind::Payout, "cash")
                } else if rules.payout.below_minimum == BelowMinimum::Credit {
                    (LineKind::Credit, "credit")
                } else {
                    continue;
                };
                let rule_word = match rules.payout.minimum_rule {
                    MinimumRule::AtLeast => "at least",
                    MinimumRule::MoreThan => "more than",
                };
                let explanation = if meets {
                    format!("payout {id}: available {} {currency} is {rule_word} the minimum {} {currency}", fmt2(bal.available), fmt2(minimum))
                } else {
                    format!("payout {id}: available {} {currency} is not {rule_word} the minimum {} {currency}; granted as credit", fmt2(bal.available), fmt2(minimum))
                };
                items.push(PayoutItem {
                    partner_id: pid.clone(),
                    amount: bal.available,
                    currency: currency.clone(),
                    method: method.into(),
                });
                new_lines.push(Line {
                    seq: 0,
                    event_id: event_id.to_string(),
                    at: as_of,
                    kind,
                    partner_id: pid.clone(),
                    program: r.program.clone(),
                    amount: -bal.available,
                    currency: currency.clone(),
                    available_at: Some(as_of),
                    customer_id: None,
                    invoice_id: None,
                    explanation,
                    fx: None,
                    held_for_review: false,
                });
            }
        }
        let batch = PayoutBatch {
            id: id.clone(),
            program: r.program.clone(),
            as_of,
            status: if self.auto_confirm {
                "confirmed"
            } else {
                "created"
            }
            .into(),
            items,
            deactivated,
        };
        if r.dry_run {
            return Some(batch);
        }
        self.state.forfeited.extend(forfeited);
        for l in new_lines {
            if matches!(l.kind, LineKind::Payout | LineKind::Credit) {
                self.state
                    .paid_through
                    .insert(format!("{}\u{1f}{}", l.partner_id, l.currency), as_of);
            }
            self.push_line(l);
        }
        for pid in &batch.deactivated {
            if let Some(p) = self.state.partners.get_mut(pid) {
                p.standing = Standing::Inactive;
            }
        }
        self.state.payouts.insert(id, batch.clone());
        Some(batch)
    }

    /// Lines that zero a partner's balances (pending per availability date,
    /// and available), and the lines they forfeit (a later refund of one
    /// of those cannot take its commission a second time).
    pub(super) fn forfeit_lines(
        &self,
        event_id: &str,
        pid: &str,
        program: &str,
        as_of: DateTime<Utc>,
        why: &str,
    ) -> (Vec<Line>, Vec<usize>) {
        let mut groups: BTreeMap<(String, bool, Option<DateTime<Utc>>), Decimal> = BTreeMap::new();
        let mut taken = Vec::new();
        for &i in &self.state.partners[pid].lines {
            let l = &self.state.ledger[i];
            if l.at > as_of {
                continue;
            }
            taken.push(i);
            let when = if l.available_by(as_of) && !l.held_for_review {
                Some(as_of)
            } else {
                l.available_at
            };
            *groups
                .entry((l.currency.clone(), l.held_for_review, when))
                .or_default() += l.amount;
        }
        let lines = groups
            .into_iter()
            .filter(|(_, amount)| !amount.is_zero())
            .map(|((currency, held_for_review, available_at), amount)| Line {
                seq: 0,
                event_id: event_id.to_string(),
                at: as_of,
                kind: LineKind::Forfeit,
                partner_id: pid.to_string(),
                program: program.to_string(),
                amount: -amount,
                currency,
                available_at,
                customer_id: None,
                invoice_id: None,
                explanation: why.to_string(),
                fx: None,
                held_for_review,
            })
            .collect();
        (lines, taken)
    }

    /// Sum of pending + available over currencies, in `currency`.
    pub(super) fn total_in(
        &self,
        bals: &BTreeMap<String, Balance>,
        currency: &str,
        as_of: DateTime<Utc>,
    ) -> Option<Decimal> {
        let mut total = Decimal::ZERO;
        for (c, b) in bals {
            let v = b.pending + b.available;
            if c == currency {
                total += v;
            } else {
                let (f, t, _) = self.cross_rate(currency, c, currency, as_of)?;
                total += v / f * t;
            }
        }
        Some(total)
    }

    /// Forfeits the whole balance (termination for breach).
    pub fn forfeit_all(&mut self, event_id: &str, pid: &str, as_of: DateTime<Utc>, why: &str) {
        let Some(p) = self.state.partners.get(pid) else {
            return;
        };
        let program = p.record.program.clone();
        let (lines, taken) = self.forfeit_lines(event_id, pid, &program, as_of, why);
        self.state.forfeited.extend(taken);
        for l in lines {
            self.push_line(l);
        }
    }
}
