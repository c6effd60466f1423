//! The wire format round-trips and refuses what it cannot parse.

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use sigma_ep::limits::{FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX, METHOD_ID_MAX};
use sigma_ep::{decode_frame, DecodeError, Header, Kind, StatusCode};

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Request),
        Just(Kind::Response),
        Just(Kind::Error),
        Just(Kind::Cancel),
        Just(Kind::Handshake),
        Just(Kind::Namespace),
        Just(Kind::Proc),
    ]
}

fn status() -> impl Strategy<Value = StatusCode> {
    (1u16..=8).prop_map(|c| StatusCode::from_u16(c).unwrap())
}

fn header() -> impl Strategy<Value = Header> {
    (
        kind(),
        status(),
        0..=FRAME_PAYLOAD_BYTES_MAX as u32,
        0..=METHOD_ID_MAX,
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(|(kind, status, len, method, deadline_us, request_id)| Header {
            kind,
            flags: 0,
            status: (kind == Kind::Error).then_some(status),
            len,
            method,
            deadline_us,
            request_id,
        })
}

fn encoded(h: &Header) -> [u8; FRAME_HEADER_BYTES] {
    let mut out = [0u8; FRAME_HEADER_BYTES];
    h.encode(&mut out);
    out
}

proptest! {
    #[test]
    fn header_round_trips(h in header()) {
        prop_assert_eq!(Header::decode(&encoded(&h)), Ok(h));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
        let _ = Header::decode(&bytes);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode_frame(&mut buf) {}
    }

    #[test]
    fn frames_split_anywhere_reassemble(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..10),
                                        cut in 1usize..64) {
        let mut wire = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            wire.extend_from_slice(&encoded(&Header::request(i as u64, 7, p.len() as u32, 0)));
            wire.extend_from_slice(p);
        }
        // Feed the stream in pieces of `cut` bytes; every frame comes out whole.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in wire.chunks(cut) {
            buf.put_slice(piece);
            while let Some(frame) = decode_frame(&mut buf).unwrap() {
                prop_assert_eq!(frame.header.request_id, got.len() as u64);
                got.push(frame.payload.to_vec());
            }
        }
        prop_assert_eq!(got, payloads);
        prop_assert!(buf.is_empty());
    }
}

#[test]
fn each_bad_field_is_named() {
    let good = encoded(&Header::request(1, 2, 3, 4));
    let mut b = good;
    b[0] = 0;
    assert!(matches!(Header::decode(&b), Err(DecodeError::BadMagic(_))));
    let mut b = good;
    b[2] = 9;
    assert_eq!(Header::decode(&b), Err(DecodeError::UnsupportedVersion(9)));
    let mut b = good;
    b[3] = 200;
    assert_eq!(Header::decode(&b), Err(DecodeError::UnknownKind(200)));
    let mut b = good;
    b[4] = 1;
    assert_eq!(Header::decode(&b), Err(DecodeError::UnknownFlags(1)));
    let mut b = good;
    b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(Header::decode(&b), Err(DecodeError::TooLarge { .. })));
    let mut b = good;
    b[12..16].copy_from_slice(&(METHOD_ID_MAX + 1).to_le_bytes());
    assert_eq!(
        Header::decode(&b),
        Err(DecodeError::MethodOutOfRange(METHOD_ID_MAX + 1))
    );
    let mut b = good;
    b[20] = 1;
    assert_eq!(Header::decode(&b), Err(DecodeError::ReservedNotZero));
    let mut b = good;
    b[6] = 3;
    assert_eq!(Header::decode(&b), Err(DecodeError::StatusOnNonError(3)));
    let mut b = encoded(&Header::error(1, 2, StatusCode::Handler, 0));
    b[6] = 99;
    assert_eq!(Header::decode(&b), Err(DecodeError::UnknownStatus(99)));
    assert_eq!(
        Header::decode(&good[..10]),
        Err(DecodeError::Truncated {
            have: 10,
            need: FRAME_HEADER_BYTES
        })
    );
}

#[test]
fn a_partial_frame_waits_for_more() {
    let mut buf = BytesMut::new();
    buf.put_slice(&encoded(&Header::response(5, 1, 10)));
    buf.put_slice(b"12345");
    assert_eq!(decode_frame(&mut buf), Ok(None));
    buf.put_slice(b"67890");
    let frame = decode_frame(&mut buf).unwrap().unwrap();
    assert_eq!(&frame.payload[..], b"1234567890");
    assert_eq!(frame.header.kind, Kind::Response);
}

#[test]
fn error_messages_are_checked() {
    assert_eq!(sigma_ep::codec::decode_error_message(b"fine"), Ok("fine"));
    assert!(sigma_ep::codec::decode_error_message(&[0xff, 0xfe]).is_err());
    let long = "é".repeat(1000);
    let cut = sigma_ep::codec::truncate_error_message(&long);
    assert!(cut.len() <= sigma_ep::limits::ERROR_MESSAGE_BYTES_MAX && long.starts_with(cut));
}

#[test]
fn pod_messages_check_their_length() {
    use sigma_ep::{Message, Pod};
    let mut out = BytesMut::new();
    Pod(0x0102_0304u32).encode(&mut out);
    assert_eq!(Pod::<u32>::decode(out.freeze()), Ok(Pod(0x0102_0304)));
    assert!(matches!(
        Pod::<u32>::decode(bytes::Bytes::from_static(b"abc")),
        Err(DecodeError::BadMessage { .. })
    ));
}
