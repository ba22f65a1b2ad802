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

/// A memory image with a descriptor table at 0, avail ring at 0x100, used at 0x200 and
/// buffers above, filled with plausible-but-hostile values.
fn guest_image(rng: &mut Rng) -> Vec<u8> {
    let mut img: Vec<u8> = (0..0x4000).map(|_| rng.next() as u8).collect();
    for d in 0..16u64 {
        let off = (d * 16) as usize;
        let addr = match rng.below(4) {
            0 => rng.next(),
            _ => 0x400 + rng.below(0x3000),
        };
        let len = match rng.below(4) {
            0 => rng.next() as u32,
            1 => 12,
            _ => rng.below(0x800) as u32,
        };
        let flags = (rng.below(8) as u16) & if rng.below(3) == 0 { 7 } else { 3 };
        let next = rng.below(20) as u16;
        img[off..off + 8].copy_from_slice(&addr.to_le_bytes());
        img[off + 8..off + 12].copy_from_slice(&len.to_le_bytes());
        img[off + 12..off + 14].copy_from_slice(&flags.to_le_bytes());
        img[off + 14..off + 16].copy_from_slice(&next.to_le_bytes());
    }
    let idx = rng.below(20) as u16;
    img[0x100..0x102].fill(0);
    img[0x102..0x104].copy_from_slice(&idx.to_le_bytes());
    for s in 0..16 {
        let o = 0x104 + 2 * s;
        img[o..o + 2].copy_from_slice(&(rng.below(18) as u16).to_le_bytes());
    }
    img[0x200..0x204].fill(0);
    img
}

#[test]
fn descriptor_chain_target_survives_hostile_rings() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..1_500 {
        let mut data = guest_image(&mut rng);
        data.extend(guest_image(&mut rng));
        fuzzing::descriptor_chain(&data);
    }
    // And pure noise.
    for _ in 0..200 {
        let data: Vec<u8> = (0..rng.below(0x8000)).map(|_| rng.next() as u8).collect();
        fuzzing::descriptor_chain(&data);
    }
}
