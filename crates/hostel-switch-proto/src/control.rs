//! The local control socket: JSON lines over a Unix stream socket.
//!
//! Each request is one JSON object on one line; each gets exactly one response line.
//!
//! | request | response |
//! |---|---|
//! | `{"op":"add_network","network":{NetworkConfig}}` | `{"ok":true}` |
//! | `{"op":"remove_network","id":"net1"}` | `{"ok":true}` |
//! | `{"op":"add_port","port":{PortConfig}}` | `{"ok":true}` |
//! | `{"op":"remove_port","id":"vm1-0"}` | `{"ok":true}` |
//! | `{"op":"set_limits","id":"vm1-0","limits":{PortLimits}}` | `{"ok":true}` (guest stays connected) |
//! | `{"op":"set_policies","policies":[{PolicyConfig},...]}` | `{"ok":true}` (replace every policy in one table swap) |
//! | `{"op":"apply","config":{SwitchConfig}}` | `{"ok":true}` (replace everything) |
//! | `{"op":"show_config"}` | `{"ok":true,"config":{SwitchConfig}}` |
//! | `{"op":"stats"}` | `{"ok":true,"stats":{SwitchStats}}` |
//! | `{"op":"set_firewall","tenant":"t1","policy":{PolicySpec}}` | `{"ok":true}` (one tenant's rules, swapped atomically; its connections kept unless the new rules forbid them) |
//! | `{"op":"firewall_log","tenant":"t1"}` | `{"ok":true,"log":[{FirewallLogEntry},...]}` (entries since the last read; follow by asking again) |
//! | `{"op":"set_ids","tenant":"t1","ids":{IdsSpec}}` | `{"ok":true,"ids_load":{IdsLoadReport}}` (rules compiled aside, then swapped between two packets; `"ids":null` turns detection off) |
//! | `{"op":"ids_alerts","tenant":"t1","after":0}` | `{"ok":true,"ids_alerts":{IdsAlerts}}` (EVE alerts after that sequence number; follow by asking again with `next`) |
//! | `{"op":"shutdown"}` | `{"ok":true}`, then the switch exits |
//!
//! Failures answer `{"ok":false,"error":"..."}` and change nothing.
//!
//! A port's `limits` (in `add_port`, `apply` and `set_limits`) look like
//! `{"total":{"packets_per_sec":100000,"bytes_per_sec":125000000},
//! "flood":{"packets_per_sec":1000,"burst_packets":200},"unknown":{"packets_per_sec":20000}}`;
//! every class and field is optional (absent = unlimited, see [`crate::config::PortLimits`]),
//! and a field name the switch does not know is an error.
//!
//! A policy (see [`crate::policy`]) looks like `{"id":"no-ssh","scope":{"network":"t1-net"},
//! "rules":[{"protocol":6,"dst_ports":[22,22],"action":"drop"},
//! {"protocol":17,"action":{"mirror":"ids0"}}]}`; a TAP port is a port with
//! `"kind":{"tap":{"device":"ctr0"}}` (and no `socket`). `apply` changing nothing but a
//! port's limits keeps its guest connected, as `set_limits` does.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{NetworkConfig, PortConfig, PortLimits, SwitchConfig};
use crate::firewall::PolicySpec;
use crate::ids::{IdsAlerts, IdsLoadReport, IdsSpec};
use crate::policy::PolicyConfig;
use crate::stats::{FirewallLogEntry, SwitchStats};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    AddNetwork {
        network: NetworkConfig,
    },
    RemoveNetwork {
        id: String,
    },
    AddPort {
        port: PortConfig,
    },
    RemovePort {
        id: String,
    },
    SetLimits {
        id: String,
        limits: PortLimits,
    },
    SetPolicies {
        policies: Vec<PolicyConfig>,
    },
    Apply {
        config: SwitchConfig,
    },
    SetFirewall {
        tenant: String,
        policy: PolicySpec,
    },
    FirewallLog {
        tenant: String,
    },
    SetIds {
        tenant: String,
        ids: Option<IdsSpec>,
    },
    IdsAlerts {
        tenant: String,
        #[serde(default)]
        after: u64,
    },
    ShowConfig,
    Stats,
    Shutdown,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<SwitchConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<SwitchStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<Vec<FirewallLogEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids_load: Option<IdsLoadReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids_alerts: Option<IdsAlerts>,
}

