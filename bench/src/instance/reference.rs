//! The `instance` scenario's CPU reference: SHA-256 (FIPS 180-4) of 1 KiB messages, in plain
//! Rust with no dependency, so the workload is the same code on every toolchain and machine.
//! One reference op = the digest of one 1,024-byte message (17 compressions with the padding).
//! It runs in the same process, on the same core, interleaved with the rules-engine replay, so
//! `rules_vs_reference` (rules commands per reference op) cancels out how fast the core was
//! during this run.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// The size of one reference message.
pub const BLOCK: usize = 1024;

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
];

const H0: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

fn compress(state: &mut [u32; 8], block: &[u8]) {
    let mut w = [0u32; 64];
    for (i, word) in block.chunks_exact(4).enumerate() {
        w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
    }
    for i in 16..64 {
        let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
        let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
    }
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    for i in 0..64 {
        let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
        let ch = (e & f) ^ (!e & g);
        let t1 = h.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
        let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
        let maj = (a & b) ^ (a & c) ^ (b & c);
        let t2 = s0.wrapping_add(maj);
        (h, g, f, e, d, c, b, a) = (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = s.wrapping_add(v);
    }
}

/// The SHA-256 digest of `message`.
pub fn sha256(message: &[u8]) -> [u8; 32] {
    let mut state = H0;
    let mut chunks = message.chunks_exact(64);
    for block in &mut chunks {
        compress(&mut state, block);
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let len = if rest.len() < 56 { 64 } else { 128 };
    tail[len - 8..len].copy_from_slice(&((message.len() as u64) * 8).to_be_bytes());
    for block in tail[..len].chunks_exact(64) {
        compress(&mut state, block);
    }
    let mut out = [0u8; 32];
    for (o, s) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&s.to_be_bytes());
    }
    out
}

/// Checks the implementation against the FIPS 180-4 examples; the worker refuses to measure a
/// reference that is not SHA-256.
pub fn self_check() -> Result<(), String> {
    let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let cases: [(&[u8], &str); 3] = [
        (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
    ];
    for (input, want) in cases {
        let got = hex(sha256(input));
        if got != want {
            return Err(format!("sha256({:?}) = {got}, expected {want}", String::from_utf8_lossy(input)));
        }
    }
    Ok(())
}

/// Digests 1 KiB messages for about `window`; returns (messages digested, seconds taken). Each
/// message starts with the previous digest, so no digest can be skipped or hoisted.
pub fn run(window: Duration) -> (u64, f64) {
    let mut message = [0u8; BLOCK];
    for (i, b) in message.iter_mut().enumerate() {
        *b = (i * 31 % 251) as u8;
    }
    let started = Instant::now();
    let mut ops = 0u64;
    while started.elapsed() < window {
        // Check the clock every 256 digests (~1 ms): cheap against 17 compressions each.
        for _ in 0..256 {
            let digest = sha256(black_box(&message));
            message[..32].copy_from_slice(&digest);
            ops += 1;
        }
    }
    black_box(&message);
    (ops, started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_fips_examples() {
        assert_eq!(super::self_check(), Ok(()));
        // The 56-byte example above takes the two-block padding path; this one many full blocks.
        let d = super::sha256(&vec![b'a'; 1_000_000]);
        assert_eq!(d[..4], [0xcd, 0xc7, 0x6e, 0x5c]);
    }
}
