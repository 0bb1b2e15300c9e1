//! How a program pays, as data. Parsed from a program's `[commission]`,
//! `[payout]`, `[inactivity]` and `[[benefit_tiers]]` tables; the
//! calculator has no program-specific code.

use super::money::{decimal_lenient, decimal_lenient_opt};
use rust_decimal::Decimal;
use serde::Deserialize;

/// Every money rule of one program.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// What a payment earns.
    pub commission: Commission,
    /// When and how balances are paid out.
    #[serde(default)]
    pub payout: Payout,
    /// Forfeiture of dormant accounts, if the program has it.
    #[serde(default)]
    pub inactivity: Option<Inactivity>,
    /// Perks by monthly reward, highest first or in any order.
    #[serde(default)]
    pub benefit_tiers: Vec<BenefitTier>,
    /// What termination does to the balance.
    #[serde(default)]
    pub termination: Termination,
}

/// Termination of a partner.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Termination {
    /// The accrued balance is forfeited (KrispCall: "without payment of the
    /// accrued balance"); otherwise what was earned until the termination
    /// date is still paid (Aloware).
    #[serde(default)]
    pub forfeit_balance: bool,
}

/// What a payment earns.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commission {
    /// The percentage.
    pub rate: Rate,
    /// Which invoice line kinds count (default: subscription only).
    #[serde(default = "subscription_only")]
    pub base: Vec<LineKind>,
    /// Caps the subscription base.
    #[serde(default)]
    pub cap: Cap,
    /// Which payments of a customer earn.
    #[serde(default)]
    pub duration: Duration,
    /// When an earned commission may be paid out.
    #[serde(default)]
    pub payable: Payable,
    /// Which currency commissions are kept in.
    #[serde(default)]
    pub currency: CurrencyRule,
    /// Pivot currency for double conversion.
    #[serde(default = "usd")]
    pub pivot: String,
}

fn subscription_only() -> Vec<LineKind> {
    vec![LineKind::Subscription]
}

fn usd() -> String {
    "USD".into()
}

/// Kinds of invoice line.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// The plan's recurring fee.
    Subscription,
    /// Metered use: minutes, messages, numbers.
    Usage,
    /// One-off or regulatory fees.
    Fee,
}

/// The commission percentage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rate {
    /// The same percentage on every payment.
    Flat {
        #[serde(deserialize_with = "decimal_lenient")]
        percent: Decimal,
    },
    /// A percentage chosen by the partner's monthly total; the whole month
    /// earns the tier reached (earlier lines are topped up when a tier is
    /// crossed).
    Tiered { by: TierMeasure, tiers: Vec<Tier> },
}

/// What a tier is measured on, per partner and calendar month (UTC), in
/// the pivot currency (invoices in other currencies are converted at the
/// payment-time rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierMeasure {
    /// Subscription revenue paid by the partner's referred customers.
    ReferredMrr,
    /// Everything the partner's referred customers paid.
    MonthlyPayments,
}

/// One tier: from this monthly amount on, this percentage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    #[serde(deserialize_with = "decimal_lenient")]
    pub from: Decimal,
    #[serde(deserialize_with = "decimal_lenient")]
    pub percent: Decimal,
}

/// Cap on the subscription base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cap {
    /// No cap.
    #[default]
    None,
    /// At most the customer's *initial* plan unit price × the line's current
    /// quantity: upgrades don't raise it, extra seats do.
    InitialPlan,
}

/// Which payments of a referred customer earn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Duration {
    /// Every payment, for the life of the customer.
    #[default]
    Lifetime,
    /// Payments until the customer cancels.
    WhileSubscribed,
    /// Only the first `count` paid invoices.
    FirstInvoices { count: u32 },
    /// Only payments in the customer's first `count` billing months: the
    /// calendar months (UTC) in which it paid, counted from its first
    /// payment. Two invoices in one month (a proration when seats change)
    /// are one month.
    FirstMonths { count: u32 },
}

/// When an earned commission becomes payable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Payable {
    /// At once.
    #[default]
    OnPayment,
    /// Held until the customer's `count`-th paid invoice, then all at once.
    AfterInvoices { count: u32 },
    /// Held until the customer has paid in `count` billing months (see
    /// [`Duration::FirstMonths`]), then all at once, at the first payment
    /// of the `count`-th month.
    AfterMonths { count: u32 },
    /// Not before `months` after the referral closed.
    MonthsAfterClose { months: u32 },
    /// On day `day` of the month after the payment.
    NextMonthDay { day: u32 },
}