impl Response {
    /// Success with nothing else to say.
    pub fn ok() -> Self {
        Response {
            ok: true,
            ..Default::default()
        }
    }
    /// Failure, with the error's text.
    pub fn err(e: impl std::fmt::Display) -> Self {
        Response {
            ok: false,
            error: Some(e.to_string()),
            ..Default::default()
        }
    }
}

/// A minimal blocking client, for tests, the bench tool and the daemon.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> std::io::Result<Client> {
        let s = UnixStream::connect(path)?;
        Ok(Client {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    pub fn call(&mut self, req: &Request) -> std::io::Result<Response> {
        let line = serde_json::to_string(req).map_err(std::io::Error::other)?;
        let resp = self.call_raw(&line)?;
        serde_json::from_str(&resp).map_err(std::io::Error::other)
    }

    /// Sends one raw line and returns the raw response line.
    pub fn call_raw(&mut self, line: &str) -> std::io::Result<String> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\n")?;
        let mut resp = String::new();
        self.reader.read_line(&mut resp)?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon and a switch of the same version must agree on every byte: the wire
    /// format is what the table in the module doc promises.
    #[test]
    fn requests_keep_their_wire_format() {
        let req: Request = serde_json::from_str(
            r#"{"op":"set_limits","id":"vm1-0","limits":{"flood":{"packets_per_sec":1000}}}"#,
        )
        .unwrap();
        match &req {
            Request::SetLimits { id, limits } => {
                assert_eq!(id, "vm1-0");
                assert_eq!(limits.flood.packets_per_sec, Some(1000));
                assert!(limits.total.is_unlimited());
            }
            other => panic!("parsed as {other:?}"),
        }
        assert_eq!(
            serde_json::to_string(&Request::ShowConfig).unwrap(),
            r#"{"op":"show_config"}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
        let limits = r#"{"op":"set_limits","id":"a","limits":{"total":{"packet_per_sec":1}}}"#;
        assert!(serde_json::from_str::<Request>(limits).is_err());
    }

    #[test]
    fn firewall_requests_keep_their_wire_format() {
        let req: Request = serde_json::from_str(
            r#"{"op":"set_firewall","tenant":"t1","policy":{"rules":[{"id":1,
                "direction":"ingress","action":"allow","protocol":"tcp",
                "destination_ports":[22,{"from":8000,"to":8080}]}]}}"#,
        )
        .unwrap();
        match &req {
            Request::SetFirewall { tenant, policy } => {
                assert_eq!(tenant, "t1");
                assert_eq!(policy.rules.len(), 1);
                assert_eq!(
                    policy.default_ingress,
                    crate::firewall::DefaultAction::Drop,
                    "deny from outside by default"
                );
            }
            other => panic!("parsed as {other:?}"),
        }
        let typo = r#"{"op":"set_firewall","tenant":"t1","policy":{"rulez":[]}}"#;
        assert!(serde_json::from_str::<Request>(typo).is_err());
        assert_eq!(
            serde_json::to_string(&Request::FirewallLog {
                tenant: "t1".into()
            })
            .unwrap(),
            r#"{"op":"firewall_log","tenant":"t1"}"#
        );
    }

    #[test]
    fn responses_carry_only_what_they_have() {
        assert_eq!(
            serde_json::to_string(&Response::ok()).unwrap(),
            r#"{"ok":true}"#
        );
        let e: Response =
            serde_json::from_str(r#"{"ok":false,"error":"port \"x\" not found"}"#).unwrap();
        assert!(!e.ok);
        assert_eq!(e.error.as_deref(), Some("port \"x\" not found"));
        assert!(e.config.is_none() && e.stats.is_none() && e.log.is_none());
    }
}
