//! The scan_sigs fuzz target's body on mutated signature lines, so CI exercises the parsers
//! and the compiler with hostile text on stable without cargo-fuzz.

use hostel_scan::compare::{NDB, YARA_RULES};
use hostel_scan::fuzzing::scan_sigs;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

const HASHES: &str = "44d88612fea8a8f36de82e1278abb02f:68:Eicar.Md5\n\
3395856ce81f2b7382dee72602f798b642f14140:68:Eicar.Sha1\n\
275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f:*:Eicar.Sha256:73\n";

const ALPHABET: &[u8] = b"0123456789abcdef?*{}[]()|!-,:EOF+ \n\"$=";

#[test]
fn scan_sigs_on_mutated_signatures() {
    let mut rng = Rng(0x5ca9);
    let seeds: [(u8, &str); 4] = [(0, HASHES), (1, HASHES), (2, NDB), (3, YARA_RULES)];
    for i in 0..4000 {
        let (kind, text) = seeds[i % seeds.len()];
        let mut input = vec![kind];
        input.extend_from_slice(text.as_bytes());
        for _ in 0..(1 + rng.next() % 8) {
            let at = 1 + (rng.next() % (input.len() as u64 - 1)) as usize;
            let c = ALPHABET[(rng.next() % ALPHABET.len() as u64) as usize];
            match rng.next() % 3 {
                0 => input[at] = c,
                1 => input.insert(at, c),
                _ => {
                    input.remove(at);
                }
            }
            if input.len() < 2 {
                input.push(b'0');
            }
        }
        scan_sigs(&input);
    }
}
