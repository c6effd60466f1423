//! The namespace protocol round-trips and refuses bad payloads.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use sigma_ep::ns::{decode_strings, encode_strings, method, NsRequest, WireResolved, WireStat};
use sigma_ep::DecodeError;

fn s() -> impl Strategy<Value = String> {
    "[a-z/._~-]{0,40}"
}

fn data() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..100).prop_map(Bytes::from)
}

fn request() -> impl Strategy<Value = NsRequest> {
    prop_oneof![
        s().prop_map(|realm| NsRequest::CreateRealm { realm }),
        Just(NsRequest::ListRealms),
        (s(), s(), any::<u32>(), any::<u8>(), data(), any::<u64>()).prop_map(
            |(realm, path, perm, kind, data, lease)| NsRequest::Create {
                realm,
                path,
                perm,
                kind,
                data,
                lease
            }
        ),
        (s(), s(), data(), any::<u64>()).prop_map(|(realm, path, data, if_version)| NsRequest::Write {
            realm,
            path,
            data,
            if_version
        }),
        (s(), s(), s()).prop_map(|(realm, from, to)| NsRequest::Rename { realm, from, to }),
        (s(), s(), any::<u64>()).prop_map(|(realm, path, timeout_ms)| NsRequest::WatchDir {
            realm,
            path,
            timeout_ms
        }),
        (s(), any::<u64>()).prop_map(|(realm, lease)| NsRequest::LeaseRevoke { realm, lease }),
        (s(), s(), data(), any::<u64>()).prop_map(|(realm, path, endpoint, lease)| NsRequest::Mount {
            realm,
            path,
            endpoint,
            lease
        }),
    ]
}

proptest! {
    #[test]
    fn requests_round_trip(req in request()) {
        let mut out = BytesMut::new();
        req.encode(&mut out);
        prop_assert_eq!(NsRequest::decode(req.method(), out.freeze()), Ok(req));
    }

    #[test]
    fn arbitrary_payloads_never_panic(m in 90u32..150, bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = NsRequest::decode(m, Bytes::from(bytes));
    }
}

#[test]
fn trailing_and_truncated_payloads_are_refused() {
    let mut out = BytesMut::new();
    NsRequest::Read {
        realm: "r".into(),
        path: "/a".into(),
    }
    .encode(&mut out);
    let good = out.freeze();
    let mut long = good.to_vec();
    long.push(0);
    assert_eq!(
        NsRequest::decode(method::READ, Bytes::from(long)),
        Err(DecodeError::BadField("trailing bytes after the message"))
    );
    assert!(matches!(
        NsRequest::decode(method::READ, good.slice(..good.len() - 1)),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        NsRequest::decode(199, good.clone()),
        Err(DecodeError::MethodOutOfRange(199))
    ));
    // A string that is not UTF-8.
    let bad = Bytes::from_static(&[2, 0, 0xff, 0xfe, 2, 0, b'/', b'a']);
    assert_eq!(
        NsRequest::decode(method::READ, bad),
        Err(DecodeError::BadField("string is not UTF-8"))
    );
    // A byte field that claims more than the limit.
    let mut huge = BytesMut::new();
    sigma_ep::ns::Writer(&mut huge).str("r").str("/a");
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        NsRequest::decode(method::WRITE, huge.freeze()),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn replies_round_trip() {
    let stats = vec![
        WireStat {
            name: "a".into(),
            kind: 1,
            perm: 0o755,
            len: 0,
            version: 3,
            lease: 0,
        },
        WireStat {
            name: "b".into(),
            kind: 2,
            perm: 0o644,
            len: 9,
            version: 4,
            lease: 7,
        },
    ];
    let mut out = BytesMut::new();
    WireStat::encode_list(&stats, &mut out);
    assert_eq!(WireStat::decode_list(out.freeze()).unwrap(), stats);
    let mut out = BytesMut::new();
    encode_strings(&["x".to_string(), "yz".to_string()], &mut out);
    assert_eq!(decode_strings(out.freeze()).unwrap(), ["x", "yz"]);
    let res = WireResolved {
        mount: "/svc/db".into(),
        endpoint: Bytes::from_static(b"tcp:x"),
        rest: vec!["t".into()],
    };
    let mut out = BytesMut::new();
    res.encode(&mut out);
    assert_eq!(WireResolved::decode(out.freeze()).unwrap(), res);
    let mut out = BytesMut::new();
    out.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        WireStat::decode_list(out.freeze()),
        Err(DecodeError::TooLarge { .. })
    ));
}
