//! Signups: which click or coupon a signup claims, every reason it is
//! refused, and the referral it becomes.

use super::*;
use crate::commission::review::{ReviewFlag, Signal};

impl Calculator {
    pub(super) fn signup(&mut self, event_id: &str, s: &Signup) {
        let Some(book) = self.programs.get(&s.program) else {
            return self.problem(event_id, format!("unknown program {}", s.program));
        };
        let cookie_days = book.cookie_days;
        let min_age = book.min_click_to_signup_seconds;
        let review = book.review.clone();
        // Soft signals: the referral is made, its commissions held.
        let mut signals: Vec<Signal> = Vec::new();
        let shared = self.shared_address(s);
        let key = customer_key(&s.program, &s.customer.id);
        let reject =
            |me: &mut Self, partner: Option<&str>, reason: RejectReason, detail: String| {
                me.state.rejections.push(Rejection {
                    customer_id: s.customer.id.clone(),
                    program: s.program.clone(),
                    partner_id: partner.map(String::from),
                    reason,
                    detail,
                    at: s.occurred_at,
                    event_id: event_id.to_string(),
                });
            };

        // Which click (token or click id) and which coupon are claimed.
        let resolved_error = s.resolved.as_ref().and_then(|r| r.error.clone());
        let claimed_click = s
            .resolved
            .as_ref()
            .and_then(|r| r.click.clone())
            .or_else(|| {
                s.attribution
                    .click_id
                    .as_ref()
                    .and_then(|id| self.state.clicks.get(id).cloned())
            });
        let has_click_claim = s.attribution.token.is_some() || s.attribution.click_id.is_some();
        if has_click_claim && claimed_click.is_none() {
            let detail =
                resolved_error.unwrap_or_else(|| "the token or click id matches no click".into());
            return reject(self, None, RejectReason::InvalidAttribution, detail);
        }
        let coupon = match &s.attribution.coupon {
            None => None,
            Some(code) => match self.state.coupons.get(code) {
                None => {
                    let p = claimed_click.as_ref().map(|c| c.partner_id.as_str());
                    return reject(
                        self,
                        p,
                        RejectReason::CouponUnknown,
                        format!("no coupon {code:?}"),
                    );
                }
                Some(c) => Some(c.clone()),
            },
        };
        let partner_id = match (&claimed_click, &coupon) {
            (None, None) => {
                return reject(
                    self,
                    None,
                    RejectReason::NoAttribution,
                    "no token, click id or coupon".into(),
                )
            }
            (Some(c), Some(k)) if c.partner_id != k.record.partner_id => {
                return reject(
                    self,
                    Some(&c.partner_id),
                    RejectReason::CouponOtherPartner,
                    format!(
                        "coupon {} is assigned to another partner than the click",
                        k.record.code
                    ),
                );
            }
            (Some(c), _) => c.partner_id.clone(),
            (None, Some(k)) => k.record.partner_id.clone(),
        };
        let pid = Some(partner_id.as_str());
        if s.customer.existing {
            return reject(
                self,
                pid,
                RejectReason::ExistingCustomer,
                "already a customer or prospect".into(),
            );
        }
        if let Some(existing) = self
            .state
            .customers
            .get(&key)
            .and_then(|c| c.partner_id.clone())
        {
            return reject(
                self,
                pid,
                RejectReason::CurrentCustomerReferral,
                format!("already referred by {existing}; the first referral stands"),
            );
        }
        let Some(partner) = self.state.partners.get(&partner_id).cloned() else {
            return reject(
                self,
                pid,
                RejectReason::PartnerNotActive,
                "unknown partner".into(),
            );
        };
        if partner.record.program != s.program {
            return reject(
                self,
                pid,
                RejectReason::InvalidAttribution,
                "the partner is in another program".into(),
            );
        }
        if partner.standing != Standing::Active {
            return reject(
                self,
                pid,
                RejectReason::PartnerNotActive,
                format!("partner is {:?}", partner.standing).to_lowercase(),
            );
        }
        if let Some(c) = &claimed_click {
            let soft = review.holds(ReviewFlag::PaidSearch)
                && c.flags.iter().all(|f| f == ReviewFlag::PaidSearch.label());
            if !c.flags.is_empty() && soft {
                signals.push(Signal {
                    flag: ReviewFlag::PaidSearch,
                    detail: format!("click {} came from a paid-search ad", c.id),
                });
            } else if !c.flags.is_empty() {
                return reject(
                    self,
                    pid,
                    RejectReason::FlaggedClick,
                    format!("click {} was flagged: {}", c.id, c.flags.join(", ")),
                );
            }
            if let Some(other) = self
                .state
                .click_customers
                .get(&c.id)
                .filter(|o| *o != &s.customer.id)
            {
                return reject(
                    self,
                    pid,
                    RejectReason::AttributionReused,
                    format!("click {} already brought customer {other}", c.id),
                );
            }
            if (s.occurred_at - c.occurred_at) < chrono::Duration::seconds(min_age as i64)
                && s.occurred_at >= c.occurred_at
            {
                return reject(
                    self,
                    pid,
                    RejectReason::ScriptedLead,
                    format!(
                        "signed up {}s after the click; a person needs at least {min_age}s",
                        (s.occurred_at - c.occurred_at).num_seconds()
                    ),
                );
            }
            if c.program.as_ref().is_some_and(|p| p != &s.program) {
                return reject(
                    self,
                    pid,
                    RejectReason::InvalidAttribution,
                    "the click is for another program".into(),
                );
            }
            let age = s.occurred_at - c.occurred_at;
            if age < chrono::Duration::zero() {
                return reject(
                    self,
                    pid,
                    RejectReason::InvalidAttribution,
                    "signup before the click".into(),
                );
            }
            if age > chrono::Duration::days(i64::from(cookie_days)) {
                return reject(
                    self,
                    pid,
                    RejectReason::WindowExpired,
                    format!(
                        "click {} days before signup; window is {cookie_days} days",
                        age.num_days()
                    ),
                );
            }
            if review.holds(ReviewFlag::FastSignup)
                && age < chrono::Duration::seconds(review.fast_signup_seconds as i64)
            {
                signals.push(Signal {
                    flag: ReviewFlag::FastSignup,
                    detail: format!(
                        "signed up {}s after the click; the program reviews signups under {}s",
                        age.num_seconds(),
                        review.fast_signup_seconds
                    ),
                });
            }
        }
        if let Some(k) = &coupon {
            if k.record.expires_at.is_some_and(|e| s.occurred_at > e) {
                return reject(
                    self,
                    pid,
                    RejectReason::CouponExpired,
                    format!("coupon {} expired", k.record.code),
                );
            }
            if k.record.single_use && k.redemptions >= 1 {
                return reject(
                    self,
                    pid,
                    RejectReason::CouponAlreadyRedeemed,
                    format!("single-use coupon {} was already redeemed", k.record.code),
                );
            }
            if k.record.max_redemptions.is_some_and(|m| k.redemptions >= m) {
                return reject(
                    self,
                    pid,
                    RejectReason::CouponExhausted,
                    format!("coupon {} reached its redemption limit", k.record.code),
                );
            }
        }
        if let Some(detail) = self_referral(&partner.record, &s.customer) {
            return reject(self, pid, RejectReason::SelfReferral, detail);
        }

        let via_click = claimed_click.is_some();
        if let Some(c) = &claimed_click {
            self.state
                .click_customers
                .insert(c.id.clone(), s.customer.id.clone());
        }
        if let Some(k) = &coupon {
            if let Some(acct) = self.state.coupons.get_mut(&k.record.code) {
                acct.redemptions += 1;
            }
        }
        signals.extend(shared);
        if !signals.is_empty() {
            self.hold_for_review(event_id, s, &partner_id, signals);
        }
        let cust = self.state.customers.entry(key).or_default();
        cust.partner_id = Some(partner_id.clone());
        cust.referred_at = Some(s.occurred_at);
        if let Some(p) = self.state.partners.get_mut(&partner_id) {
            p.last_activity = p.last_activity.max(Some(s.occurred_at));
        }
        self.state.referrals.push(Referral {
            customer_id: s.customer.id.clone(),
            program: s.program.clone(),
            partner_id,
            at: s.occurred_at,
            event_id: event_id.to_string(),
            via: if via_click { "click" } else { "coupon" }.into(),
            click_id: claimed_click.map(|c| c.id),
            coupon: coupon.map(|k| k.record.code),
        });
    }
}

