//! The binary encoding of a click chunk.
//!
//! A chunk value is a format byte followed by records; the writer writes
//! format 2, and format 1 and the JSON arrays before it (they start with
//! `[`) still decode.
//!
//! Format 2 — a record is:
//! - its click id: the high 64 bits as a zigzag varint difference from the
//!   previous record's (the first from zero), then the low 64 bits
//!   big-endian;
//! - a varint bit mask of the [`SLOTS`] fields that differ from the
//!   previous record's in the chunk (every present field, for the first);
//! - for each of those, in slot order, its value: a varint tag `0` absent,
//!   `1` bytes shown as lowercase hex (a varint length, the bytes), `2` an
//!   IP network (prefix bits, family `4` or `6`, the address's 4 or 16
//!   bytes) shown in CIDR form, or `n + 3` a string of `n` bytes;
//! - the cookie outcome (one byte) and the flags (a count, then a reason
//!   byte and an evidence text each).
//!
//! Links, partners, user agents and most evidence headers repeat from one
//! click to the next, so a typical record is its id, a one-byte mask, the
//! link code, the IP hash's 16 bytes and the network's 6: 48 bytes with
//! a 10-character code (the `a_typical_record_…` test), half of format 1's (which spent a tag byte on every field, and stored
//! the hash as 32 hex characters and the network as text). The record's
//! time is not stored: it is the click id's timestamp.
//!
//! Format 1 — a record is its 16-byte id, then each field as a varint tag
//! (`0` absent, `1` same as the previous record's, `n + 2` a string of `n`
//! bytes), then the cookie outcome and flags as above.

use crate::fraud::{Flag, Reason};
use crate::id::ClickId;
use crate::model::{
    ClickHeaders, ClickRecord, ClickRow, CookieOutcome, StoredVisitor, EVIDENCE_FIELDS,
};
use crate::net::{IpNet, IP_HASH_BYTES};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The format byte of chunks written before format 2.
pub(super) const FORMAT_1: u8 = 1;
/// The format byte that starts the chunks written now.
pub(super) const FORMAT_2: u8 = 2;

/// Text fields per record: link, partner, program, method, IP hash, IP
/// network, the evidence fields (user agent, referer, query, headers), the
/// refused cookie's error and the verdict.
const SLOTS: usize = 6 + EVIDENCE_FIELDS + 2;
const _: () = assert!(SLOTS <= 32, "a record's change mask is a u32");

/// Format 1's "same as previous" tag.
const SAME_V1: u64 = 1;

/// Format 2's value tags.
const ABSENT: u64 = 0;
const HEX: u64 = 1;
const NETWORK: u64 = 2;
const TEXT: u64 = 3;

const COOKIES: [CookieOutcome; 3] = [
    CookieOutcome::Set,
    CookieOutcome::KeptExisting,
    CookieOutcome::NotSet,
];

/// One field of a record as it is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    Text(&'a str),
    Hash([u8; IP_HASH_BYTES]),
    Network(IpNet),
}

fn slots<'a>(r: &ClickRow<'a>) -> [Option<Value<'a>>; SLOTS] {
    let mut out = [None; SLOTS];
    let (hash, network) = match r.visitor {
        StoredVisitor::Pseudonym { hash, network } => (Value::Hash(hash), Value::Network(network)),
        StoredVisitor::Text { hash, network } => (Value::Text(hash), Value::Text(network)),
    };
    out[..6].copy_from_slice(&[
        Some(Value::Text(r.link)),
        Some(Value::Text(r.partner_id)),
        Some(Value::Text(r.program)),
        Some(Value::Text(r.method)),
        Some(hash),
        Some(network),
    ]);
    for (slot, field) in out[6..6 + EVIDENCE_FIELDS].iter_mut().zip(r.evidence) {
        *slot = field.map(Value::Text);
    }
    out[SLOTS - 2] = r.prior_token_error.map(Value::Text);
    out[SLOTS - 1] = Some(Value::Text(r.verdict));
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: Option<Value<'_>>) {
    match v {
        None => put_varint(out, ABSENT),
        Some(Value::Text(s)) => {
            put_varint(out, s.len() as u64 + TEXT);
            out.extend_from_slice(s.as_bytes());
        }
        Some(Value::Hash(h)) => {
            put_varint(out, HEX);
            put_varint(out, h.len() as u64);
            out.extend_from_slice(&h);
        }
        Some(Value::Network(n)) => {
            put_varint(out, NETWORK);
            out.push(n.prefix());
            match n.addr() {
                IpAddr::V4(a) => {
                    out.push(4);
                    out.extend_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    out.push(6);
                    out.extend_from_slice(&a.octets());
                }
            }
        }
    }
}

