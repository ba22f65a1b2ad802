//! The switching decision as a chain of stages with typed verdicts:
//! parse → anti-spoof → network lookup → destination lookup → unspecified-source check →
//! policy stages → uplink hooks.
//!
//! The decision is pure (tables + header window in, [`Decision`] plus an optional mirror
//! port out), which is what makes it unit-testable and fuzzable; executing it lives in
//! [`crate::datapath::forward`] and [`crate::datapath::exec`], the same for every port kind.
//!
//! Policy stages ([`PolicyStage`], rules in [`crate::policy`]) live in the [`Tables`], so the
//! daemon programs them per network and per port and they are swapped atomically with the
//! rest of the tables; they judge every forwarded frame, VM to VM included. With no policy
//! in the tables the stage costs one branch. The stateful firewall to come is a stage in
//! the same slot. Uplink hooks are stages compiled into the switch that see only frames
//! crossing an uplink.

use std::net::Ipv6Addr;
use std::sync::Arc;

use crate::datapath::decide;
use crate::packet::{parse, Parsed};
use crate::policy::{self, Fields, StageVerdict};
use crate::stats::DropReason;
use crate::tables::{NetIdx, PortIdx, Tables};
use crate::types::MacAddr;

/// Where a frame entered the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingress {
    Port(PortIdx),
    Uplink(NetIdx),
}

/// A reply the switch generates itself instead of forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalReply {
    /// ARP reply telling the asker that the requested address is at `answer`.
    Arp {
        answer: MacAddr,
    },
    /// Neighbour advertisement for `target` at `mac`.
    NeighborAdvert {
        target: Ipv6Addr,
        mac: MacAddr,
        router: bool,
    },
    RouterAdvert,
    Dhcp,
}

/// What to do with a frame: the final verdict of the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Deliver to one port of the same network.
    Unicast(PortIdx),
    /// Deliver to every other port of the network (and the uplink, if the frame came from a
    /// port).
    Flood,
    /// Send out of the network's uplink TAP.
    Uplink,
    /// Route through the tenant's edge to the external network (see
    /// [`crate::datapath::edge`]).
    Edge,
    /// Answer back to the ingress.
    Local(LocalReply),
    Drop(DropReason),
}

/// A stage's verdict: continue down the pipeline or stop with a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Done(Decision),
}

/// Per-frame state passed along the stages. `window` is the switch's private copy of the
/// first bytes of the frame (all of it for small frames).
pub struct Ctx<'a> {
    pub tables: &'a Tables,
    pub ingress: Ingress,
    pub window: &'a [u8],
    /// Length of the whole frame (without the virtio-net header).
    pub frame_len: usize,
    pub parsed: Option<Parsed>,
    pub net: Option<NetIdx>,
    /// Set by destination lookup; hooks may inspect or veto it.
    pub decision: Option<Decision>,
    /// A port a policy wants a copy of the frame sent to (delivery itself is unchanged).
    pub mirror: Option<PortIdx>,
}

impl<'a> Ctx<'a> {
    pub fn new(tables: &'a Tables, ingress: Ingress, window: &'a [u8], frame_len: usize) -> Self {
        Ctx {
            tables,
            ingress,
            window,
            frame_len,
            parsed: None,
            net: match ingress {
                Ingress::Uplink(n) => Some(n),
                Ingress::Port(_) => None,
            },
            decision: None,
            mirror: None,
        }
    }
}

/// One step of the switching pipeline.
pub trait Stage: Send + Sync {
    fn name(&self) -> &'static str;
    fn run(&self, ctx: &mut Ctx<'_>) -> Verdict;
}

pub struct ParseStage;
impl Stage for ParseStage {
    fn name(&self) -> &'static str {
        "parse"
    }
    fn run(&self, ctx: &mut Ctx<'_>) -> Verdict {
        match parse(ctx.window) {
            Ok(p) => {
                ctx.parsed = Some(p);
                Verdict::Continue
            }
            Err(_) => Verdict::Done(Decision::Drop(DropReason::Malformed)),
        }
    }
}

pub struct AntiSpoofStage;
impl Stage for AntiSpoofStage {
    fn name(&self) -> &'static str {
        "anti_spoof"
    }
    fn run(&self, ctx: &mut Ctx<'_>) -> Verdict {
        let (Ingress::Port(p), Some(parsed)) = (ctx.ingress, ctx.parsed.as_ref()) else {
            return Verdict::Continue; // the uplink is the trusted host side
        };
        match decide::check_source(ctx.tables.port(p), parsed) {
            Ok(()) => Verdict::Continue,
            Err(r) => Verdict::Done(Decision::Drop(r)),
        }
    }
}

