//! The fuzz targets' bodies run on bounded pseudo-random inputs, so CI exercises them on
//! stable without cargo-fuzz. Inputs are structured mutations (valid frames with flipped
//! bytes, plausible descriptor tables) so they get past the first length check.

use hostel_switch::fuzzing;

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed_frames() -> Vec<Vec<u8>> {
    let mut arp = vec![0u8; 42];
    arp[0..6].copy_from_slice(&[0xff; 6]);
    arp[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 2]);
    arp[12..22].copy_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp[22..28].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 2]);
    arp[28..32].copy_from_slice(&[10, 0, 0, 2]);
    arp[38..42].copy_from_slice(&[10, 0, 0, 1]);
    let mut dhcp = vec![0u8; 42 + 240];
    dhcp[0..6].copy_from_slice(&[0xff; 6]);
    dhcp[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 2]);
    dhcp[12..14].copy_from_slice(&[8, 0]);
    dhcp[14] = 0x45;
    dhcp[23] = 17;
    dhcp[30..34].copy_from_slice(&[255; 4]);
    dhcp[34..38].copy_from_slice(&[0, 68, 0, 67]);
    dhcp[42..45].copy_from_slice(&[1, 1, 6]);
    dhcp[70..76].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 2]);
    dhcp[278..282].copy_from_slice(&[99, 130, 83, 99]);
    dhcp.extend_from_slice(&[53, 1, 1, 50, 4, 10, 0, 0, 2, 255]);
    let mut ns = vec![0u8; 86];
    ns[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 2]);
    ns[12..14].copy_from_slice(&[0x86, 0xdd]);
    ns[14] = 0x60;
    ns[19] = 32;
    ns[20] = 58;
    ns[21] = 255;
    ns[54] = 135;
    vec![arp, dhcp, ns]
}

fn mutate(rng: &mut Rng, mut v: Vec<u8>) -> Vec<u8> {
    for _ in 0..=rng.below(8) {
        match rng.below(4) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len() as u64) as usize;
                v[i] = rng.next() as u8;
            }
            1 => v.truncate(rng.below(v.len() as u64 + 1) as usize),
            2 => v.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
            _ => {}
        }
    }
    v
}

#[test]
fn frame_target_survives_random_frames() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds = seed_frames();
    for i in 0..20_000 {
        let base = seeds[i % seeds.len()].clone();
        fuzzing::frame(&mutate(&mut rng, base));
    }
}

#[test]
fn external_frame_target_survives_random_frames() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut seeds = seed_frames();
    // Frames the external port acts on: IPv4 to its MAC for a routed tenant address, ARP
    // for an outside address, and a ring block of two frames.
    let mut ip = vec![0u8; 60];
    ip[0..6].copy_from_slice(&[0x02, 0, 0x5e, 0, 0, 1]);
    ip[12..16].copy_from_slice(&[8, 0, 0x45, 0]);
    ip[16..18].copy_from_slice(&40u16.to_be_bytes());
    ip[22] = 64;
    ip[23] = 17;
    ip[30..34].copy_from_slice(&[10, 0, 0, 2]);
    let mut arp = seeds[0].clone();
    arp[38..42].copy_from_slice(&[203, 0, 113, 10]);
    let mut block = vec![0u8; 512];
    block[12..16].copy_from_slice(&2u32.to_ne_bytes());
    block[16..20].copy_from_slice(&48u32.to_ne_bytes());
    block[48..52].copy_from_slice(&128u32.to_ne_bytes());
    block[60..64].copy_from_slice(&60u32.to_ne_bytes());
    block[64..68].copy_from_slice(&60u32.to_ne_bytes());
    block[72..74].copy_from_slice(&66u16.to_ne_bytes());
    seeds.extend([ip, arp, block]);
    for i in 0..20_000 {
        let base = seeds[i % seeds.len()].clone();
        fuzzing::external_frame(&mutate(&mut rng, base));
    }
}

