//! Randomised properties: no input panics a decoder, whatever decodes re-encodes to the same
//! message, and framed streams cut at arbitrary points reassemble exactly.
//!
//! proptest prints the failing input, shrunk, and records its seed under
//! `protocol/tests/proptest-regressions/`; commit that file so every later run replays the case.

mod support;

use proptest::prelude::*;
use protocol::{Codec, Envelope, FrameDecoder, Limits, encode_frame};

/// Decodes `bytes` as `M`; when that succeeds, the message must survive a re-encode. Re-encoding
/// can legitimately grow a message whose input shared data (a DAG becomes a tree), so the second
/// decode uses roomier limits.
fn decode_is_total<M: Envelope + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
) -> Result<(), TestCaseError> {
    let codec = Codec::default();
    if let Ok(message) = codec.decode::<M>(bytes) {
        let roomy = Codec::new(Limits::with_max_frame_bytes(64 * 1024 * 1024));
        let again = roomy
            .encode(&message)
            .map_err(|e| TestCaseError::fail(format!("re-encode failed: {e}")))?;
        let back: M = roomy
            .decode(&again)
            .map_err(|e| TestCaseError::fail(format!("re-decode failed: {e}")))?;
        prop_assert_eq!(back, message);
    }
    Ok(())
}

fn check_all_decoders(bytes: &[u8]) -> Result<(), TestCaseError> {
    decode_is_total::<protocol::tavern::ClientMessageT>(bytes)?;
    decode_is_total::<protocol::tavern::ServerMessageT>(bytes)?;
    decode_is_total::<protocol::tavern::ServiceMessageT>(bytes)
}

/// Every sample of every envelope, encoded: starting points for mutation.
fn encoded_samples() -> Vec<Vec<u8>> {
    let codec = Codec::default();
    let mut out = Vec::new();
    out.extend(support::client_samples().iter().map(|m| codec.encode(m)));
    out.extend(support::server_samples().iter().map(|m| codec.encode(m)));
    out.extend(support::service_samples().iter().map(|m| codec.encode(m)));
    out.into_iter()
        .map(|r| r.expect("samples encode"))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_all_decoders(&bytes)?;
    }

    #[test]
    fn mutated_messages_never_panic_a_decoder(
        sample in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        // Valid messages with a few bytes changed reach far deeper into the verifier than noise.
        let samples = encoded_samples();
        let mut bytes = samples[sample.index(samples.len())].clone();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        check_all_decoders(&bytes)?;
        let cut = cut.index(bytes.len() + 1);
        check_all_decoders(&bytes[..cut])?;
    }

    #[test]
    fn frames_split_anywhere_reassemble(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let mut wire = Vec::new();
        for payload in &payloads {
            encode_frame(payload, 512, &mut wire).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        cuts.push(0);
        cuts.push(wire.len());
        cuts.sort_unstable();

        let mut decoder = FrameDecoder::new(512);
        let mut frames = Vec::new();
        for pair in cuts.windows(2) {
            let mut input = &wire[pair[0]..pair[1]];
            while let Some(frame) = decoder.decode(&mut input).map_err(|e| TestCaseError::fail(e.to_string()))? {
                frames.push(frame);
            }
            prop_assert!(input.is_empty());
        }
        prop_assert_eq!(frames, payloads);
        prop_assert!(decoder.is_idle());
        prop_assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn random_streams_never_panic_the_frame_decoder(
        stream in proptest::collection::vec(any::<u8>(), 0..4096),
        read_size in 1usize..64,
    ) {
        let max = 256;
        let mut decoder = FrameDecoder::new(max);
        'reads: for read in stream.chunks(read_size) {
            let mut input = read;
            loop {
                match decoder.decode(&mut input) {
                    Ok(Some(frame)) => prop_assert!(frame.len() <= max),
                    Ok(None) => break,
                    Err(_) => break 'reads,
                }
            }
            prop_assert!(decoder.buffered_bytes() <= max + protocol::FRAME_HEADER_BYTES);
        }
    }
}