/// A record's cookie outcome and flags (the same in both formats).
fn put_cookie_and_flags(out: &mut Vec<u8>, cookie: CookieOutcome, flags: &[Flag]) {
    out.push(COOKIES.iter().position(|c| *c == cookie).unwrap_or(0) as u8);
    put_varint(out, flags.len() as u64);
    for f in flags {
        out.push(Reason::ALL.iter().position(|x| *x == f.reason).unwrap_or(0) as u8);
        put_str(out, &f.evidence);
    }
}

/// Builds one format-2 chunk value from records in id order.
pub(super) struct ChunkEncoder<'a> {
    buf: Vec<u8>,
    prev: [Option<Value<'a>>; SLOTS],
    prev_hi: u64,
    records: usize,
}

impl<'a> ChunkEncoder<'a> {
    pub(super) fn new() -> Self {
        let mut buf = Vec::with_capacity(8 << 10);
        buf.push(FORMAT_2);
        Self {
            buf,
            prev: [None; SLOTS],
            prev_hi: 0,
            records: 0,
        }
    }

    /// Encoded size so far.
    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Records so far.
    pub(super) fn records(&self) -> usize {
        self.records
    }

    pub(super) fn push(&mut self, r: &ClickRow<'a>) {
        let values = slots(r);
        let mut changed = 0u32;
        for (i, (prev, v)) in self.prev.iter().zip(&values).enumerate() {
            if prev != v {
                changed |= 1 << i;
            }
        }
        let out = &mut self.buf;
        let hi = (r.id.0 >> 64) as u64;
        let delta = hi.wrapping_sub(self.prev_hi) as i64;
        put_varint(out, ((delta << 1) ^ (delta >> 63)) as u64);
        out.extend_from_slice(&(r.id.0 as u64).to_be_bytes());
        put_varint(out, changed.into());
        for (i, v) in values.iter().enumerate() {
            if changed & (1 << i) != 0 {
                put_value(out, *v);
            }
        }
        put_cookie_and_flags(out, r.cookie, r.flags);
        self.prev = values;
        self.prev_hi = hi;
        self.records += 1;
    }

    pub(super) fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads a chunk (without its format byte).
struct Reader<'b> {
    bytes: &'b [u8],
}

impl<'b> Reader<'b> {
    fn byte(&mut self) -> Result<u8, String> {
        let (&b, rest) = self
            .bytes
            .split_first()
            .ok_or("chunk ends inside a record")?;
        self.bytes = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 64 bits".into())
    }

    fn take(&mut self, n: usize) -> Result<&'b [u8], String> {
        if n > self.bytes.len() {
            return Err(format!("a {n}-byte field runs past the chunk"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn text(&mut self, n: usize) -> Result<String, String> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "text is not UTF-8".into())
    }

    /// A format-2 value, as the text a record shows.
    fn value(&mut self) -> Result<Option<String>, String> {
        Ok(match self.varint()? {
            ABSENT => None,
            HEX => {
                let n = usize::try_from(self.varint()?).map_err(|_| "hex field too long")?;
                let mut s = String::with_capacity(2 * n.min(64));
                crate::net::push_hex(self.take(n)?, &mut s);
                Some(s)
            }
            NETWORK => {
                let prefix = self.byte()?;
                let addr = match self.byte()? {
                    4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
                    6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
                    f => return Err(format!("unknown address family {f}")),
                };
                let net = IpNet::new(addr, prefix).ok_or("network prefix out of range")?;
                Some(net.to_string())
            }
            n => Some(self.text(usize::try_from(n - TEXT).map_err(|_| "text too long")?)?),
        })
    }

    /// A format-2 record's id (its high half relative to `prev_hi`, which
    /// moves to this one's) and the mask of the slots it changes.
    fn record_head(&mut self, prev_hi: &mut u64) -> Result<(ClickId, u64), String> {
        let zz = self.varint()?;
        let delta = (zz >> 1) as i64 ^ -((zz & 1) as i64);
        let hi = prev_hi.wrapping_add(delta as u64);
        let lo = u64::from_be_bytes(self.array::<8>()?);
        let id = ClickId((u128::from(hi) << 64) | u128::from(lo));
        *prev_hi = hi;
        let changed = self.varint()?;
        if changed >> SLOTS != 0 {
            return Err(format!("record {id} changes a field beyond the {SLOTS}"));
        }
        Ok((id, changed))
    }

    /// A format-2 value borrowed from the chunk when it is text; `None`
    /// for an absent, hex or network value.
    fn borrowed_value(&mut self) -> Result<Option<&'b str>, String> {
        Ok(match self.varint()? {
            ABSENT => None,
            HEX => {
                let n = usize::try_from(self.varint()?).map_err(|_| "hex field too long")?;
                self.take(n)?;
                None
            }
            NETWORK => {
                self.byte()?;
                match self.byte()? {
                    4 => self.take(4)?,
                    6 => self.take(16)?,
                    f => return Err(format!("unknown address family {f}")),
                };
                None
            }
            n => {
                let n = usize::try_from(n - TEXT).map_err(|_| "text too long")?;
                Some(std::str::from_utf8(self.take(n)?).map_err(|_| "text is not UTF-8")?)
            }
        })
    }

