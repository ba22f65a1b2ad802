//! The blk_request fuzz target's body on pseudo-random inputs (mutations of valid requests),
//! so CI exercises it on stable without cargo-fuzz.

use hostel_storage::fuzzing;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn desc(out: &mut Vec<u8>, addr: u64, len: u32, flags: u8) {
    out.extend_from_slice(&addr.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.push(flags);
}

/// A valid request: capacity byte, three descriptors; memory at 0x100 holds the header.
fn seed(kind: u32) -> Vec<u8> {
    let mut v = vec![200u8];
    desc(&mut v, 0x100, 16, 2);
    desc(&mut v, 0x200, 512, 2 | u8::from(kind == 0));
    desc(&mut v, 0x300, 1, 3);
    v.resize(0x400, 0);
    v[0x100..0x104].copy_from_slice(&kind.to_le_bytes());
    v[0x200..0x208].copy_from_slice(&3u64.to_le_bytes());
    v[0x208..0x20c].copy_from_slice(&8u32.to_le_bytes());
    v
}

#[test]
fn blk_request_on_random_inputs() {
    let mut rng = Rng(0x5eed);
    let seeds: Vec<Vec<u8>> = [0u32, 1, 4, 8, 11, 13, 77]
        .iter()
        .map(|&k| seed(k))
        .collect();
    for i in 0..200_000 {
        let mut input = seeds[i % seeds.len()].clone();
        for _ in 0..(1 + rng.next() % 6) {
            let at = (rng.next() % input.len() as u64) as usize;
            input[at] = rng.next() as u8;
        }
        if rng.next() % 8 == 0 {
            input.truncate((rng.next() % input.len() as u64) as usize);
        }
        fuzzing::blk_request(&input);
    }
}
