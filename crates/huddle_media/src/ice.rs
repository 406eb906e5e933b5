//! Where peers gather ICE candidates, which STUN/TURN servers they use, and which candidate
//! pair carries the media.
//!
//! - [`IceConfig`] is a session's network set-up: the local addresses to bind (by default
//!   every interface that is up, IPv4 and IPv6, loopback included: [`all_interfaces`]), the
//!   STUN and TURN servers the signaling server handed out, and whether mDNS is used (off by
//!   default; when on and the host cannot join the multicast group, the call goes on without
//!   it).
//! - [`CandidatePath`] is the selected pair of a connection, read from the WebRTC statistics
//!   every second ([`selected_path`]).

use std::net::IpAddr;

use huddle_protocol::IceServer;
use rtc::statistics::report::{RTCStatsReport, RTCStatsReportEntry};
use serde::Serialize;

/// A session's network set-up for media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceConfig {
    /// Local UDP addresses to bind, e.g. `10.0.0.2:0`. A wildcard (`0.0.0.0:0`, `[::]:0`)
    /// means every usable interface of that family, re-read on an ICE restart.
    pub bind: Vec<String>,
    /// STUN and TURN servers (from the signaling server's `join_session` answer).
    pub servers: Vec<IceServer>,
    /// Resolve and answer `.local` mDNS candidates (browsers hide host addresses behind them).
    pub multicast_dns: bool,
}

impl Default for IceConfig {
    /// Every interface, no servers, no mDNS.
    fn default() -> Self {
        Self {
            bind: all_interfaces(),
            servers: Vec::new(),
            multicast_dns: false,
        }
    }
}

impl IceConfig {
    /// Loopback only (same-machine tests and benchmarks).
    pub fn loopback() -> Self {
        Self {
            bind: vec!["127.0.0.1:0".to_owned()],
            ..Self::default()
        }
    }

    /// The TURN URLs among the servers that reach their server over TCP.
    pub fn tcp_turn_urls(&self) -> Vec<String> {
        self.servers
            .iter()
            .flat_map(|server| server.urls.iter())
            .filter(|url| url.starts_with("turn") && url.ends_with("transport=tcp"))
            .cloned()
            .collect()
    }

    /// These servers instead of the current ones.
    pub fn with_servers(mut self, servers: Vec<IceServer>) -> Self {
        self.servers = servers;
        self
    }
}

/// Bind addresses for every interface that is up: a wildcard per family that has a routable
/// address (expanded to one socket per interface address by the WebRTC stack, and again on
/// every ICE restart, so a new interface is picked up), plus the loopback addresses, which
/// the wildcard leaves out. A host with only `lo` gets only loopback, never a bare wildcard
/// (whose `0.0.0.0` candidate nobody could reach).
pub fn all_interfaces() -> Vec<String> {
    let addresses: Vec<IpAddr> = rtc::shared::ifaces::ifaces()
        .map(|list| {
            list.into_iter()
                .filter_map(|i| i.addr.map(|a| a.ip()))
                .collect()
        })
        .unwrap_or_default();
    let routable = |v4: bool| {
        addresses.iter().any(|ip| {
            ip.is_ipv4() == v4 && !ip.is_loopback() && !ip.is_unspecified() && !is_link_local(ip)
        })
    };
    let mut bind = Vec::new();
    if routable(true) {
        bind.push("0.0.0.0:0".to_owned());
    }
    if routable(false) {
        bind.push("[::]:0".to_owned());
    }
    bind.push("127.0.0.1:0".to_owned());
    if addresses.iter().any(|ip| ip.is_ipv6() && ip.is_loopback()) {
        bind.push("[::1]:0".to_owned());
    }
    bind
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => ip.is_link_local(),
        IpAddr::V6(ip) => (ip.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The candidate pair that carries a connection's media, as in a browser's
/// `RTCIceCandidatePairStats` with its two candidates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CandidatePath {
    /// `host`, `srflx`, `prflx` or `relay`.
    pub local_candidate_type: String,
    /// The same for the remote side.
    pub remote_candidate_type: String,
    /// How our packets leave: `udp` or `tcp` (for a relay, the protocol to the TURN server).
    pub protocol: String,
}

/// The selected candidate pair of a connection's statistics, if ICE has selected one.
/// `tcp_turn_urls` are the TURN URLs that reach their server over TCP (their relay candidates
/// say `tcp`).
pub fn selected_path(report: &RTCStatsReport, tcp_turn_urls: &[String]) -> Option<CandidatePath> {
    let transport = report.transport()?;
    let pair = match report.get(&transport.selected_candidate_pair_id) {
        Some(RTCStatsReportEntry::IceCandidatePair(pair)) => pair,
        _ => report.candidate_pairs().find(|p| p.nominated)?,
    };
    // The pair names its candidates by their ICE ids; their statistics prefix them.
    let named = |stats_id: &str, id: &str| {
        stats_id == id || stats_id.strip_suffix(id).is_some_and(|p| p.ends_with('_'))
    };
    let local = report.iter().find_map(|entry| match entry {
        RTCStatsReportEntry::LocalCandidate(c) if named(&c.stats.id, &pair.local_candidate_id) => {
            Some(c)
        }
        _ => None,
    })?;
    // Every candidate the remote signals is trickled (and so has statistics); one without is
    // one ICE learned from the remote's checks: peer-reflexive.
    let remote_type = report
        .iter()
        .find_map(|entry| match entry {
            RTCStatsReportEntry::RemoteCandidate(c)
                if named(&c.stats.id, &pair.remote_candidate_id) =>
            {
                Some(c.candidate_type.to_string())
            }
            _ => None,
        })
        .unwrap_or_else(|| "prflx".to_owned());
    let local_type = local.candidate_type.to_string();
    let protocol = if local_type == "relay" {
        if tcp_turn_urls.iter().any(|url| url == &local.url) {
            "tcp".to_owned()
        } else {
            // `udp`, `tcp` or `tls`, as the statistics serialize it.
            match serde_json::to_value(local.relay_protocol) {
                Ok(serde_json::Value::String(protocol)) if protocol == "udp" => protocol,
                Ok(serde_json::Value::String(protocol)) if !protocol.is_empty() => "tcp".into(),
                _ => "udp".to_owned(),
            }
        }
    } else {
        local.protocol.to_lowercase()
    };
    Some(CandidatePath {
        local_candidate_type: local_type,
        remote_candidate_type: remote_type,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback is always bound, and a wildcard only for a family with a routable address.
    #[test]
    fn all_interfaces_includes_loopback_and_no_bare_wildcard_without_routes() {
        let bind = all_interfaces();
        assert!(bind.contains(&"127.0.0.1:0".to_owned()));
        let addresses: Vec<IpAddr> = rtc::shared::ifaces::ifaces()
            .expect("interfaces")
            .into_iter()
            .filter_map(|i| i.addr.map(|a| a.ip()))
            .collect();
        let routable_v4 = addresses
            .iter()
            .any(|ip| ip.is_ipv4() && !ip.is_loopback() && !is_link_local(ip));
        assert_eq!(bind.contains(&"0.0.0.0:0".to_owned()), routable_v4);
    }
}
