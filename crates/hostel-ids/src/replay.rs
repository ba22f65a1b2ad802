//! Offline replay: a pcap (classic or nanosecond) through the engine, alerts as EVE lines.

use std::io::Write;
use std::path::Path;

use pcap_file::pcap::PcapReader;
use pcap_file::DataLink;

use crate::engine::Engine;
use crate::error::ReplayError;
use crate::packet::{decode, Link};

/// Replays `pcap` through `engine`, writing one EVE line per alert to `out`; returns the count.
pub fn replay(engine: &mut Engine, pcap: &Path, out: &mut dyn Write) -> Result<u64, ReplayError> {
    let path = pcap.display().to_string();
    let file = std::fs::File::open(pcap).map_err(|source| ReplayError::Io {
        path: path.clone(),
        source,
    })?;
    let mut reader =
        PcapReader::new(std::io::BufReader::new(file)).map_err(|source| ReplayError::Pcap {
            path: path.clone(),
            source,
        })?;
    let link = match reader.header().datalink {
        DataLink::ETHERNET => Link::Ethernet,
        DataLink::LINUX_SLL => Link::LinuxSll,
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Link::RawIp,
        other => {
            return Err(ReplayError::LinkType {
                path,
                linktype: format!("{other:?}"),
            })
        }
    };
    let mut n = 0;
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.map_err(|source| ReplayError::Pcap {
            path: path.clone(),
            source,
        })?;
        let Some(p) = decode(link, &pkt.data) else {
            continue;
        };
        for a in engine.inspect(pkt.timestamp, &p).alerts {
            n += 1;
            writeln!(out, "{}", crate::eve::to_json(&a)).map_err(|source| ReplayError::Io {
                path: "output".into(),
                source,
            })?;
        }
    }
    Ok(n)
}
