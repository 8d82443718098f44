//! The metadata JetStream puts in a delivered message's reply subject.
//!
//! `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>`,
//! or the newer form with `<domain>.<account hash>` after `ACK` and a random token at
//! the end. Parsed once per consumed event, so it is kept out of Python.

/// Stream sequence, consumer sequence, timestamp (ns since the epoch) and pending count
/// of a message delivered by `consumer`; `None` for anything else (heartbeats, flow
/// control, another consumer's messages, malformed subjects).
pub fn ack_info(reply: &str, consumer: &str) -> Option<(u64, u64, i64, u64)> {
    let rest = reply.strip_prefix("$JS.ACK.")?;
    let mut tokens = [""; 10];
    let mut count = 0;
    for token in rest.split('.') {
        *tokens.get_mut(count)? = token;
        count += 1;
    }
    let at = match count {
        7 => 0,      // stream consumer delivered sseq cseq ns pending
        9 | 10 => 2, // domain hash stream consumer delivered sseq cseq ns pending [random]
        _ => return None,
    };
    if tokens[at + 1] != consumer {
        return None;
    }
    let number = |i: usize| tokens[at + i].parse::<u64>().ok();
    let ns = tokens[at + 5].parse::<i64>().ok()?;
    Some((number(3)?, number(4)?, ns, number(6)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_subject_forms() {
        let v1 = "$JS.ACK.BILLING_EVENTS.bg-1.1.42.7.1763718000123456789.3";
        assert_eq!(
            ack_info(v1, "bg-1"),
            Some((42, 7, 1_763_718_000_123_456_789, 3))
        );
        assert_eq!(ack_info(v1, "bg-2"), None, "another consumer's message");
        let v2 = "$JS.ACK.hub.ACCHASH.BILLING_EVENTS.bg-1.1.42.7.1763718000123456789.3.xyz";
        assert_eq!(
            ack_info(v2, "bg-1"),
            Some((42, 7, 1_763_718_000_123_456_789, 3))
        );
        for other in [
            "",
            "_INBOX.abc",
            "$JS.FC.x.y",
            "$JS.ACK.a.bg-1.1.x.7.1.3",
            "$JS.ACK.too.short",
        ] {
            assert_eq!(ack_info(other, "bg-1"), None, "{other}");
        }
    }
}
