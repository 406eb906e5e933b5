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
//! - [`check_servers`] asks each STUN server for our address and each TURN server for an
//!   allocation with our credentials, once per session, so that an unreachable server or
//!   refused credentials are a typed [`IceServerProblem`] rather than a candidate that quietly
//!   never arrives (the WebRTC stack only logs them). The call goes on with what works.

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
pub fn selected_path(report: &RTCStatsReport) -> Option<CandidatePath> {
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
        // `udp`, `tcp` or `tls`, as the statistics serialize it; webrtc 0.21 leaves it
        // `Unspecified` for its relay candidates, whose URL says how the server is reached.
        match serde_json::to_value(local.relay_protocol) {
            Ok(serde_json::Value::String(protocol)) if protocol == "tcp" || protocol == "tls" => {
                "tcp".into()
            }
            _ if local.url.ends_with("transport=tcp") => "tcp".into(),
            _ => "udp".to_owned(),
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

/// Why a STUN or TURN server handed out for the session cannot be used.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IceServerProblem {
    /// The URL is not one this client can use (`turns:`, `stuns:`, a bad URL).
    #[error("{url}: not supported: {reason}")]
    Unsupported {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Its host name does not resolve.
    #[error("{url}: cannot resolve its host: {reason}")]
    Unresolvable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// No answer within the time allowed.
    #[error("{url}: no answer within {waited_ms} ms")]
    NoAnswer {
        /// The URL.
        url: String,
        /// How long we waited.
        waited_ms: u64,
    },
    /// The TURN server refused the allocation (credentials refused, quota, …).
    #[error("{url}: TURN allocation refused: {reason}")]
    Refused {
        /// The URL.
        url: String,
        /// The server's answer.
        reason: String,
    },
}

/// Checks every STUN and TURN server in `servers` (UDP), each within `wait`, all at once;
/// returns what is wrong with them (empty when all answered). A successful test allocation
/// is released at once.
pub async fn check_servers(
    servers: &[IceServer],
    wait: std::time::Duration,
) -> Vec<IceServerProblem> {
    let checks = servers.iter().flat_map(|server| {
        server.urls.iter().map(move |url| {
            let credentials = (
                server.username.clone().unwrap_or_default(),
                server.credential.clone().unwrap_or_default(),
            );
            check_server(url.clone(), credentials, wait)
        })
    });
    futures_util::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn check_server(
    url: String,
    (username, password): (String, String),
    wait: std::time::Duration,
) -> Option<IceServerProblem> {
    let unsupported = |reason: &str| {
        Some(IceServerProblem::Unsupported {
            url: url.clone(),
            reason: reason.to_owned(),
        })
    };
    let (turn, rest) = if let Some(rest) = url.strip_prefix("stun:") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("turn:") {
        (true, rest)
    } else {
        return unsupported("only stun: and turn: URLs (no TLS)");
    };
    let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
    let over_tcp = match query {
        "" | "transport=udp" => false,
        "transport=tcp" if turn => true,
        _ => return unsupported("transport: udp, or tcp for TURN"),
    };
    let host = if host.contains(':') && !host.ends_with(']') {
        host.to_owned()
    } else {
        format!("{host}:3478")
    };
    let server = match tokio::net::lookup_host(host.as_str()).await {
        Ok(mut addrs) => match addrs.next() {
            Some(addr) => addr,
            None => {
                return Some(IceServerProblem::Unresolvable {
                    url,
                    reason: "no address".into(),
                });
            }
        },
        Err(err) => {
            return Some(IceServerProblem::Unresolvable {
                url,
                reason: err.to_string(),
            });
        }
    };
    match tokio::time::timeout(wait, ask(server, (turn, over_tcp), username, password)).await {
        Ok(Ok(())) => None,
        Ok(Err(reason)) if turn => Some(IceServerProblem::Refused { url, reason }),
        Ok(Err(_)) | Err(_) => Some(IceServerProblem::NoAnswer {
            url,
            waited_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

/// How a check reaches its server: a UDP socket, or a TCP connection (TURN over TCP, framed
/// as RFC 5766 §2.1 frames it: STUN messages and padded ChannelData back to back).
enum CheckTransport {
    Udp(tokio::net::UdpSocket),
    Tcp {
        stream: tokio::net::TcpStream,
        /// Bytes received and not yet a whole message.
        pending: bytes::BytesMut,
    },
}

impl CheckTransport {
    async fn open(server: std::net::SocketAddr, over_tcp: bool) -> std::io::Result<Self> {
        if over_tcp {
            return Ok(Self::Tcp {
                stream: tokio::net::TcpStream::connect(server).await?,
                pending: bytes::BytesMut::new(),
            });
        }
        let bind: std::net::SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        Ok(Self::Udp(tokio::net::UdpSocket::bind(bind).await?))
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match self {
            Self::Udp(socket) => socket.local_addr(),
            Self::Tcp { stream, .. } => stream.local_addr(),
        }
    }

    async fn send(&mut self, message: &[u8], to: std::net::SocketAddr) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        match self {
            Self::Udp(socket) => socket.send_to(message, to).await.map(|_| ()),
            Self::Tcp { stream, .. } => stream.write_all(message).await,
        }
    }

    /// The next message and who sent it (cancel-safe: a TCP read keeps what it got).
    async fn receive(
        &mut self,
        buffer: &mut [u8],
    ) -> std::io::Result<(bytes::BytesMut, std::net::SocketAddr)> {
        use tokio::io::AsyncReadExt;
        match self {
            Self::Udp(socket) => {
                let (n, from) = socket.recv_from(buffer).await?;
                Ok((bytes::BytesMut::from(&buffer[..n]), from))
            }
            Self::Tcp { stream, pending } => loop {
                if let Some(frame) = next_turn_frame(pending) {
                    let frame = frame.map_err(|()| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, "not TURN framing")
                    })?;
                    return Ok((frame, stream.peer_addr()?));
                }
                if stream.read_buf(pending).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            },
        }
    }
}

/// The next whole message of a TURN server's TCP stream (RFC 5766 §2.1, §11.5): a STUN
/// message (its header gives its length) or ChannelData padded to 4 bytes (the padding
/// dropped); `None` until one is whole, `Err` for bytes that start neither.
fn next_turn_frame(pending: &mut bytes::BytesMut) -> Option<Result<bytes::BytesMut, ()>> {
    if pending.len() < 4 {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([pending[2], pending[3]]));
    let (whole, kept) = match pending[0] >> 6 {
        0b00 => (20 + length, 20 + length),
        0b01 => (4 + length.next_multiple_of(4), 4 + length),
        _ => return Some(Err(())),
    };
    if pending.len() < whole {
        return None;
    }
    let mut frame = pending.split_to(whole);
    frame.truncate(kept);
    Some(Ok(frame))
}

/// One Binding (STUN) or Allocate (TURN) exchange with `server` over a fresh UDP socket or,
/// for TURN over TCP, a fresh connection, driving the sans-IO TURN client of the WebRTC stack.
async fn ask(
    server: std::net::SocketAddr,
    (turn, over_tcp): (bool, bool),
    username: String,
    password: String,
) -> Result<(), String> {
    use rtc::sansio::Protocol;
    use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
    use rtc::turn::client::{Client, ClientConfig, Event};
    use std::time::Instant;

    let mut socket = CheckTransport::open(server, over_tcp)
        .await
        .map_err(|e| e.to_string())?;
    let local_addr = socket.local_addr().map_err(|e| e.to_string())?;
    let protocol = if over_tcp {
        TransportProtocol::TCP
    } else {
        TransportProtocol::UDP
    };
    let provider = rtc::crypto::default_provider().map_err(|e| e.to_string())?;
    let mut client = Client::new(
        ClientConfig {
            stun_serv_addr: server.to_string(),
            turn_serv_addr: server.to_string(),
            local_addr,
            transport_protocol: protocol,
            username,
            password,
            ..ClientConfig::default()
        },
        provider,
    )
    .map_err(|e| e.to_string())?;
    let now = Instant::now();
    if turn {
        client.allocate(now).map_err(|e| e.to_string())?;
    } else {
        client
            .send_binding_request(now)
            .map_err(|e| e.to_string())?;
    }
    let mut buffer = vec![0u8; 1500];
    loop {
        while let Some(out) = client.poll_write() {
            socket
                .send(&out.message, out.transport.peer_addr)
                .await
                .map_err(|e| e.to_string())?;
        }
        while let Some(event) = client.poll_event() {
            match event {
                Event::BindingResponse(..) => return Ok(()),
                Event::AllocateResponse(_, relayed) => {
                    // Give the test allocation back now rather than at its lifetime's end.
                    if let Ok(mut relay) = client.relay(relayed) {
                        let _ = relay.close(Instant::now());
                    }
                    while let Some(out) = client.poll_write() {
                        let _ = socket.send(&out.message, out.transport.peer_addr).await;
                    }
                    return Ok(());
                }
                Event::BindingError(_, err) | Event::AllocateError(_, err) => {
                    return Err(err.to_string());
                }
                Event::TransactionTimeout(_) => return Err("no answer".into()),
                _ => {}
            }
        }
        let deadline = client
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + std::time::Duration::from_millis(100));
        tokio::select! {
            received = socket.receive(&mut buffer) => {
                let (message, from) = received.map_err(|e| e.to_string())?;
                let message = TaggedBytesMut {
                    now: Instant::now(),
                    transport: TransportContext {
                        local_addr,
                        peer_addr: from,
                        ecn: None,
                        transport_protocol: protocol,
                    },
                    message,
                };
                client.handle_read(message).map_err(|e| e.to_string())?;
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                client.handle_timeout(Instant::now()).map_err(|e| e.to_string())?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// URLs this client cannot use are named as such, and a STUN server that never answers
    /// (a UDP socket on loopback that reads and drops) is reported within the wait.
    #[test]
    fn unusable_servers_are_typed_problems() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
        let silent_url = format!("stun:{}", silent.local_addr().expect("addr"));
        let servers = vec![
            IceServer {
                urls: vec![silent_url.clone(), "stuns:example.org:5349".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec!["turn:127.0.0.1:3478?transport=sctp".into()],
                username: Some("1:alice".into()),
                credential: Some("x".into()),
            },
        ];
        let started = std::time::Instant::now();
        let problems = runtime.block_on(check_servers(
            &servers,
            std::time::Duration::from_millis(300),
        ));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.contains(&IceServerProblem::NoAnswer {
            url: silent_url,
            waited_ms: 300
        }));
        assert!(problems.iter().any(|p| matches!(p,
            IceServerProblem::Unsupported { url, .. } if url.starts_with("stuns:"))));
        assert!(problems.iter().any(|p| matches!(p,
            IceServerProblem::Unsupported { url, reason } if url.ends_with("sctp") && reason.contains("transport"))));
    }

    /// A TURN server's TCP stream splits into its messages: a STUN message, then ChannelData
    /// of 5 bytes padded to 8, across reads, come out as two frames (the padding dropped); a
    /// first byte that starts neither is an error.
    #[test]
    fn turn_frames_split_from_a_stream() {
        use bytes::BytesMut;
        let mut stun = vec![0x01, 0x01, 0x00, 0x04, 0x21, 0x12, 0xa4, 0x42];
        stun.extend_from_slice(&[7; 12]);
        stun.extend_from_slice(&[1, 2, 3, 4]);
        let channel_data = [0x40, 0x00, 0x00, 0x05, 9, 9, 9, 9, 9, 0, 0, 0];
        let mut pending = BytesMut::new();
        pending.extend_from_slice(&stun[..10]);
        assert!(next_turn_frame(&mut pending).is_none());
        pending.extend_from_slice(&stun[10..]);
        pending.extend_from_slice(&channel_data[..6]);
        assert_eq!(
            next_turn_frame(&mut pending),
            Some(Ok(BytesMut::from(&stun[..])))
        );
        assert!(next_turn_frame(&mut pending).is_none());
        pending.extend_from_slice(&channel_data[6..]);
        assert_eq!(
            next_turn_frame(&mut pending),
            Some(Ok(BytesMut::from(&channel_data[..9])))
        );
        assert!(pending.is_empty());
        pending.extend_from_slice(&[0xc0, 0, 0, 0]);
        assert_eq!(next_turn_frame(&mut pending), Some(Err(())));
    }

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
