//! The inline tier (library side): every acknowledged write goes into a bounded queue; a
//! background scanner takes them tenant by tenant (round robin, each tenant paced by a token
//! bucket so one tenant's churn cannot starve the others) and scans each written range with
//! its neighbouring bytes read back through the volume's [`BlockSource`], so a pattern
//! spanning two writes or two clusters is found. A write the queue cannot take (full, or the
//! tenant over its share) is recorded as a dirty range for the file-level tier, never dropped.
//!
//! `hostel-storage`'s write path will call [`WriteObserver::written`] after it acknowledges a
//! write; the call only copies the bytes into the queue (or records the range) and never
//! blocks or fails the guest's I/O.

use crate::engine::{Engine, SigKind, StreamMatcher};
use crate::fs::BlockSource;
use crate::matcher::{FileKind, Window, BUDGET_FIXED, BUDGET_PER_BYTE};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The hook for the storage backend's write path: called after a write is acknowledged.
pub trait WriteObserver: Send + Sync {
    /// Must return at once: queue the bytes or record the range dirty.
    fn written(&self, tenant: &str, volume: &str, offset: u64, data: &[u8]);
}

/// One acknowledged write waiting to be scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRange {
    pub tenant: String,
    pub volume: String,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// A range left for the file-level tier (the queue could not take it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DirtyRange {
    pub offset: u64,
    pub len: u64,
}

/// A signature found in a volume's written bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InlineHit {
    pub tenant: String,
    pub volume: String,
    /// Where the match starts (body signatures) or the write's offset (YARA).
    pub offset: u64,
    pub signature: String,
    pub kind: SigKind,
}

#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Bytes queued at most, all tenants together.
    pub max_bytes: usize,
    /// Bytes queued at most for one tenant.
    pub max_tenant_bytes: usize,
    /// Bytes per second one tenant's writes are scanned at, at most (its budget).
    pub tenant_rate: u64,
    /// A tenant's burst above its rate.
    pub tenant_burst: u64,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_bytes: 256 << 20,
            max_tenant_bytes: 64 << 20,
            tenant_rate: 64 << 20,
            tenant_burst: 16 << 20,
        }
    }
}

/// Whether a write was queued or left for the file-level tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    Queued,
    Dirty,
}

#[derive(Debug)]
struct Bucket {
    tokens: u64,
    last: Instant,
}

#[derive(Debug)]
struct TenantQueue {
    items: VecDeque<WriteRange>,
    bytes: usize,
    bucket: Bucket,
}

#[derive(Debug, Default)]
struct State {
    tenants: BTreeMap<String, TenantQueue>,
    /// The tenant served last (round robin continues after it).
    cursor: Option<String>,
    bytes: usize,
    dirty: BTreeMap<(String, String), Vec<DirtyRange>>,
    closed: bool,
}

/// The bounded queue between the write path and the scanner.
#[derive(Debug)]
pub struct InlineQueue {
    limits: QueueLimits,
    state: Mutex<State>,
    ready: Condvar,
}

