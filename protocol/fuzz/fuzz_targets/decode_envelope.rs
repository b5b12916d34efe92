//! Fuzz target: arbitrary bytes through every envelope decoder and the frame decoder. A crash is
//! a panic, an overflow or a decoded message that does not survive a re-encode.
//!
//! Build and run on stable without cargo-fuzz (from the repository root):
//!     cargo build --release --manifest-path protocol/fuzz/Cargo.toml
//!     protocol/fuzz/target/release/decode_envelope -runs=20000 -max_len=4096
//! Coverage-guided on stable (instrumented like cargo-fuzz does, without a sanitizer), starting
//! from the committed seeds (one encoded message of every kind) and growing a corpus beside them:
//!     RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
//!       -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
//!       -Cllvm-args=-sanitizer-coverage-trace-compares" \
//!     cargo build --release --manifest-path protocol/fuzz/Cargo.toml --target x86_64-unknown-linux-gnu
//!     mkdir -p protocol/fuzz/corpus/decode_envelope
//!     protocol/fuzz/target/x86_64-unknown-linux-gnu/release/decode_envelope \
//!       protocol/fuzz/corpus/decode_envelope protocol/fuzz/seeds/decode_envelope -max_total_time=60
//! With cargo-fuzz on nightly (adds AddressSanitizer):
//!     cd protocol && cargo +nightly fuzz run decode_envelope fuzz/seeds/decode_envelope -- -max_total_time=60
//! The seeds were written from tests/support's samples; regenerate them only if the wire changes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::tavern::{ClientMessageT, ServerMessageT, ServiceMessageT};
use protocol::{Codec, Envelope, FrameDecoder, Limits};

fuzz_target!(|data: &[u8]| {
    let codec = Codec::default();
    round_trip::<ClientMessageT>(&codec, data);
    round_trip::<ServerMessageT>(&codec, data);
    round_trip::<ServiceMessageT>(&codec, data);

    // The same bytes as a framed stream, read in pieces whose size the first byte picks, each
    // frame decoded as a service message (the envelope stream links carry).
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let read_size = usize::from(first % 64) + 1;
    let mut frames = FrameDecoder::new(1024);
    for read in stream.chunks(read_size) {
        let mut input = read;
        loop {
            match frames.decode(&mut input) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= 1024, "frame over the limit");
                    let _ = codec.decode_service(&frame);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = frames.finish();
});

/// Whatever decodes must re-encode and decode to the same message. The re-encode may be larger
/// than the input when the input shared data, so it is checked with roomier limits.
fn round_trip<M: Envelope + PartialEq + std::fmt::Debug>(codec: &Codec, data: &[u8]) {
    let Ok(message) = codec.decode::<M>(data) else {
        return;
    };
    let roomy = Codec::new(Limits::with_max_frame_bytes(64 * 1024 * 1024));
    let bytes = roomy
        .encode(&message)
        .expect("a decoded message re-encodes");
    let again: M = roomy.decode(&bytes).expect("a re-encoded message decodes");
    assert_eq!(again, message, "message changed through a re-encode");
}