    /// A record's cookie outcome and flags (the same in both formats).
    fn cookie_and_flags(&mut self) -> Result<(CookieOutcome, Vec<Flag>), String> {
        let cookie = *COOKIES
            .get(self.byte()? as usize)
            .ok_or("unknown cookie outcome")?;
        let n_flags = self.varint()?;
        let mut flags = Vec::new();
        for _ in 0..n_flags {
            let reason = *Reason::ALL
                .get(self.byte()? as usize)
                .ok_or("unknown flag reason")?;
            let len = self.varint()? as usize;
            flags.push(Flag {
                reason,
                evidence: self.text(len)?,
            });
        }
        Ok((cookie, flags))
    }
}

/// The fields of a click its rollups need, borrowed: from the chunk itself
/// for format 2 (no record is built, no text copied), from a decoded
/// record otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Brief<'a> {
    /// When the click was served, in ms since 1970.
    pub at_ms: i64,
    pub link: &'a str,
    pub partner: &'a str,
    pub program: &'a str,
    pub user_agent: Option<&'a str>,
    pub referer: Option<&'a str>,
    pub verdict: &'a str,
    /// Bit `i` set: the click has a flag for `Reason::ALL[i]`.
    pub reasons: u8,
}

impl<'a> From<&'a ClickRecord> for Brief<'a> {
    fn from(c: &'a ClickRecord) -> Self {
        Brief {
            at_ms: c.at.timestamp_millis(),
            link: &c.link,
            partner: &c.partner_id,
            program: &c.program,
            user_agent: c.user_agent.as_deref(),
            referer: c.referer.as_deref(),
            verdict: &c.verdict,
            reasons: reason_bits(c.flags.iter().map(|f| f.reason)),
        }
    }
}

fn reason_bits(reasons: impl Iterator<Item = Reason>) -> u8 {
    reasons.fold(0, |bits, r| {
        bits | Reason::ALL
            .iter()
            .position(|x| *x == r)
            .map_or(0, |i| 1 << i)
    })
}