/// Which currency commissions are kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CurrencyRule {
    /// The invoice's currency.
    #[default]
    Invoice,
    /// The partner's currency, converted through the pivot at the rates in
    /// force at payment time.
    Partner,
}

/// Payout rules.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payout {
    /// Smallest balance paid in cash, in `minimum_currency`.
    #[serde(default, deserialize_with = "decimal_lenient_opt")]
    pub minimum: Option<Decimal>,
    /// Currency of `minimum` (converted at the payout date when a partner's
    /// balance is in another currency).
    #[serde(default = "usd")]
    pub minimum_currency: String,
    /// Whether the minimum itself qualifies (`at_least`) or only more
    /// (`more_than`).
    #[serde(default)]
    pub minimum_rule: MinimumRule,
    /// What happens to a positive balance below the minimum.
    #[serde(default)]
    pub below_minimum: BelowMinimum,
}

impl Default for Payout {
    fn default() -> Self {
        Self {
            minimum: None,
            minimum_currency: usd(),
            minimum_rule: MinimumRule::AtLeast,
            below_minimum: BelowMinimum::Carry,
        }
    }
}

/// `>=` or `>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MinimumRule {
    #[default]
    AtLeast,
    MoreThan,
}

/// A balance below the minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BelowMinimum {
    /// Stays in the account until it reaches the minimum.
    #[default]
    Carry,
    /// Is granted as credit against the partner's own bills.
    Credit,
}

/// Dormant-account forfeiture.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inactivity {
    /// Months without a click or a referral.
    pub months: u32,
    /// The balance (pending + available, in `currency`) must be below this.
    #[serde(deserialize_with = "decimal_lenient")]
    pub balance_below: Decimal,
    /// Currency of `balance_below`.
    #[serde(default = "usd")]
    pub currency: String,
}

/// A perk unlocked by a monthly reward.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenefitTier {
    /// What the partner gets.
    pub name: String,
    /// Commission earned in a month at or above which the tier applies.
    #[serde(deserialize_with = "decimal_lenient")]
    pub monthly_reward: Decimal,
    /// Currency of `monthly_reward` (rewards are converted at month end).
    #[serde(default = "usd")]
    pub currency: String,
}

impl Rules {
    /// Checks what serde cannot: returns `(field, reason)` pairs.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |f: &str, r: &str| out.push((f.to_string(), r.to_string()));
        let pct_ok = |p: &Decimal| *p >= Decimal::ZERO && *p <= Decimal::ONE_HUNDRED;
        match &self.commission.rate {
            Rate::Flat { percent } if !pct_ok(percent) => {
                bad("commission.rate.percent", "must be from 0 to 100")
            }
            Rate::Tiered { tiers, .. } => {
                if tiers.is_empty() {
                    bad("commission.rate.tiers", "needs at least one tier");
                }
                if tiers.first().is_some_and(|t| !t.from.is_zero()) {
                    bad(
                        "commission.rate.tiers[0].from",
                        "the first tier must start at 0",
                    );
                }
                if tiers.windows(2).any(|w| w[1].from <= w[0].from) {
                    bad(
                        "commission.rate.tiers",
                        "tiers must be in increasing order of `from`",
                    );
                }
                if tiers.iter().any(|t| !pct_ok(&t.percent)) {
                    bad("commission.rate.tiers", "percentages must be from 0 to 100");
                }
            }
            _ => {}
        }
        if self.commission.base.is_empty() {
            bad("commission.base", "needs at least one line kind");
        }
        match self.commission.payable {
            Payable::NextMonthDay { day } if !(1..=28).contains(&day) => {
                bad("commission.payable.day", "must be from 1 to 28")
            }
            Payable::AfterInvoices { count: 0 } | Payable::AfterMonths { count: 0 } => {
                bad("commission.payable.count", "must be at least 1")
            }
            _ => {}
        }
        if let Duration::FirstInvoices { count: 0 } | Duration::FirstMonths { count: 0 } =
            self.commission.duration
        {
            bad("commission.duration.count", "must be at least 1");
        }
        if !crate::config::is_currency(&self.commission.pivot) {
            bad("commission.pivot", "must be a 3-letter ISO 4217 code");
        }
        if self.payout.minimum.is_some_and(|m| m < Decimal::ZERO) {
            bad("payout.minimum", "must not be negative");
        }
        if let Some(i) = &self.inactivity {
            if i.months == 0 {
                bad("inactivity.months", "must be at least 1");
            }
        }
        out
    }
}
