//! Issue 16, item 7: a tenant's security appliance, live through the daemon with busybox
//! guests. The network `lan` is attached to the external network (a veth whose far end is a
//! namespace playing the internet, with two far hosts). The `fw` VM is a Linux router
//! (`ip_forward`, no ICMP redirects) that blackholes one far host; `web` probes both far
//! hosts every second and knows nothing of `fw` (its default route stays the gateway).
//!
//! - before `fw` is the appliance, `web` reaches both far hosts;
//! - `network appliance lan fw`: `web`'s traffic goes through `fw`: the host `fw` drops is
//!   unreachable, the other still answers (so the packets crossed `fw` and came back);
//! - `fw` stopped: `web` reaches neither (fail closed) and `network show` says why;
//! - `network appliance lan --none`: straight out again.
//!
//! Skipped without root, `ip` or the guest.

mod common;

use common::internet::{snat_lan, Internet};
use common::{boot_slots, daemon_with_guests, poll, DaemonCli};
use hostel_api::NetworkView;
use hostel_testkit::{is_root, run_arg, which, LineWatcher, BOOT_TIMEOUT};
use std::time::Instant;

/// The far host the appliance lets through, and the one it drops.
const FAR: &str = "198.51.100.7";
const FAR_DROPPED: &str = "198.51.100.8";

/// The appliance: routes between the network and the gateway (one NIC: what comes in from
/// `web` goes back out to the gateway, and the reverse), drops what is for FAR_DROPPED.
fn appliance_script() -> String {
    format!(
        "echo 1 > /proc/sys/net/ipv4/ip_forward; \
         for f in /proc/sys/net/ipv4/conf/*/send_redirects; do echo 0 > $f; done; \
         ip route add blackhole {FAR_DROPPED}/32; echo FORWARDING; sleep 3600"
    )
}

/// The VM behind it: every second one probe to each far host, printed with the answer
/// (empty: none; `timeout` bounds a connection whose packets vanish).
fn web_script() -> String {
    format!(
        "i=0; while true; do i=$((i+1)); \
         a=$(echo A$i | timeout 4 nc -w 2 {FAR} 8080); echo \"A $i [$a]\"; \
         b=$(echo B$i | timeout 4 nc -w 2 {FAR_DROPPED} 8080); echo \"B $i [$b]\"; \
         sleep 1; done"
    )
}

/// Rounds of `web`'s probes: (round, far host A answered, far host B answered).
struct Probes {
    w: LineWatcher,
    last: u64,
}

impl Probes {
    fn next(&mut self) -> (u64, bool, bool) {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let mut a = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // "A 3 [ACK A3]" or "B 3 []"; kernel lines ("[   1.2] ...") do not parse.
            let line = self
                .w
                .wait_for("]", left)
                .unwrap_or_else(|| panic!("web stopped probing:\n{}", self.w.transcript()));
            let mut parts = line.trim().splitn(3, ' ');
            let (Some(kind), Some(n), Some(rest)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            if n <= self.last {
                continue;
            }
            let answered = rest.contains("ACK");
            match (kind, a) {
                ("A", _) => a = Some((n, answered)),
                ("B", Some((an, aa))) if an == n => {
                    self.last = n;
                    return (n, aa, answered);
                }
                _ => {}
            }
        }
    }

    /// Waits (to a deadline) for a round whose answers are `want`, then checks the next
    /// round agrees: a round under way during a change may see either.
    fn until(&mut self, what: &str, want: (bool, bool)) {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            let (_, a, b) = self.next();
            if (a, b) == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {what}:\n{}",
                self.w.transcript()
            );
        }
        let (n, a, b) = self.next();
        assert_eq!((a, b), want, "{what} did not hold in round {n}");
    }
}

#[test]
fn a_security_appliance_carries_the_networks_outside_traffic_and_fails_closed() {
    if !is_root() || !which("ip") {
        eprintln!("SKIPPED: needs root and `ip` (namespaces, veth, AF_PACKET)");
        return;
    }
    let Some(d) = daemon_with_guests("appliance") else {
        return;
    };
    let net = Internet::new("appl", "hp", &[FAR, FAR_DROPPED], None);
    net.set_external(&d, &[]);
    let t = d.tenant("acme", &[]);
    snat_lan(&t);
    // The firewall lets the replies in (outbound connections are tracked).
    net.serve(format!("{FAR}:8080"));
    net.serve(format!("{FAR_DROPPED}:8080"));

    // Bad input: named, nothing stored.
    t.cli(&["network", "appliance", "lan", "nosuchvm"])
        .refused("nosuchvm");

    let _slots = boot_slots(2);
    for (name, script) in [("fw", appliance_script()), ("web", web_script())] {
        let out = t.cli(&[
            "vm",
            "create",
            name,
            "--memory",
            "128M",
            "--network",
            "lan",
            "--cmdline",
            &run_arg(&script),
        ]);
        assert!(out.ok(), "vm create {name}: {out:?}");
    }
    let c = d.client(&t.token);
    let mut fw = LineWatcher::new(c.vms(None).console_follow("fw").unwrap());
    assert!(
        fw.wait_for("FORWARDING", BOOT_TIMEOUT).is_some(),
        "the appliance did not start forwarding: {}",
        fw.transcript()
    );
    let mut web = Probes {
        w: LineWatcher::new(c.vms(None).console_follow("web").unwrap()),
        last: 0,
    };
    web.until("both far hosts answering directly", (true, true));

    // The appliance: outside traffic through fw, whose blackhole now applies to web too.
    let n: NetworkView = t
        .cli(&["network", "appliance", "lan", "fw", "-o", "json"])
        .json();
    let a = n.appliance.expect("an appliance");
    assert_eq!(
        (a.vm.as_deref(), a.nic, a.state.as_str()),
        (Some("fw"), Some(0), "up")
    );
    web.until("only the host fw lets through", (true, false));
    let shown: NetworkView = t.cli(&["network", "show", "lan", "-o", "json"]).json();
    let fw_port = shown
        .ports
        .iter()
        .find(|p| p.vm == "fw")
        .expect("fw's port");
    assert!(
        fw_port.rx_packets > 0 && fw_port.tx_packets > 0,
        "fw's port carried nothing: {fw_port:?}"
    );

    // The appliance stopped: the network's outside traffic stops, and the API says why.
    let out = t.cli(&["vm", "stop", "fw", "--force"]);
    assert!(out.ok(), "{out:?}");
    web.until("no far host answering (fail closed)", (false, false));
    let shown: NetworkView = poll(
        "network show naming the stopped appliance",
        BOOT_TIMEOUT,
        || {
            let v: NetworkView = t.cli(&["network", "show", "lan", "-o", "json"]).json();
            v.appliance
                .as_ref()
                .is_some_and(|a| a.state.starts_with("down: ") && a.state.contains("fw"))
                .then_some(v)
        },
    );
    let drops = &shown
        .ports
        .iter()
        .find(|p| p.vm == "web")
        .expect("web's port")
        .drops;
    assert!(
        drops.get("appliance_down").copied().unwrap_or(0) > 0,
        "web's outside frames not counted as appliance_down: {drops:?}"
    );

    // No appliance: straight out again.
    let out = t.cli(&["network", "appliance", "lan", "--none"]);
    assert!(out.ok(), "{out:?}");
    web.until("both far hosts answering directly again", (true, true));
    let shown: NetworkView = t.cli(&["network", "show", "lan", "-o", "json"]).json();
    assert!(shown.appliance.is_none());
}