impl InlineQueue {
    pub fn new(limits: QueueLimits) -> Self {
        InlineQueue {
            limits,
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a write, or records it dirty when the queue or the tenant's share is full.
    pub fn submit(&self, w: WriteRange, now: Instant) -> Submitted {
        let mut st = self.lock();
        let len = w.data.len();
        let tenant_bytes = st.tenants.get(&w.tenant).map(|t| t.bytes).unwrap_or(0);
        if st.closed
            || st.bytes + len > self.limits.max_bytes
            || tenant_bytes + len > self.limits.max_tenant_bytes
        {
            mark_dirty(&mut st, &w.tenant, &w.volume, w.offset, len as u64);
            tracing::debug!(tenant = %w.tenant, volume = %w.volume, offset = w.offset, len, "inline queue full: range left for the file-level tier");
            return Submitted::Dirty;
        }
        st.bytes += len;
        let burst = self.limits.tenant_burst;
        let t = st
            .tenants
            .entry(w.tenant.clone())
            .or_insert_with(|| TenantQueue {
                items: VecDeque::new(),
                bytes: 0,
                bucket: Bucket {
                    tokens: burst,
                    last: now,
                },
            });
        t.bytes += len;
        t.items.push_back(w);
        drop(st);
        self.ready.notify_one();
        Submitted::Queued
    }

    /// The next write to scan: tenants in turn, each only while its bucket has tokens.
    pub fn pop(&self, now: Instant) -> Option<WriteRange> {
        let mut st = self.lock();
        self.pop_locked(&mut st, now)
    }

    fn pop_locked(&self, st: &mut State, now: Instant) -> Option<WriteRange> {
        let names: Vec<String> = st.tenants.keys().cloned().collect();
        if names.is_empty() {
            return None;
        }
        let start = match &st.cursor {
            Some(c) => names.iter().position(|n| n > c).unwrap_or(0),
            None => 0,
        };
        let (rate, burst) = (self.limits.tenant_rate, self.limits.tenant_burst);
        for k in 0..names.len() {
            let name = &names[(start + k) % names.len()];
            let Some(t) = st.tenants.get_mut(name) else {
                continue;
            };
            refill(&mut t.bucket, now, rate, burst);
            let Some(front) = t.items.front() else {
                continue;
            };
            let len = front.data.len() as u64;
            // A write larger than the burst goes once the bucket is full.
            if t.bucket.tokens < len.min(burst) {
                continue;
            }
            t.bucket.tokens = t.bucket.tokens.saturating_sub(len);
            let w = t.items.pop_front()?;
            t.bytes -= w.data.len();
            let empty = t.items.is_empty();
            st.bytes -= w.data.len();
            st.cursor = Some(name.clone());
            if empty {
                st.tenants.remove(name);
            }
            return Some(w);
        }
        None
    }

    /// Blocks until a write is ready (or `timeout`); None when closed or timed out.
    pub fn pop_wait(&self, timeout: Duration) -> Option<WriteRange> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            if let Some(w) = self.pop_locked(&mut st, now) {
                return Some(w);
            }
            if (st.closed && st.bytes == 0) || now >= deadline {
                return None;
            }
            // Writes may be waiting on a bucket: look again after a refill's worth of time.
            let wait = (deadline - now).min(Duration::from_millis(10));
            st = match self.ready.wait_timeout(st, wait) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Stops taking writes (later ones become dirty) and wakes the scanner.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Hands over the dirty ranges (merged per volume) to the file-level tier.
    pub fn take_dirty(&self) -> BTreeMap<(String, String), Vec<DirtyRange>> {
        std::mem::take(&mut self.lock().dirty)
    }

    /// Bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl WriteObserver for InlineQueue {
    fn written(&self, tenant: &str, volume: &str, offset: u64, data: &[u8]) {
        self.submit(
            WriteRange {
                tenant: tenant.to_string(),
                volume: volume.to_string(),
                offset,
                data: data.to_vec(),
            },
            Instant::now(),
        );
    }
}

fn refill(b: &mut Bucket, now: Instant, rate: u64, burst: u64) {
    let dt = now.saturating_duration_since(b.last);
    let add = (dt.as_nanos().saturating_mul(u128::from(rate)) / 1_000_000_000) as u64;
    if add > 0 {
        b.tokens = b.tokens.saturating_add(add).min(burst);
        b.last = now;
    }
}

/// Adds a range to a volume's dirty list, merging overlapping and adjacent ranges.
fn mark_dirty(st: &mut State, tenant: &str, volume: &str, offset: u64, len: u64) {
    let list = st
        .dirty
        .entry((tenant.to_string(), volume.to_string()))
        .or_default();
    let mut lo = offset;
    let mut hi = offset.saturating_add(len);
    list.retain(|r| {
        let (a, b) = (r.offset, r.offset.saturating_add(r.len));
        if a <= hi && lo <= b {
            lo = lo.min(a);
            hi = hi.max(b);
            false
        } else {
            true
        }
    });
    let pos = list.partition_point(|r| r.offset < lo);
    list.insert(
        pos,
        DirtyRange {
            offset: lo,
            len: hi - lo,
        },
    );
}

/// Which signatures apply to a tenant's volumes: the operator's, plus the tenant's own YARA
/// rules (never another tenant's).
#[derive(Default)]
pub struct TenantEngines {
    operator: RwLock<Option<Arc<Engine>>>,
    tenants: RwLock<HashMap<String, Arc<Engine>>>,
}

impl TenantEngines {
    pub fn set_operator(&self, e: Arc<Engine>) {
        *self.operator.write().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    pub fn set_tenant(&self, tenant: &str, e: Arc<Engine>) {
        self.tenants
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.to_string(), e);
    }

    pub fn for_tenant(&self, tenant: &str) -> Vec<Arc<Engine>> {
        let mut v: Vec<Arc<Engine>> = self
            .operator
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        if let Some(e) = self
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
        {
            v.push(e.clone());
        }
        v
    }
}

/// Longest neighbourhood read on each side of a write.
pub const NEIGHBOUR_CAP: usize = 64 << 10;

/// Scans one write with its neighbours: matches that overlap the written bytes are reported
/// (one per signature); bytes before and after come from the volume as it is now.
pub fn scan_write(
    engines: &[Arc<Engine>],
    src: &dyn BlockSource,
    w: &WriteRange,
) -> Vec<InlineHit> {
    let mut hits = Vec::new();
    for engine in engines {
        let keep = engine.tail_len(NEIGHBOUR_CAP) as u64;
        let vol_len = src.len();
        let before_start = w.offset.saturating_sub(keep);
        let before_len = if w.offset <= vol_len {
            (w.offset - before_start) as usize
        } else {
            0
        };
        let end = w.offset.saturating_add(w.data.len() as u64);
        let after_len = (end.saturating_add(keep).min(vol_len).saturating_sub(end)) as usize;
        let mut window = vec![0u8; before_len];
        if src.read_at(before_start, &mut window).is_err() {
            window.clear();
        }
        let before = window.len();
        let base = w.offset - before as u64;
        window.extend_from_slice(&w.data);
        let mut after = vec![0u8; after_len];
        if src.read_at(end, &mut after).is_ok() {
            window.extend_from_slice(&after);
        }
        let win = Window {
            base,
            file_len: None,
            kind: FileKind::Unknown,
            end_after: before,
            start_before: before + w.data.len(),
        };
        let mut found = vec![false; engine.body.len()];
        let mut budget = BUDGET_FIXED + BUDGET_PER_BYTE * window.len() as u64;
        let complete = engine
            .body
            .scan(&window, &win, &mut found, &mut budget, |i, at| {
                hits.push(InlineHit {
                    tenant: w.tenant.clone(),
                    volume: w.volume.clone(),
                    offset: at,
                    signature: engine.body.name(i).to_string(),
                    kind: SigKind::Body,
                })
            });
        if !complete {
            tracing::warn!(tenant = %w.tenant, volume = %w.volume, offset = w.offset, "inline scan out of budget");
        }
        if let Some(y) = &engine.yara {
            for name in y.scan(&window).0 {
                hits.push(InlineHit {
                    tenant: w.tenant.clone(),
                    volume: w.volume.clone(),
                    offset: w.offset,
                    signature: name,
                    kind: SigKind::Yara,
                });
            }
        }
    }
    hits
}

/// Scans a volume's bytes as one stream from `offset` (a volume read whole, or a range the
/// queue left dirty), in buffers of `chunk` bytes.
pub fn scan_volume_range(
    engine: &Engine,
    src: &dyn BlockSource,
    offset: u64,
    len: u64,
    chunk: usize,
) -> Result<Vec<crate::Finding>, std::io::Error> {
    let mut m = StreamMatcher::new(engine, None, NEIGHBOUR_CAP).at(offset);
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk.max(4096)];
    let end = offset.saturating_add(len).min(src.len());
    let mut pos = offset;
    while pos < end {
        let n = ((end - pos) as usize).min(buf.len());
        src.read_at(pos, &mut buf[..n])?;
        m.feed(&buf[..n], &mut out);
        pos += n as u64;
    }
    Ok(out)
}

/// Where the scanner finds a volume's bytes (the pool's volumes plug in here).
pub trait VolumeSource: Send + Sync {
    fn volume(&self, tenant: &str, volume: &str) -> Option<Arc<dyn BlockSource>>;
}

/// The scanner thread's loop: takes writes until the queue is closed and empty, scans each
/// with the tenant's signatures, hands hits to `sink`.
pub fn run_scanner(
    queue: &InlineQueue,
    engines: &TenantEngines,
    volumes: &dyn VolumeSource,
    mut sink: impl FnMut(InlineHit),
) {
    loop {
        let Some(w) = queue.pop_wait(Duration::from_millis(100)) else {
            if queue.lock().closed && queue.queued_bytes() == 0 {
                return;
            }
            continue;
        };
        let Some(src) = volumes.volume(&w.tenant, &w.volume) else {
            tracing::debug!(tenant = %w.tenant, volume = %w.volume, "inline scan: volume gone");
            continue;
        };
        for hit in scan_write(&engines.for_tenant(&w.tenant), src.as_ref(), &w) {
            tracing::warn!(tenant = %hit.tenant, volume = %hit.volume, offset = hit.offset, signature = %hit.signature, "signature found in a write");
            sink(hit);
        }
    }
}