/// Calls `f` with each record of a binary chunk value, in order, as a
/// [`Brief`].
pub(super) fn for_each_brief(value: &[u8], mut f: impl FnMut(Brief<'_>)) -> Result<(), String> {
    let Some((&FORMAT_2, body)) = value.split_first() else {
        for c in decode(value)? {
            f(Brief::from(&c));
        }
        return Ok(());
    };
    let mut r = Reader { bytes: body };
    // Text slots as borrowed slices; a hex or network value (never in
    // the slots a brief reads) is skipped.
    let mut prev: [Option<&str>; SLOTS] = [None; SLOTS];
    let mut prev_hi = 0u64;
    while !r.bytes.is_empty() {
        let (id, changed) = r.record_head(&mut prev_hi)?;
        for (i, slot) in prev.iter_mut().enumerate() {
            if changed & (1 << i) != 0 {
                *slot = r.borrowed_value()?;
            }
        }
        r.byte()?; // the cookie outcome
        let mut reasons = 0u8;
        for _ in 0..r.varint()? {
            let i = r.byte()? as usize;
            if i >= Reason::ALL.len() {
                return Err("unknown flag reason".into());
            }
            reasons |= 1 << i;
            let len = usize::try_from(r.varint()?).map_err(|_| "evidence too long")?;
            r.take(len)?;
        }
        let required =
            |i: usize| prev[i].ok_or_else(|| format!("record {id} lacks required field {i}"));
        f(Brief {
            at_ms: id.timestamp_ms(),
            link: required(0)?,
            partner: required(1)?,
            program: required(2)?,
            user_agent: prev[6],
            referer: prev[7],
            verdict: required(25)?,
            reasons,
        });
    }
    Ok(())
}

/// Decodes a binary chunk value (format 1 or 2).
pub(super) fn decode(value: &[u8]) -> Result<Vec<ClickRecord>, String> {
    match value.split_first() {
        Some((&FORMAT_2, body)) => decode_v2(body),
        Some((&FORMAT_1, body)) => decode_v1(body),
        _ => Err("not a binary chunk of a known format".into()),
    }
}

fn decode_v2(body: &[u8]) -> Result<Vec<ClickRecord>, String> {
    let mut r = Reader { bytes: body };
    let mut prev: [Option<String>; SLOTS] = Default::default();
    let mut prev_hi = 0u64;
    let mut out = Vec::new();
    while !r.bytes.is_empty() {
        let (id, changed) = r.record_head(&mut prev_hi)?;
        for (i, slot) in prev.iter_mut().enumerate() {
            if changed & (1 << i) != 0 {
                *slot = r.value()?;
            }
        }
        let (cookie, flags) = r.cookie_and_flags()?;
        out.push(record(id, &prev, cookie, flags)?);
    }
    Ok(out)
}

fn decode_v1(body: &[u8]) -> Result<Vec<ClickRecord>, String> {
    let mut r = Reader { bytes: body };
    let mut prev: [Option<String>; SLOTS] = Default::default();
    let mut out = Vec::new();
    while !r.bytes.is_empty() {
        let id = ClickId::from_bytes(r.array::<16>()?);
        for slot in prev.iter_mut() {
            match r.varint()? {
                ABSENT => *slot = None,
                SAME_V1 if slot.is_some() => {}
                SAME_V1 => return Err("\"same as previous\" with no previous value".into()),
                n => *slot = Some(r.text((n - 2) as usize)?),
            }
        }
        let (cookie, flags) = r.cookie_and_flags()?;
        out.push(record(id, &prev, cookie, flags)?);
    }
    Ok(out)
}

/// A record from its decoded fields.
fn record(
    id: ClickId,
    fields: &[Option<String>; SLOTS],
    cookie: CookieOutcome,
    flags: Vec<Flag>,
) -> Result<ClickRecord, String> {
    let required = |i: usize| {
        fields[i]
            .clone()
            .ok_or_else(|| format!("record {id} lacks required field {i}"))
    };
    let s = |i: usize| fields[i].clone();
    Ok(ClickRecord {
        id,
        at: crate::clock::ms_to_datetime(id.timestamp_ms()),
        link: required(0)?,
        partner_id: required(1)?,
        program: required(2)?,
        method: required(3)?,
        ip_hash: required(4)?,
        ip_prefix: required(5)?,
        user_agent: s(6),
        referer: s(7),
        query: s(8),
        headers: ClickHeaders {
            accept: s(9),
            accept_language: s(10),
            accept_encoding: s(11),
            sec_fetch_site: s(12),
            sec_fetch_mode: s(13),
            sec_fetch_dest: s(14),
            sec_fetch_user: s(15),
            sec_ch_ua: s(16),
            sec_ch_ua_mobile: s(17),
            sec_ch_ua_platform: s(18),
            sec_purpose: s(19),
            purpose: s(20),
            dnt: s(21),
            upgrade_insecure_requests: s(22),
            via: s(23),
        },
        cookie,
        prior_token_error: s(24),
        verdict: required(25)?,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u128, ua: Option<&str>) -> ClickRecord {
        let id = ClickId((1_790_000_000_000u128 << 80) | i);
        ClickRecord {
            id,
            at: crate::clock::ms_to_datetime(id.timestamp_ms()),
            link: format!("lt-{}", i % 3),
            partner_id: "p_1".into(),
            program: "krispcall".into(),
            method: "GET".into(),
            ip_hash: format!("{i:032x}"),
            ip_prefix: "203.0.113.0/24".into(),
            user_agent: ua.map(String::from),
            referer: None,
            query: Some(String::new()),
            headers: ClickHeaders {
                accept: Some("text/html".into()),
                via: i.is_multiple_of(2).then(|| "1.1 proxy ünï".into()),
                ..ClickHeaders::default()
            },
            cookie: COOKIES[i as usize % 3],
            prior_token_error: None,
            verdict: if i.is_multiple_of(4) {
                "flagged"
            } else {
                "valid"
            }
            .into(),
            flags: (0..i % 3)
                .map(|k| Flag {
                    reason: Reason::ALL[k as usize],
                    evidence: format!("header {k}"),
                })
                .collect(),
        }
    }

    #[test]
    fn round_trips_with_repeats_absences_and_empty_strings() {
        let records: Vec<_> = (0..50)
            .map(|i| {
                record(
                    i,
                    if i % 5 == 0 {
                        None
                    } else {
                        Some("Mozilla/5.0")
                    },
                )
            })
            .collect();
        let mut enc = ChunkEncoder::new();
        for r in &records {
            enc.push(&r.row());
        }
        assert_eq!(enc.records(), 50);
        let bytes = enc.finish();
        assert_eq!(decode(&bytes).unwrap(), records);
    }

    /// Format 1 as the writer wrote it before format 2: what old data
    /// dirs hold.
    fn encode_v1(records: &[ClickRecord]) -> Vec<u8> {
        let mut out = vec![FORMAT_1];
        let mut prev = [None; SLOTS];
        for r in records {
            out.extend_from_slice(&r.id.to_bytes());
            // A record's visitor is text: every slot is text or absent.
            let fields = slots(&r.row()).map(|v| {
                v.map(|v| match v {
                    Value::Text(s) => s,
                    other => unreachable!("a record's field is text, not {other:?}"),
                })
            });
            for (p, f) in prev.iter_mut().zip(fields) {
                match f {
                    None => put_varint(&mut out, ABSENT),
                    Some(s) if *p == Some(s) => put_varint(&mut out, SAME_V1),
                    Some(s) => {
                        put_varint(&mut out, s.len() as u64 + 2);
                        out.extend_from_slice(s.as_bytes());
                    }
                }
                *p = f;
            }
            put_cookie_and_flags(&mut out, r.cookie, &r.flags);
        }
        out
    }

    #[test]
    fn format_1_chunks_still_decode() {
        let records: Vec<_> = (0..20).map(|i| record(i, Some("Mozilla/5.0"))).collect();
        assert_eq!(decode(&encode_v1(&records)).unwrap(), records);
    }

    /// Rows as the click writer builds them: the visitor as bytes.
    fn pseudonymous(records: &[ClickRecord], visitors: &[(IpAddr, u8)]) -> Vec<u8> {
        let mut enc = ChunkEncoder::new();
        for (r, &(ip, bits)) in records.iter().zip(visitors.iter().cycle()) {
            let mut row = r.row();
            let mut hash = [0u8; IP_HASH_BYTES];
            hash.copy_from_slice(&r.id.to_bytes()[..IP_HASH_BYTES]);
            row.visitor = StoredVisitor::Pseudonym {
                hash,
                network: IpNet::new(ip, bits).unwrap(),
            };
            enc.push(&row);
        }
        enc.finish()
    }

    #[test]
    fn pseudonyms_are_stored_as_bytes_and_read_as_text() {
        let visitors: Vec<(IpAddr, u8)> = vec![
            ("203.0.113.77".parse().unwrap(), 24),
            ("203.0.113.77".parse().unwrap(), 24),
            ("2001:db8:1:2:3:4:5:6".parse().unwrap(), 48),
            ("10.1.2.3".parse().unwrap(), 0),
            ("2001:db8::1".parse().unwrap(), 128),
        ];
        let mut records: Vec<_> = (0..12).map(|i| record(i, Some("Mozilla/5.0"))).collect();
        for (r, (ip, bits)) in records.iter_mut().zip(visitors.iter().cycle()) {
            let mut hex = String::new();
            crate::net::push_hex(&r.id.to_bytes()[..IP_HASH_BYTES], &mut hex);
            r.ip_hash = hex;
            r.ip_prefix = IpNet::new(*ip, *bits).unwrap().to_string();
        }
        assert_eq!(records[0].ip_prefix, "203.0.113.0/24");
        assert_eq!(records[2].ip_prefix, "2001:db8:1::/48");
        assert_eq!(decode(&pseudonymous(&records, &visitors)).unwrap(), records);
    }

    #[test]
    fn briefs_read_without_decoding_match_the_decoded_records() {
        let visitors: Vec<(IpAddr, u8)> = vec![
            ("203.0.113.77".parse().unwrap(), 24),
            ("2001:db8:1:2:3:4:5:6".parse().unwrap(), 48),
        ];
        let mut records: Vec<_> = (0..30)
            .map(|i| record(i, (i % 4 != 0).then_some("Mozilla/5.0")))
            .collect();
        for (i, r) in records.iter_mut().enumerate() {
            r.referer = (i % 3 == 0).then(|| format!("https://blog{i}.example/"));
        }
        for chunk in [pseudonymous(&records, &visitors), encode_v1(&records)] {
            let mut briefs = Vec::new();
            for_each_brief(&chunk, |b| briefs.push(format!("{b:?}"))).unwrap();
            let decoded = decode(&chunk).unwrap();
            let expected: Vec<_> = decoded
                .iter()
                .map(|c| format!("{:?}", Brief::from(c)))
                .collect();
            assert_eq!(briefs.len(), 30);
            assert_eq!(briefs, expected);
        }
        // Flags as bits, in `Reason::ALL` order.
        let b = Brief::from(&records[2]);
        assert_eq!(b.reasons, 0b11);
        // A chunk cut short is an error, as for a full decode.
        let whole = pseudonymous(&records, &visitors);
        assert!(for_each_brief(&whole[..whole.len() - 3], |_| {}).is_err());
    }

    #[test]
    fn a_typical_record_is_its_id_link_and_visitor() {
        // Clicks that differ only in link, id and visitor, as most do.
        let ids: Vec<_> = (0..100)
            .map(|i| {
                let mut r = record(0, Some("Mozilla/5.0 (X11; Linux x86_64; rv:133.0)"));
                r.id = ClickId(((1_790_000_000_000u128 << 16 | i) << 64) | 0x5eed ^ i);
                r.link = format!("lt-{:07}", i * 7919 % 10_000);
                r.verdict = "valid".into();
                r.cookie = CookieOutcome::Set;
                r.flags.clear();
                r.headers.via = None;
                r
            })
            .collect();
        let v4: Vec<(IpAddr, u8)> = (0..100u8)
            .map(|i| (IpAddr::from([100, 64, i, 1]), 24))
            .collect();
        let bytes = pseudonymous(&ids, &v4);
        let first_and_format = pseudonymous(&ids[..1], &v4[..1]).len();
        let per_record = (bytes.len() - first_and_format) as f64 / 99.0;
        // id delta 1 + low half 8 + mask 1 + link 1+10 + hash 2+16 +
        // network 1+6 + cookie 1 + flags 1 = 48.
        assert!(per_record <= 48.0, "{per_record} bytes per record");
        let v1 = encode_v1(&decode(&bytes).unwrap());
        assert!(
            bytes.len() * 2 < v1.len() + 200,
            "{} vs {} bytes in format 1",
            bytes.len(),
            v1.len()
        );
    }

    #[test]
    fn truncated_or_garbled_chunks_are_errors_not_panics() {
        let records: Vec<_> = (0..4).map(|i| record(i, Some("UA"))).collect();
        let mut enc = ChunkEncoder::new();
        for r in &records {
            enc.push(&r.row());
        }
        let bytes = enc.finish();
        for cut in 1..bytes.len() {
            // Any prefix either decodes to fewer records or fails cleanly.
            if let Ok(got) = decode(&bytes[..cut]) {
                assert!(got.len() < records.len());
            }
        }
        let v1 = encode_v1(&records);
        for cut in 1..v1.len() {
            if let Ok(got) = decode(&v1[..cut]) {
                assert!(got.len() < records.len());
            }
        }
        let mut bad = v1.clone();
        bad[17] = 1; // format 1: "same as previous" in the first record
        assert!(decode(&bad).is_err());
        // Format 2: id 0, then a mask that changes nothing (the first
        // record lacks its link) / a field beyond the last / an unknown
        // address family.
        let head = [FORMAT_2, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let nothing = [&head[..], &[0, 0, 0]].concat();
        assert!(decode(&nothing)
            .unwrap_err()
            .contains("lacks required field 0"));
        let beyond = [&head[..], &[0x80, 0x80, 0x80, 0x80, 0x01, 0, 0]].concat();
        assert!(decode(&beyond).unwrap_err().contains("beyond"));
        let family = [&head[..], &[1 << 5, NETWORK as u8, 24, 5, 1, 2, 3, 4, 0, 0]].concat();
        assert!(decode(&family).unwrap_err().contains("family"));
        assert!(decode(b"[]").is_err());
        assert!(decode(&[3]).is_err());
    }
}
