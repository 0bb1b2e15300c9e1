//! The binary encoding of a click chunk (format 1).
//!
//! A chunk value is the byte `1` followed by records. A record is its click
//! id (16 bytes, big-endian), then [`SLOTS`] text fields, then the cookie
//! outcome (one byte) and the flags (a count, then a reason byte and an
//! evidence text each). A text field is a varint tag: `0` absent, `1` the
//! same as the previous record's field in the chunk, `n + 2` a string of
//! `n` bytes that follows. Lengths and counts are LEB128 varints. The
//! record's time is not stored: it is the click id's timestamp.
//!
//! Links, partners, user agents and most evidence headers repeat from one
//! click to the next, so the "same as previous" tag makes a typical record
//! about a hundred bytes, written and read without a field name or an
//! escape. Chunks written before this format are JSON arrays (they start
//! with `[`) and still decode.

use crate::fraud::{Flag, Reason};
use crate::id::ClickId;
use crate::model::{ClickHeaders, ClickRecord, ClickRow, CookieOutcome, EVIDENCE_FIELDS};

/// The format byte that starts a binary chunk.
pub(super) const FORMAT_1: u8 = 1;

/// Text fields per record: link, partner, program, method, IP hash, IP
/// prefix, the evidence fields (user agent, referer, query, headers), the
/// refused cookie's error and the verdict.
const SLOTS: usize = 6 + EVIDENCE_FIELDS + 2;

const ABSENT: u64 = 0;
const SAME: u64 = 1;

const COOKIES: [CookieOutcome; 3] = [
    CookieOutcome::Set,
    CookieOutcome::KeptExisting,
    CookieOutcome::NotSet,
];

fn slots<'a>(r: &ClickRow<'a>) -> [Option<&'a str>; SLOTS] {
    let mut out = [None; SLOTS];
    out[..6].copy_from_slice(&[
        Some(r.link),
        Some(r.partner_id),
        Some(r.program),
        Some(r.method),
        Some(r.ip_hash),
        Some(r.ip_prefix),
    ]);
    out[6..6 + EVIDENCE_FIELDS].copy_from_slice(&r.evidence);
    out[SLOTS - 2] = r.prior_token_error;
    out[SLOTS - 1] = Some(r.verdict);
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

/// Builds one chunk value from records in id order.
pub(super) struct ChunkEncoder<'a> {
    buf: Vec<u8>,
    prev: [Option<&'a str>; SLOTS],
    records: usize,
}

impl<'a> ChunkEncoder<'a> {
    pub(super) fn new() -> Self {
        let mut buf = Vec::with_capacity(8 << 10);
        buf.push(FORMAT_1);
        Self {
            buf,
            prev: [None; SLOTS],
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
        let out = &mut self.buf;
        out.extend_from_slice(&r.id.to_bytes());
        for (prev, field) in self.prev.iter_mut().zip(slots(r)) {
            match field {
                None => put_varint(out, ABSENT),
                Some(s) if *prev == Some(s) => put_varint(out, SAME),
                Some(s) => {
                    put_varint(out, s.len() as u64 + 2);
                    out.extend_from_slice(s.as_bytes());
                }
            }
            *prev = field;
        }
        out.push(COOKIES.iter().position(|c| *c == r.cookie).unwrap_or(0) as u8);
        put_varint(out, r.flags.len() as u64);
        for f in r.flags {
            out.push(Reason::ALL.iter().position(|x| *x == f.reason).unwrap_or(0) as u8);
            put_str(out, &f.evidence);
        }
        self.records += 1;
    }

    pub(super) fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads a format-1 chunk (without its format byte).
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

    fn text(&mut self, n: usize) -> Result<String, String> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "text is not UTF-8".into())
    }
}

/// Decodes a format-1 chunk value.
pub(super) fn decode(value: &[u8]) -> Result<Vec<ClickRecord>, String> {
    let Some((&FORMAT_1, body)) = value.split_first() else {
        return Err("not a format-1 chunk".into());
    };
    let mut r = Reader { bytes: body };
    let mut prev: [Option<String>; SLOTS] = Default::default();
    let mut out = Vec::new();
    while !r.bytes.is_empty() {
        let id = ClickId::from_bytes(r.take(16)?.try_into().expect("16 bytes"));
        for slot in prev.iter_mut() {
            match r.varint()? {
                ABSENT => *slot = None,
                SAME if slot.is_some() => {}
                SAME => return Err("\"same as previous\" with no previous value".into()),
                n => *slot = Some(r.text((n - 2) as usize)?),
            }
        }
        let cookie = *COOKIES
            .get(r.byte()? as usize)
            .ok_or("unknown cookie outcome")?;
        let n_flags = r.varint()?;
        let mut flags = Vec::new();
        for _ in 0..n_flags {
            let reason = *Reason::ALL
                .get(r.byte()? as usize)
                .ok_or("unknown flag reason")?;
            let len = r.varint()? as usize;
            flags.push(Flag {
                reason,
                evidence: r.text(len)?,
            });
        }
        let required = |i: usize| {
            prev[i]
                .clone()
                .ok_or_else(|| format!("record {id} lacks required field {i}"))
        };
        let at = crate::clock::ms_to_datetime(id.timestamp_ms());
        let s = |i: usize| prev[i].clone();
        out.push(ClickRecord {
            id,
            at,
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
        });
    }
    Ok(out)
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
        let mut bad = bytes.clone();
        bad[17] = 1; // "same as previous" in the first record
        assert!(decode(&bad).is_err());
        assert!(decode(b"[]").is_err());
    }
}