pub struct NetworkLookupStage;
impl Stage for NetworkLookupStage {
    fn name(&self) -> &'static str {
        "network_lookup"
    }
    fn run(&self, ctx: &mut Ctx<'_>) -> Verdict {
        if let Ingress::Port(p) = ctx.ingress {
            ctx.net = Some(ctx.tables.port(p).net);
        }
        Verdict::Continue
    }
}

pub struct DestLookupStage;
impl Stage for DestLookupStage {
    fn name(&self) -> &'static str {
        "dest_lookup"
    }
    fn run(&self, ctx: &mut Ctx<'_>) -> Verdict {
        let (Some(net), Some(parsed)) = (ctx.net, ctx.parsed.as_ref()) else {
            return Verdict::Done(Decision::Drop(DropReason::UnknownPort));
        };
        let d = decide::destination(ctx.tables, ctx.ingress, net, parsed, ctx.window);
        ctx.decision = Some(d);
        Verdict::Continue
    }
}

/// Runs after destination lookup: the unspecified source may only reach the switch itself.
pub struct UnspecifiedSourceStage;
impl Stage for UnspecifiedSourceStage {
    fn name(&self) -> &'static str {
        "unspecified_source"
    }
    fn run(&self, ctx: &mut Ctx<'_>) -> Verdict {
        let (Ingress::Port(_), Some(parsed), Some(d)) =
            (ctx.ingress, ctx.parsed.as_ref(), ctx.decision.as_ref())
        else {
            return Verdict::Continue;
        };
        if decide::unspecified_source_allowed(parsed, d) {
            Verdict::Continue
        } else {
            Verdict::Done(Decision::Drop(DropReason::UnspecifiedSource))
        }
    }
}

/// The policies of the tables: the ingress port's, the network's, then (unicast) the
/// destination port's. Frames the switch consumes or already dropped are not judged.
pub struct PolicyStage;
impl Stage for PolicyStage {
    fn name(&self) -> &'static str {
        "policy"
    }
    fn run(&self, ctx: &mut Ctx<'_>) -> Verdict {
        let (Some(d), Some(parsed), Some(net)) = (ctx.decision, ctx.parsed.as_ref(), ctx.net)
        else {
            return Verdict::Continue;
        };
        let to = match d {
            Decision::Unicast(q) => Some(q),
            Decision::Flood | Decision::Uplink | Decision::Edge => None,
            Decision::Local(_) | Decision::Drop(_) => return Verdict::Continue,
        };
        let t = ctx.tables;
        let from = match ctx.ingress {
            Ingress::Port(p) => Some(p),
            Ingress::Uplink(_) => None,
        };
        let fields = Fields::of(parsed, ctx.window);
        let attached = from
            .map(|p| t.port(p).policies.as_slice())
            .into_iter()
            .chain(std::iter::once(t.net(net).policies.as_slice()))
            .chain(to.map(|q| t.port(q).policies.as_slice()))
            .flatten();
        for &pol in attached {
            if let StageVerdict::Drop(r) = policy::evaluate(t.rules(pol), &fields, &mut ctx.mirror)
            {
                ctx.mirror = None;
                return Verdict::Done(Decision::Drop(r));
            }
        }
        Verdict::Continue
    }
}

/// The switching pipeline: fixed built-in stages plus pluggable hooks on the uplink path.
#[derive(Clone, Default)]
pub struct Pipeline {
    uplink_hooks: Vec<Arc<dyn Stage>>,
}

impl Pipeline {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a stage that sees every frame going to or coming from an uplink, after the
    /// destination is known; it may return `Done(Drop(..))` to veto delivery.
    pub fn add_uplink_hook(&mut self, s: Arc<dyn Stage>) {
        self.uplink_hooks.push(s);
    }

    /// Runs all stages. Built-ins are called directly (static dispatch: the hot path has no
    /// virtual calls unless hooks are installed).
    pub fn classify(&self, ctx: &mut Ctx<'_>) -> Decision {
        macro_rules! step {
            ($s:expr) => {
                if let Verdict::Done(d) = $s.run(ctx) {
                    return d;
                }
            };
        }
        step!(ParseStage);
        step!(AntiSpoofStage);
        step!(NetworkLookupStage);
        step!(DestLookupStage);
        step!(UnspecifiedSourceStage);
        if ctx.tables.has_policies() {
            step!(PolicyStage);
        }
        let Some(decision) = ctx.decision else {
            return Decision::Drop(DropReason::NoRoute);
        };
        let crosses_uplink = matches!(ctx.ingress, Ingress::Uplink(_))
            || matches!(
                decision,
                Decision::Uplink | Decision::Edge | Decision::Flood
            );
        if crosses_uplink {
            for h in &self.uplink_hooks {
                if let Verdict::Done(d) = h.run(ctx) {
                    return d;
                }
            }
        }
        ctx.decision.unwrap_or(decision)
    }
}
