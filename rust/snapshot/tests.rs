//! Tests of the format on bytes: what a tamperer can edit, and older versions. Tests of
//! tables tampered with before they were written are the table's (`table::tests`).

use super::*;
use crate::error::Error;
use crate::event;
use crate::table::{Config, Table};

pub(crate) const CREATED: &str = r#"{"event_id":"e1","event_type":"subscription.created","timestamp":"2025-11-28T10:00:00Z","data":{"subscription_id":"sub_1","customer_id":"cus_1","plan_id":"plan_a","plan_name":"Pro","total_budget":100,"currency":"USD","period_start":"2025-11-28T10:00:00Z","period_end":"2025-12-28T10:00:00Z"}}"#;

/// A table with one row, spent 5.
pub(crate) fn table(config: Config) -> Table {
    let t = Table::new(config);
    t.set_clock(Some(
        event::parse_time("now", "2025-12-01T00:00:00Z").unwrap(),
    ));
    t.apply(CREATED.as_bytes()).unwrap();
    assert!(t.try_spend("cus_1", 5));
    t
}

/// What a tamperer does after editing the bytes: recompute the checksum.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    let body = bytes.len() - CHECKSUM_LEN;
    let sum = xxhash_rust::xxh3::xxh3_64(&bytes[..body]);
    bytes[body..].copy_from_slice(&sum.to_le_bytes());
    bytes
}

fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    [&bytes[..at], to, &bytes[at + from.len()..]].concat()
}

pub(crate) fn assert_rejected(bytes: &[u8], what: &str) {
    assert!(
        matches!(decode(bytes), Err(Error::InvalidSnapshot(_))),
        "{what} was restored"
    );
}

#[test]
fn tampered_bytes_with_a_recomputed_checksum_are_rejected() {
    let data = encode(&table(Config::default()), 7);
    assert!(decode(&reseal(data.clone())).is_ok());
    let mut negative_grace = data.clone();
    negative_grace[12..20].copy_from_slice(&(-1i64).to_le_bytes());
    assert_rejected(&reseal(negative_grace), "a negative grace period");
    let mut huge_grace = data.clone();
    huge_grace[12..20].copy_from_slice(&i64::MAX.to_le_bytes());
    assert_rejected(&reseal(huge_grace), "a grace period of 292,000 years");
    for (from, to) in [
        (&b"cus_1"[..], &b"cus\x07x"[..]),
        (b"cus_1", b"     "),
        (b"sub_1", b"sub\x001"),
        (b"USD", b"usd"),
        (b"Pro", b"\xff\xfe\xfd"),
    ] {
        let what = format!(
            "{} instead of {}",
            String::from_utf8_lossy(to),
            String::from_utf8_lossy(from)
        );
        assert_rejected(&reseal(replace(&data, from, to)), &what);
    }
}

/// The snapshot `encode` writes, as version 2 wrote it: without the routing layers
/// (two empty counts at the end of the body). Resealed.
fn as_version_2(v3: &[u8]) -> Vec<u8> {
    let body = &v3[..v3.len() - CHECKSUM_LEN];
    assert_eq!(&body[body.len() - 16..], &[0; 16], "no routing policies");
    let mut v2 = [&body[..body.len() - 16], &[0; 8]].concat();
    v2[8..12].copy_from_slice(&2u32.to_le_bytes());
    reseal(v2)
}

#[test]
fn version_1_and_2_snapshots_still_restore() {
    let t = table(Config {
        max_parked_bytes: 10,
        ..Config::default()
    });
    let v2 = as_version_2(&encode(&t, 3));
    let restored = decode(&v2).unwrap();
    assert_eq!(restored.budget("cus_1"), t.budget("cus_1"));
    assert!(restored.routing().policies().is_empty());
    let body = &v2[..v2.len() - CHECKSUM_LEN];
    // Version 1 had no max_parked_bytes (bytes 29..37 of version 2).
    let v1 = [
        &body[..8],
        &1u32.to_le_bytes()[..],
        &body[12..29],
        &body[37..],
        &[0; 8],
    ]
    .concat();
    let restored = decode(&reseal(v1)).unwrap();
    assert_eq!(
        restored.config().max_parked_bytes,
        Config::default().max_parked_bytes
    );
    assert_eq!(restored.budget("cus_1"), t.budget("cus_1"));
    assert_eq!(restored.cursor(), 3);
    let mut v4 = encode(&t, 3);
    v4[8..12].copy_from_slice(&4u32.to_le_bytes());
    assert!(
        matches!(decode(&reseal(v4)), Err(Error::InvalidSnapshot(m)) if m.contains("version 4"))
    );
}

const POLICY: &str = r#"{"event_id":"p1","event_type":"routing_policy.upserted","timestamp":"2025-11-28T10:00:00Z","data":{"id":"p","priority":1,"match_expression":"request.model == 'x'","strategy":"failover","targets":[{"name":"a"}]}}"#;

#[test]
fn routing_policies_and_tombstones_round_trip() {
    let t = table(Config::default());
    t.apply(POLICY.as_bytes()).unwrap();
    let gone = r#"{"event_id":"p2","event_type":"routing_policy.deleted","timestamp":"2025-11-28T11:00:00Z","data":{"policy_id":"q"}}"#;
    t.apply(gone.as_bytes()).unwrap();
    let data = encode(&t, 1);
    let restored = decode(&data).unwrap();
    let ids = |t: &Table| -> Vec<String> {
        t.routing()
            .policies()
            .iter()
            .map(|p| p.id().to_string())
            .collect()
    };
    assert_eq!(ids(&restored), ["p"]);
    assert_eq!(restored.routing().export().1.len(), 2, "the tombstone of q");
    // A tampered expression is refused, whatever the checksum says.
    assert_rejected(
        &reseal(replace(
            &data,
            b"request.model == 'x'",
            b"request.model == 'x",
        )),
        "a policy that does not compile",
    );
}
