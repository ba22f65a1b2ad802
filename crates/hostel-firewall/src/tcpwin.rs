//! TCP sequence-window tracking, after Guido van Rooij's "Real Stateful TCP Packet Filtering
//! in IP Filter" as pf and Linux conntrack (`tcp_in_window`) implement it: each side's
//! highest sequence sent (`end`), the highest it may send (`maxend`: its peer's last
//! acknowledgement plus window) and its largest window (`maxwin`). A segment passes only if
//!
//! 1. it starts no later than the sender may send (`seq <= sender.maxend`),
//! 2. it ends no earlier than one receiver window before what the sender sent already
//!    (`end >= sender.end - receiver.maxwin`: retransmissions pass, ancient segments not),
//! 3. it acknowledges nothing the receiver has not sent (`ack <= receiver.end`),
//! 4. and nothing too far back (`ack >= receiver.end - max(sender.maxwin, 66000)`).
//!
//! A segment out of window (a RST or data forged from outside with a guessed tuple) is
//! dropped and changes nothing: it neither closes nor refreshes the connection. Window
//! scaling counts only when both SYNs offered it (RFC 7323); SYNs' windows are unscaled.
//! Selective acknowledgements are not followed (Linux widens rule 4 with them; the 66000
//! slack covers ordinary loss). Not done here either: Linux's liberal mode and picking up
//! connections in the middle (only a SYN opens a TCP connection here).

use crate::packet::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// Rule 4's least slack, as Linux's `MAXACKWINDOW`.
const MIN_ACK_SLACK: u32 = 66_000;
/// Largest window scale (RFC 7323 §2.3).
const MAX_SCALE: u8 = 14;
/// `scale` of a side that did not offer window scaling.
const NO_SCALE: u8 = 0xff;

/// The fields of one TCP segment the window check needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub seq: u32,
    pub ack: u32,
    pub win: u16,
    pub flags: u8,
    /// Sequence space it takes: payload, plus one for SYN and one for FIN.
    pub len: u32,
    /// The window-scale option (SYNs only).
    pub scale: Option<u8>,
}

/// Reads a TCP segment's sequence fields from a datagram `parse` accepted as TCP (its header
/// length was checked against the datagram there); `None` otherwise.
pub fn segment(pkt: &[u8], p: &Packet) -> Option<Segment> {
    let l4 = pkt.get(p.l4_off..p.len)?;
    let h = l4.get(..20)?;
    let doff = usize::from(h[12] >> 4) * 4;
    let opts = l4.get(20..doff)?;
    let flags = h[13];
    let payload = l4.len().checked_sub(doff)? as u32;
    let len = payload + u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);
    let scale = if flags & TCP_SYN != 0 {
        window_scale(opts)
    } else {
        None
    };
    Some(Segment {
        seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        win: u16::from_be_bytes([h[14], h[15]]),
        flags,
        len,
        scale,
    })
}

/// The window-scale option's shift, if present and well-formed (bounded: at most 40 bytes).
fn window_scale(mut o: &[u8]) -> Option<u8> {
    while let Some(&kind) = o.first() {
        match kind {
            0 => return None,
            1 => o = &o[1..],
            _ => {
                let len = usize::from(*o.get(1)?);
                if len < 2 || len > o.len() {
                    return None;
                }
                if kind == 3 && len == 3 {
                    return Some(o[2].min(MAX_SCALE));
                }
                o = &o[len..];
            }
        }
    }
    None
}

/// `a` before `b` in sequence space (RFC 1982 arithmetic).
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// One side's view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
struct Peer {
    end: u32,
    maxend: u32,
    maxwin: u32,
    /// Its window-scale shift once both SYNs are seen; [`NO_SCALE`] if it offered none.
    scale: u8,
    /// Whether this side has sent anything yet.
    seen: bool,
}

/// Both sides of one TCP connection: index 0 the initiator, 1 the responder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(32))]
pub struct Window {
    peers: [Peer; 2],
}

impl Window {
    /// The window a connection starts with: the initiator's SYN.
    pub fn open(syn: &Segment) -> Window {
        let mut w = Window::default();
        w.peers[0] = Peer {
            end: syn.seq.wrapping_add(syn.len),
            maxend: syn.seq.wrapping_add(syn.len),
            maxwin: u32::from(syn.win).max(1),
            scale: syn.scale.unwrap_or(NO_SCALE),
            seen: true,
        };
        w
    }

