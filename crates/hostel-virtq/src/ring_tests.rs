use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::driver::SplitRing;
use crate::log::{DirtyLog, LOG_PAGE};

fn queue(r: &SplitRing) -> Queue {
    queue_at(r.size(), r.desc(), r.avail(), r.used())
}

fn queue_at(size: u16, desc: u64, avail: u64, used: u64) -> Queue {
    let mut q = Queue::new(size).unwrap();
    q.set_desc_table_address(Some(desc as u32), Some(0));
    q.set_avail_ring_address(Some(avail as u32), Some(0));
    q.set_used_ring_address(Some(used as u32), Some(0));
    q.set_ready(true);
    q
}

fn setup() -> (GuestMemoryMmap<()>, SplitRing, Queue) {
    let m = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), 0x10000),
        (GuestAddress(0x10000), 0x10000),
    ])
    .unwrap();
    let (r, _) = SplitRing::new(&m, 0x1000, 16).unwrap();
    let q = queue(&r);
    (m, r, q)
}

fn write_desc(m: &GuestMemoryMmap<()>, at: u64, d: (u64, u32, u16, u16)) {
    m.write_obj(d.0, GuestAddress(at)).unwrap();
    m.write_obj(d.1, GuestAddress(at + 8)).unwrap();
    m.write_obj(d.2, GuestAddress(at + 12)).unwrap();
    m.write_obj(d.3, GuestAddress(at + 14)).unwrap();
}

#[test]
fn chains_split_at_regions_and_used_entries_land() {
    let (m, mut r, q) = setup();
    let head = r
        .push(&[(0xff00, 0x200, false), (0x3000, 0x10, false)])
        .unwrap();
    r.publish();
    let map = MemMap::new(&m);
    let ring = Ring::new(&q, &map).unwrap();
    assert_eq!(ring.pending(0), Some(1));
    assert_eq!(ring.avail_head(0), head);
    let mut l = SegList::default();
    ring.gather(head, false, 1 << 20, &mut l).unwrap();
    assert_eq!((l.len(), l.total()), (3, 0x210));
    assert_eq!(l.as_slice()[1].addr(), 0x10000);
    assert_eq!(
        ring.gather(head, true, 1 << 20, &mut l),
        Err(Error::WrongDirection)
    );
    assert_eq!(
        ring.gather(head, false, 0x100, &mut l),
        Err(Error::TooLong { max: 0x100 })
    );
    assert_eq!(
        ring.gather(16, false, 1 << 20, &mut l),
        Err(Error::IndexOutOfRange {
            index: 16,
            size: 16
        })
    );
    ring.put_used(0, head, 7);
    ring.publish_used(1);
    assert!(ring.needs_interrupt(0, 1));
    assert_eq!(r.pop_used(), Some((head, 7)));
}

#[test]
fn loops_and_outside_buffers_are_refused() {
    let (m, _r, q) = setup();
    // Descriptor 0 points to itself; descriptor 1 lies past the end of memory.
    let d = q.desc_table();
    write_desc(&m, d, (0x2000, 16, F_NEXT, 0));
    write_desc(&m, d + 16, (0x1_fff0, 0x100, 0, 0));
    let map = MemMap::new(&m);
    let ring = Ring::new(&q, &map).unwrap();
    let mut l = SegList::default();
    assert_eq!(
        ring.gather(0, false, usize::MAX, &mut l),
        Err(Error::ChainTooLong)
    );
    assert_eq!(l.visits(), 16, "a loop costs at most the ring's size");
    assert_eq!(
        ring.gather(1, false, usize::MAX, &mut l),
        Err(Error::OutsideMemory {
            addr: 0x1_fff0,
            len: 0x100
        })
    );
}

#[test]
fn indirect_tables_are_followed_once() {
    let (m, _r, q) = setup();
    let d = q.desc_table();
    // Descriptor 0 -> indirect table at 0x4000 holding two readable buffers.
    write_desc(&m, d, (0x4000, 32, F_INDIRECT, 0));
    write_desc(&m, 0x4000, (0x5000, 100, F_NEXT, 1));
    write_desc(&m, 0x4010, (0x6000, 50, 0, 0));
    // Descriptor 1 -> indirect table whose entry is itself indirect.
    write_desc(&m, d + 16, (0x4100, 16, F_INDIRECT, 0));
    write_desc(&m, 0x4100, (0x4000, 32, F_INDIRECT, 0));
    // Descriptor 2 -> indirect table with a length that is not whole descriptors.
    write_desc(&m, d + 32, (0x4000, 20, F_INDIRECT, 0));
    let map = MemMap::new(&m);
    let ring = Ring::new(&q, &map).unwrap();
    let mut l = SegList::default();
    ring.gather(0, false, usize::MAX, &mut l).unwrap();
    assert_eq!(
        (l.len(), l.total(), l.as_slice()[1].addr()),
        (2, 150, 0x6000)
    );
    assert_eq!(
        ring.gather(1, false, usize::MAX, &mut l),
        Err(Error::BadIndirect { len: 32 })
    );
    assert_eq!(
        ring.gather(2, false, usize::MAX, &mut l),
        Err(Error::BadIndirect { len: 20 })
    );
}