/// E-mail providers whose domain says nothing about a company.
const FREE_MAIL: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "ymail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "pm.me",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "mail.com",
    "zoho.com",
    "yandex.com",
    "yandex.ru",
    "mail.ru",
    "ukr.net",
    "i.ua",
    "web.de",
    "qq.com",
    "163.com",
];

fn domain_of(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let host = match s.split_once('@') {
        Some((_, d)) => d.to_string(),
        None => {
            let no_scheme = s.split("://").last().unwrap_or(&s);
            no_scheme
                .split(['/', ':'])
                .next()
                .unwrap_or_default()
                .to_string()
        }
    };
    let host = host.strip_prefix("www.").unwrap_or(&host).to_string();
    (!host.is_empty()).then_some(host)
}

/// Self-referral: the customer's e-mail is the partner's, or the customer's
/// company domain (or e-mail domain, unless a free-mail provider) is the
/// partner's e-mail or website domain.
fn self_referral(partner: &PartnerRecord, c: &Customer) -> Option<String> {
    if partner.customer_ids.iter().any(|id| id == &c.id) {
        return Some(format!("customer {} is the partner's own account", c.id));
    }
    let ip = c.ip_hash.as_ref().or(c.ip.as_ref());
    if let Some(ip) = ip.filter(|ip| partner.ip_hashes.contains(ip)) {
        let shown = if c.ip_hash.is_some() {
            format!("hash {ip}")
        } else {
            ip.clone()
        };
        return Some(format!(
            "customer signed up from the partner's own address ({shown})"
        ));
    }
    let pmail = partner.email.trim().to_ascii_lowercase();
    if let Some(m) = &c.email {
        if !pmail.is_empty() && m.trim().to_ascii_lowercase() == pmail {
            return Some("customer e-mail is the partner's".into());
        }
    }
    let customer_domains: Vec<String> = [c.company_domain.as_deref(), c.email.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(domain_of)
        .filter(|d| !FREE_MAIL.contains(&d.as_str()))
        .collect();
    let partner_domains: Vec<String> = [Some(partner.email.as_str()), partner.website.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(domain_of)
        .filter(|d| !FREE_MAIL.contains(&d.as_str()))
        .collect();
    customer_domains
        .iter()
        .find(|d| partner_domains.contains(d))
        .map(|d| format!("customer company domain {d} is the partner's"))
}