    /// Checks a segment from the initiator (`from_orig`) or the responder against the
    /// window and, if it fits, advances the window by it. `false`: out of window (the
    /// window is unchanged).
    pub fn check(&mut self, from_orig: bool, seg: &Segment) -> bool {
        let (si, ri) = if from_orig { (0, 1) } else { (1, 0) };
        let end = seg.seq.wrapping_add(seg.len);
        let syn = seg.flags & TCP_SYN != 0;
        let mut s = self.peers[si];
        let mut r = self.peers[ri];
        if !s.seen {
            // The responder's first segment (its SYN-ACK): its side starts here.
            s = Peer {
                end,
                maxend: end,
                maxwin: u32::from(seg.win).max(1),
                scale: if syn {
                    seg.scale.unwrap_or(NO_SCALE)
                } else {
                    NO_SCALE
                },
                seen: true,
            };
            if s.scale == NO_SCALE || r.scale == NO_SCALE {
                // Scaling is on only if both offered it.
                s.scale = NO_SCALE;
                r.scale = NO_SCALE;
            }
            s.maxend = end.wrapping_add(s.maxwin);
        }
        let ack = if seg.flags & TCP_ACK != 0 {
            seg.ack
        } else {
            r.end
        };
        let ack_slack = s.maxwin.max(MIN_ACK_SLACK);
        let in_window = before(seg.seq, s.maxend.wrapping_add(1))
            && after(end, s.end.wrapping_sub(r.maxwin).wrapping_sub(1))
            && (!r.seen || before(ack, r.end.wrapping_add(1)))
            && (!r.seen || after(ack, r.end.wrapping_sub(ack_slack).wrapping_sub(1)));
        if !in_window {
            return false;
        }
        let shift = if syn || s.scale == NO_SCALE {
            0
        } else {
            u32::from(s.scale)
        };
        let win = u32::from(seg.win) << shift;
        s.maxwin = s.maxwin.max(win).max(1);
        if after(end, s.end) {
            s.end = end;
        }
        if seg.flags & TCP_ACK != 0 && seg.flags & TCP_RST == 0 {
            let upto = ack.wrapping_add(win.max(1));
            if !r.seen || after(upto, r.maxend) {
                r.maxend = upto;
            }
        }
        self.peers[si] = s;
        self.peers[ri] = r;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(seq: u32, ack: u32, flags: u8, len: u32) -> Segment {
        Segment {
            seq,
            ack,
            win: 1000,
            flags,
            len: len + u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0),
            scale: None,
        }
    }

    /// Initiator ISN 100, responder ISN 5000, handshake done.
    fn established() -> Window {
        let mut w = Window::open(&seg(100, 0, TCP_SYN, 0));
        assert!(w.check(false, &seg(5000, 101, TCP_SYN | TCP_ACK, 0)));
        assert!(w.check(true, &seg(101, 5001, TCP_ACK, 0)));
        w
    }

    #[test]
    fn in_window_data_and_acks_pass_and_advance() {
        let mut w = established();
        assert!(w.check(true, &seg(101, 5001, TCP_ACK, 500)));
        assert!(w.check(false, &seg(5001, 601, TCP_ACK, 0)));
        // A retransmission of what was sent already still passes.
        assert!(w.check(true, &seg(101, 5001, TCP_ACK, 500)));
    }

    #[test]
    fn out_of_window_rst_and_data_are_refused_and_change_nothing() {
        let mut w = established();
        let before = w;
        // A RST far beyond what the initiator may send (a blind reset guess).
        assert!(!w.check(false, &seg(5001 + 10_000_000, 0, TCP_RST, 0)));
        // Data starting past the responder's window.
        assert!(!w.check(false, &seg(5001 + 2_000_000, 101, TCP_ACK, 100)));
        // Data acknowledging bytes the initiator never sent.
        assert!(!w.check(false, &seg(5001, 1_000_000, TCP_ACK, 10)));
        // An ancient segment, far before the window.
        assert!(!w.check(
            true,
            &seg(101u32.wrapping_sub(3_000_000), 5001, TCP_ACK, 10)
        ));
        assert_eq!(w, before, "refused segments leave the window as it was");
        // An in-window RST passes.
        assert!(w.check(false, &seg(5001, 0, TCP_RST, 0)));
    }

    #[test]
    fn a_syn_ack_acknowledging_something_else_is_refused() {
        let mut w = Window::open(&seg(100, 0, TCP_SYN, 0));
        assert!(!w.check(false, &seg(5000, 7777, TCP_SYN | TCP_ACK, 0)));
    }

    #[test]
    fn window_scale_counts_only_when_both_offer_it() {
        let mut syn = seg(100, 0, TCP_SYN, 0);
        syn.scale = Some(7);
        let mut w = Window::open(&syn);
        let mut sa = seg(5000, 101, TCP_SYN | TCP_ACK, 0);
        sa.scale = Some(7);
        assert!(w.check(false, &sa));
        // The responder advertises 1000 << 7 = 128000: the initiator may send that far.
        assert!(w.check(false, &seg(5001, 101, TCP_ACK, 0)));
        assert!(w.check(true, &seg(101 + 100_000, 5001, TCP_ACK, 10)));
        // Without the responder's option, the same segment is out of window.
        let mut w = Window::open(&syn);
        assert!(w.check(false, &seg(5000, 101, TCP_SYN | TCP_ACK, 0)));
        assert!(w.check(false, &seg(5001, 101, TCP_ACK, 0)));
        assert!(!w.check(true, &seg(101 + 100_000, 5001, TCP_ACK, 10)));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut w = Window::open(&seg(u32::MAX - 10, 0, TCP_SYN, 0));
        assert!(w.check(false, &seg(5000, u32::MAX - 9, TCP_SYN | TCP_ACK, 0)));
        assert!(w.check(true, &seg(u32::MAX - 9, 5001, TCP_ACK, 100)));
        assert!(w.check(false, &seg(5001, 90, TCP_ACK, 0)));
    }

    #[test]
    fn options_are_walked_within_bounds() {
        assert_eq!(window_scale(&[1, 1, 3, 3, 9]), Some(9));
        assert_eq!(window_scale(&[3, 3, 200]), Some(MAX_SCALE));
        assert_eq!(window_scale(&[2, 4, 5, 180, 1, 3]), None);
        assert_eq!(window_scale(&[2, 0, 3, 3, 1]), None);
        assert_eq!(window_scale(&[2, 40]), None);
        assert_eq!(window_scale(&[]), None);
    }
}
