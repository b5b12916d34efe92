//! The length-prefixed `FrameDecoder`: reassembly across arbitrary reads, immediate refusal of
//! oversize headers, zero-length frames, and streams that end inside a frame.

use protocol::{
    DecodeError, EncodeError, ErrorCode, FRAME_HEADER_BYTES, FrameDecoder, encode_frame,
};

/// Feeds `reads` one after another and returns every frame produced, or the first error.
fn feed(decoder: &mut FrameDecoder, reads: &[&[u8]]) -> Result<Vec<Vec<u8>>, DecodeError> {
    let mut frames = Vec::new();
    for read in reads {
        let mut input = *read;
        while let Some(frame) = decoder.decode(&mut input)? {
            frames.push(frame);
        }
        assert!(input.is_empty(), "decode returned None with input left");
    }
    Ok(frames)
}

fn framed(payloads: &[&[u8]], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for payload in payloads {
        encode_frame(payload, max, &mut out).expect("test payloads fit");
    }
    out
}

#[test]
fn frames_reassemble_whatever_the_read_size() {
    let payloads: [&[u8]; 4] = [b"alpha", b"", b"a somewhat longer payload", &[0xff; 300]];
    let wire = framed(&payloads, 1024);
    for read_size in 1..=wire.len() {
        let reads: Vec<&[u8]> = wire.chunks(read_size).collect();
        let mut decoder = FrameDecoder::new(1024);
        let frames = feed(&mut decoder, &reads).expect("valid stream");
        assert_eq!(
            frames,
            payloads.map(<[u8]>::to_vec),
            "read size {read_size}"
        );
        assert!(decoder.is_idle() && decoder.finish().is_ok());
    }
}

#[test]
fn oversize_header_is_refused_before_its_payload_arrives() {
    let cases: [(&str, u32, usize); 3] = [
        ("one over", 1025, 1024),
        ("u32 max", u32::MAX, 1024),
        ("any length over a zero limit", 1, 0),
    ];
    for (case, declared, max) in cases {
        let mut decoder = FrameDecoder::new(max);
        let header = declared.to_be_bytes();
        // Only the header is fed: the refusal must not wait for (or buffer) the payload.
        let err = feed(&mut decoder, &[&header[..2], &header[2..]]).expect_err(case);
        let want = DecodeError::TooLarge {
            len: declared as usize,
            max,
        };
        assert_eq!(err, want, "{case}");
        assert_eq!(err.code(), ErrorCode::TooLarge);
        // The failure is final: the stream cannot be resynchronised.
        assert_eq!(
            feed(&mut decoder, &[b"\0\0\0\x01x"]),
            Err(want.clone()),
            "{case}"
        );
        assert_eq!(decoder.finish(), Err(want), "{case}");
        assert!(!decoder.is_idle());
    }
}

#[test]
fn frames_before_an_oversize_header_are_delivered() {
    let mut wire = framed(&[b"ok"], 16);
    wire.extend_from_slice(&17u32.to_be_bytes());
    let mut decoder = FrameDecoder::new(16);
    let mut input = wire.as_slice();
    assert_eq!(decoder.decode(&mut input), Ok(Some(b"ok".to_vec())));
    assert_eq!(
        decoder.decode(&mut input),
        Err(DecodeError::TooLarge { len: 17, max: 16 })
    );
}

#[test]
fn a_stream_ending_inside_a_frame_is_truncated() {
    let wire = framed(&[b"hello"], 16);
    let cases: [(&str, usize, DecodeError); 3] = [
        (
            "inside the header",
            2,
            DecodeError::Truncated {
                buffered: 2,
                expected: 0,
            },
        ),
        (
            "after the header",
            FRAME_HEADER_BYTES,
            DecodeError::Truncated {
                buffered: 4,
                expected: 9,
            },
        ),
        (
            "inside the payload",
            7,
            DecodeError::Truncated {
                buffered: 7,
                expected: 9,
            },
        ),
    ];
    for (case, cut, want) in cases {
        let mut decoder = FrameDecoder::new(16);
        let frames = feed(&mut decoder, &[wire.get(..cut).expect("cut inside wire")]).expect(case);
        assert!(frames.is_empty(), "{case}");
        assert!(!decoder.is_idle(), "{case}");
        assert_eq!(decoder.buffered_bytes(), cut, "{case}");
        assert_eq!(decoder.finish(), Err(want.clone()), "{case}");
        assert_eq!(want.code(), ErrorCode::Malformed);
    }
}

#[test]
fn encode_frame_refuses_what_a_decoder_would() {
    let mut out = b"kept".to_vec();
    assert_eq!(
        encode_frame(&[0; 17], 16, &mut out),
        Err(EncodeError::TooLarge { len: 17, max: 16 })
    );
    assert_eq!(out, b"kept", "nothing appended on failure");
    encode_frame(&[7; 16], 16, &mut out).expect("at the limit is fine");
    assert_eq!(out.get(4..8), Some(&16u32.to_be_bytes()[..]));
}
