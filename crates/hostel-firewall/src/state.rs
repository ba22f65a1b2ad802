//! Connection states, their lifetimes, and TCP's transitions by flags (a segment's flags and
//! direction decide; the sequence window is checked before, in `tcpwin`).

use crate::packet::{PROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use crate::DropReason;

pub const SEC: u64 = 1_000_000_000;

/// Per-state lifetimes in nanoseconds (Linux's defaults, except ESTABLISHED: 1 day, not 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub syn_sent: u64,
    pub syn_recv: u64,
    pub established: u64,
    pub fin_wait: u64,
    pub close_wait: u64,
    pub last_ack: u64,
    pub time_wait: u64,
    pub close: u64,
    pub udp_unreplied: u64,
    pub udp_replied: u64,
    pub icmp: u64,
    pub other: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            syn_sent: 120 * SEC,
            syn_recv: 60 * SEC,
            established: 86_400 * SEC,
            fin_wait: 120 * SEC,
            close_wait: 60 * SEC,
            last_ack: 30 * SEC,
            time_wait: 120 * SEC,
            close: 10 * SEC,
            udp_unreplied: 30 * SEC,
            udp_replied: 180 * SEC,
            icmp: 30 * SEC,
            other: 600 * SEC,
        }
    }
}

/// A connection's state. TCP follows the handshake and teardown by flags (its sequence
/// window is `tcpwin`'s); the others only know whether a reply was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    SynSent,
    SynRecv,
    Established,
    /// The initiator sent FIN.
    FinWait,
    /// The responder sent FIN.
    CloseWait,
    /// Both sent FIN.
    LastAck,
    TimeWait,
    Close,
    Unreplied,
    Replied,
}

impl State {
    pub fn embryonic(self) -> bool {
        matches!(self, State::SynSent | State::SynRecv)
    }
}

impl Timeouts {
    /// The lifetime a connection gets from a packet that leaves it in state `s`.
    pub fn get(&self, s: State, proto: u8, icmp: bool) -> u64 {
        match s {
            State::SynSent => self.syn_sent,
            State::SynRecv => self.syn_recv,
            State::Established => self.established,
            State::FinWait => self.fin_wait,
            State::CloseWait => self.close_wait,
            State::LastAck => self.last_ack,
            State::TimeWait => self.time_wait,
            State::Close => self.close,
            _ if icmp => self.icmp,
            State::Unreplied if proto == PROTO_UDP => self.udp_unreplied,
            State::Replied if proto == PROTO_UDP => self.udp_replied,
            _ => self.other,
        }
    }
}

/// Every state by its discriminant (entries store the state as a byte).
pub(crate) const STATES: [State; 10] = [
    State::SynSent,
    State::SynRecv,
    State::Established,
    State::FinWait,
    State::CloseWait,
    State::LastAck,
    State::TimeWait,
    State::Close,
    State::Unreplied,
    State::Replied,
];

/// TCP's next state after a segment with `flags` from the initiator (`from_orig`) or the
/// responder; a segment that fits no transition is invalid.
pub fn tcp_next(state: State, from_orig: bool, flags: u8) -> Result<State, DropReason> {
    let syn = flags & TCP_SYN != 0;
    let ack = flags & TCP_ACK != 0;
    let fin = flags & TCP_FIN != 0;
    if flags & TCP_RST != 0 {
        return Ok(State::Close);
    }
    Ok(match state {
        State::SynSent if !from_orig && syn && ack => State::SynRecv,
        State::SynSent if from_orig && syn && !ack => State::SynSent,
        State::SynSent => return Err(DropReason::TcpInvalid),
        State::SynRecv if from_orig && ack && !syn && fin => State::FinWait,
        State::SynRecv if from_orig && ack && !syn => State::Established,
        State::SynRecv if syn => State::SynRecv,
        State::SynRecv => return Err(DropReason::TcpInvalid),
        State::Established if fin && from_orig => State::FinWait,
        State::Established if fin => State::CloseWait,
        State::Established => State::Established,
        State::FinWait if fin && !from_orig => State::LastAck,
        State::CloseWait if fin && from_orig => State::LastAck,
        s @ (State::FinWait | State::CloseWait) => s,
        State::LastAck if ack && !fin => State::TimeWait,
        State::LastAck => State::LastAck,
        // A new SYN on a closed tuple reuses it, as a fresh handshake.
        State::TimeWait | State::Close if from_orig && syn && !ack => State::SynSent,
        State::TimeWait | State::Close if syn => return Err(DropReason::TcpInvalid),
        s => s,
    })
}
