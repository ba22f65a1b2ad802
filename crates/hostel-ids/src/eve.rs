//! Alerts as Suricata EVE JSON lines.

use std::time::Duration;

use serde_json::json;

use crate::engine::Alert;

/// `2026-12-07T16:40:18.123456+0000`, as Suricata writes it (UTC here).
pub fn timestamp(ts: Duration) -> String {
    let secs = ts.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}+0000",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ts.subsec_micros()
    )
}

/// Howard Hinnant's days-to-civil algorithm (no date crate needed for one format).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// An address as Suricata writes it: IPv6 with all eight groups in four hex digits
/// (`2001:0db8:0000:…`), so EVE consumers comparing with Suricata's output see the same text.
pub fn ip(a: std::net::IpAddr) -> String {
    match a {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let g = v6.segments();
            format!(
                "{:04x}:{:04x}:{:04x}:{:04x}:{:04x}:{:04x}:{:04x}:{:04x}",
                g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]
            )
        }
    }
}

/// One EVE `alert` record.
pub fn to_json(a: &Alert) -> serde_json::Value {
    let mut v = json!({
        "timestamp": timestamp(a.ts),
        "flow_id": a.flow_id,
        "event_type": "alert",
        "src_ip": ip(a.src),
        "src_port": a.src_port,
        "dest_ip": ip(a.dst),
        "dest_port": a.dst_port,
        "proto": a.proto,
        "alert": {
            "action": a.action,
            "gid": a.gid,
            "signature_id": a.sid,
            "rev": a.rev,
            "signature": a.signature,
            "category": a.category,
            "severity": a.severity,
        }
    });
    if let (Some((t, c)), Some(o)) = (a.icmp, v.as_object_mut()) {
        o.insert("icmp_type".into(), t.into());
        o.insert("icmp_code".into(), c.into());
        o.remove("src_port");
        o.remove("dest_port");
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipv6_in_suricatas_form() {
        let a: std::net::IpAddr = "2001:db8::1".parse().expect("v6");
        assert_eq!(super::ip(a), "2001:0db8:0000:0000:0000:0000:0000:0001");
        let b: std::net::IpAddr = "10.0.0.1".parse().expect("v4");
        assert_eq!(super::ip(b), "10.0.0.1");
    }

    #[test]
    fn timestamps() {
        let t = super::timestamp(std::time::Duration::new(1_796_661_618, 123_456_000));
        assert_eq!(t, "2026-12-07T16:40:18.123456+0000");
        assert_eq!(
            super::timestamp(std::time::Duration::ZERO),
            "1970-01-01T00:00:00.000000+0000"
        );
    }
}