/// Input the descriptor-chain target decodes into two guests' rings. Descriptors are biased
/// towards pointing at each other's data and at the payload so chains actually get walked.
fn ring_input(rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    for _guest in 0..2 {
        // Memory layout: one region, a hole, many small regions, odd sizes.
        v.push(rng.below(4) as u8);
        for _ in 0..16 {
            v.push((rng.below(8) as u8) << 2 | u8::from(rng.below(8) == 0));
            let addr = 0x400 + rng.below(0x8000);
            v.extend_from_slice(&addr.to_le_bytes());
            let len = match rng.below(3) {
                0 => 12 + rng.below(80),
                1 => rng.below(4096),
                _ => rng.next() & 0xffff_ffff,
            } as u32;
            v.extend_from_slice(&len.to_le_bytes());
            v.push(rng.below(20) as u8);
        }
        v.push(rng.below(20) as u8);
        v.extend((0..16).map(|_| rng.below(18) as u8));
        // A plausible Ethernet/IPv4 frame after a zeroed virtio-net header, then noise.
        let mut payload = vec![0u8; 12];
        payload.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 3, 0x52, 0x54, 0, 0, 0, 2, 8, 0, 0x45]);
        payload.extend((0..497).map(|_| {
            if rng.below(4) == 0 {
                rng.next() as u8
            } else {
                0
            }
        }));
        payload[26 + 12..30 + 12].copy_from_slice(&[10, 0, 0, 2]);
        payload[30 + 12..34 + 12].copy_from_slice(&[10, 0, 0, 3]);
        v.extend_from_slice(&payload);
    }
    v.push(rng.next() as u8);
    v
}

#[test]
fn descriptor_chain_target_survives_hostile_rings() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..1_500 {
        let data = ring_input(&mut rng);
        let cut = rng.below(data.len() as u64 + 1) as usize;
        let data = if rng.below(8) == 0 {
            &data[..cut]
        } else {
            &data[..]
        };
        fuzzing::descriptor_chain(data);
    }
    for _ in 0..200 {
        let data: Vec<u8> = (0..rng.below(0x1000)).map(|_| rng.next() as u8).collect();
        fuzzing::descriptor_chain(&data);
    }
}

/// Input for the vhost-message target: a request, descriptors of chosen kinds and sizes,
/// and a memory table whose regions are near the files' sizes (inside, at the edge, past).
fn message_input(rng: &mut Rng) -> Vec<u8> {
    let mut v = vec![rng.below(4) as u8];
    let nfds = 1 + rng.below(3) as u8;
    v.push(nfds);
    let mut sizes = Vec::new();
    for _ in 0..nfds {
        // Mostly sealed or unsealed memfds, some eventfds; sizes in 4 KiB units.
        let kind = (rng.below(3) as u8) | ((rng.below(2) as u8) << 4) | (12 << 5);
        let pages = 1 + rng.below(64) as u32;
        v.push(kind);
        v.extend_from_slice(&pages.to_le_bytes());
        sizes.push(u64::from(pages) << 12);
    }
    let n = if rng.below(8) == 0 {
        rng.below(6)
    } else {
        u64::from(nfds)
    };
    v.extend_from_slice(&(n as u32).to_le_bytes());
    v.extend_from_slice(&[0; 4]);
    for i in 0..n as usize {
        let file = sizes.get(i).copied().unwrap_or(4096);
        let (size, offset) = match rng.below(4) {
            0 => (file, 0),
            1 => (file - 4096, 4096),
            2 => (file, 4096),
            _ => (rng.next(), rng.next()),
        };
        for field in [(i as u64) << 32, size, 0x7f00_0000_0000, offset] {
            v.extend_from_slice(&field.to_le_bytes());
        }
    }
    v
}

#[test]
fn vhost_message_target_accepts_only_safe_memory() {
    let mut rng = Rng(0x0ddb_a11c_afe5_eed5);
    for _ in 0..2_000 {
        fuzzing::vhost_message(&message_input(&mut rng));
    }
    for _ in 0..500 {
        let data: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
        fuzzing::vhost_message(&data);
    }
}