/// An indirect table of 65,535 zero-length descriptors must not be walked to its end for
/// every chain offered.
#[test]
fn a_chain_reads_at_most_max_chain_descs() {
    let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
    let (r, _) = SplitRing::new(&m, 0x1000, 16).unwrap();
    let q = queue(&r);
    const N: u64 = 65_535;
    let table = 0x10_0000;
    for i in 0..N {
        let (flags, next) = if i + 1 == N {
            (0, 0)
        } else {
            (F_NEXT, i as u16 + 1)
        };
        write_desc(&m, table + 16 * i, (0x8000, 0, flags, next));
    }
    write_desc(&m, r.desc(), (table, (16 * N) as u32, F_INDIRECT, 0));
    // A direct chain as long as the limit allows still passes.
    let long = u64::from(MAX_CHAIN_DESCS);
    for i in 0..long {
        let (flags, next) = if i + 1 == long {
            (0, 0)
        } else {
            (F_NEXT, i as u16 + 1)
        };
        write_desc(&m, 0x4000 + 16 * i, (0x8000, 1, flags, next));
    }
    write_desc(
        &m,
        r.desc() + 16,
        (0x4000, (16 * long) as u32, F_INDIRECT, 0),
    );
    let map = MemMap::new(&m);
    let ring = Ring::new(&q, &map).unwrap();
    let mut l = SegList::default();
    assert_eq!(
        ring.gather(0, false, usize::MAX, &mut l),
        Err(Error::ChainTooLong)
    );
    assert_eq!(l.visits(), MAX_CHAIN_DESCS);
    // 128 one-byte buffers overflow the segment list (MAX_SEGS) first.
    assert_eq!(
        ring.gather(1, false, usize::MAX, &mut l),
        Err(Error::TooManySegments)
    );
    assert!(l.visits() <= MAX_CHAIN_DESCS);
}

#[test]
fn interrupts_follow_the_drivers_event_index() {
    let (m, r, mut q) = setup();
    q.set_event_idx(true);
    let map = MemMap::new(&m);
    let ring = Ring::new(&q, &map).unwrap();
    // used_event sits after the avail ring's 16 entries.
    let used_event = GuestAddress(r.avail() + 4 + 2 * 16);
    m.write_obj(5u16, used_event).unwrap();
    assert!(!ring.needs_interrupt(0, 5), "event 5 not yet passed");
    assert!(ring.needs_interrupt(5, 6), "used index moved past 5");
    assert!(ring.needs_interrupt(0, 8));
    assert!(!ring.needs_interrupt(7, 7));
    // Kicks: with EVENT_IDX enabling writes avail_event and reports pending entries.
    assert!(!ring.enable_kicks(0));
    let avail_event = GuestAddress(r.used() + 4 + 8 * 16);
    assert_eq!(m.read_obj::<u16>(avail_event).unwrap(), 0);
}

#[test]
fn rings_outside_memory_or_misaligned_are_refused() {
    let (m, r, q) = setup();
    let map = MemMap::new(&m);
    assert!(Ring::new(&q, &map).is_ok());
    for q in [
        queue_at(16, r.desc(), r.avail(), 0x1_fffc),
        queue_at(16, r.desc(), r.avail(), 0xfffc),
        queue_at(16, 0x1_ff80, r.avail(), r.used()),
    ] {
        assert!(matches!(Ring::new(&q, &map), Err(Error::BadRing)));
    }
}

/// With a dirty log, the device's writes mark their pages: used-ring entries and index, and
/// the RX buffers it reports written; without one nothing is recorded anywhere.
#[test]
fn used_ring_and_written_buffers_mark_the_dirty_log() {
    let (m, mut r, q) = setup();
    let head = r
        .push(&[(0x8000 - 4, 8, true), (0x1_2000, 0x3000, true)])
        .unwrap();
    r.publish();
    let log = DirtyLog::new(0x20000);
    let map = MemMap::new(&m).with_log(&log);
    let ring = Ring::new(&q, &map).unwrap();
    let mut l = SegList::default();
    ring.gather(head, true, usize::MAX, &mut l).unwrap();
    assert!(log.take_dirty().is_empty(), "reading marks nothing");
    // 8 bytes across pages 7 and 8, then 0x1001 bytes of the second buffer: pages 0x12, 0x13.
    l.mark_written(&map, 8 + 0x1001);
    ring.put_used(0, head, 8 + 0x1001);
    ring.publish_used(1);
    let used_page = r.used() / LOG_PAGE * LOG_PAGE;
    let mut want = vec![used_page, 0x7000, 0x8000, 0x12000, 0x13000];
    want.sort_unstable();
    assert_eq!(log.take_dirty(), want);
    let plain = MemMap::new(&m);
    let ring = Ring::new(&q, &plain).unwrap();
    ring.put_used(1, head, 0);
    l.mark_written(&plain, 8);
    assert!(log.take_dirty().is_empty());
}

#[test]
fn the_driver_recycles_what_the_device_used() {
    let (m, mut r, q) = setup();
    for i in 0..16u16 {
        r.write_desc(i, 0x8000 + 0x100 * u64::from(i), 0x100, F_WRITE, 0);
    }
    for _ in 0..16 {
        assert!(r.repost().is_some());
    }
    assert!(r.repost().is_none(), "every descriptor is in flight");
    r.publish();
    assert_eq!(r.in_flight(), 16);
    let map = MemMap::new(&m);
    let ring = Ring::new(&q, &map).unwrap();
    assert_eq!(ring.pending(0), Some(16));
    for pos in 0..3 {
        ring.put_used(pos, ring.avail_head(pos), 0x100);
    }
    ring.publish_used(3);
    assert_eq!(r.reap(), 3);
    assert_eq!(r.free_descriptors(), 3);
    ring.disable_kicks();
    assert!(r.device_suppresses_kicks());
}
