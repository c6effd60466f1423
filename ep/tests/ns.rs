//! The namespace protocol round-trips and refuses bad payloads.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use sigma_ep::ns::{
    decode_strings, encode_strings, method, Endpoint, NsRequest, WireOpened, WireResolved, WireStat, WriteRead,
};
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
        (s(), s()).prop_map(|(realm, path)| NsRequest::Open { realm, path }),
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

#[test]
fn open_replies_round_trip_and_bad_tags_are_refused() {
    let stat = WireStat {
        name: "f".into(),
        kind: 2,
        perm: 0o644,
        len: 3,
        version: 9,
        lease: 0,
    };
    let mount = WireResolved {
        mount: "/svc/echo".into(),
        endpoint: Bytes::from_static(b"tcp:127.0.0.1:9"),
        rest: vec!["rpc".into()],
    };
    for opened in [WireOpened::Entry(stat), WireOpened::Mount(mount)] {
        let mut out = BytesMut::new();
        opened.encode(&mut out);
        assert_eq!(WireOpened::decode(out.clone().freeze()), Ok(opened));
        out[0] = 7;
        assert!(matches!(
            WireOpened::decode(out.freeze()),
            Err(DecodeError::BadField(_))
        ));
    }
    assert!(WireOpened::decode(Bytes::new()).is_err());
}

proptest! {
    #[test]
    fn write_read_keeps_the_request_bytes_whole(rest in prop::collection::vec("[a-z]{1,8}", 0..5), body in data()) {
        let mut out = BytesMut::new();
        WriteRead::encode_head(&rest, &mut out);
        out.extend_from_slice(&body);
        let wr = WriteRead::decode(out.freeze()).unwrap();
        prop_assert_eq!(wr.rest, rest);
        prop_assert_eq!(wr.data, body);
    }

    #[test]
    fn write_read_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = WriteRead::decode(Bytes::from(bytes));
    }
}

#[test]
fn endpoints_parse_and_print_back() {
    for text in ["tcp:127.0.0.1:80", "tcp:[::1]:9000", "unix:/run/sigma/x.sock"] {
        let ep = Endpoint::parse(text.as_bytes()).unwrap();
        assert_eq!(ep.to_string(), text);
    }
    for bad in [
        "",
        "tcp:",
        "tcp:localhost",
        "unix:rel/path",
        "udp:1.2.3.4:5",
        "unix:/a\0b",
    ] {
        assert!(Endpoint::parse(bad.as_bytes()).is_err(), "{bad:?} parsed");
    }
    assert!(Endpoint::parse(&[0xff, 0xfe]).is_err());
}

#[test]
fn requests_say_whether_they_only_read_and_how_long_a_watch_waits() {
    let (realm, path) = ("r".to_string(), "/p".to_string());
    let read = NsRequest::Read {
        realm: realm.clone(),
        path: path.clone(),
    };
    let remove = NsRequest::Remove {
        realm: realm.clone(),
        path: path.clone(),
    };
    let watch = NsRequest::WatchDir {
        realm,
        path,
        timeout_ms: 250,
    };
    assert!(read.is_read_only() && NsRequest::ListRealms.is_read_only());
    assert!(!remove.is_read_only() && !watch.is_read_only());
    assert_eq!(watch.watch_timeout_ms(), Some(250));
    assert_eq!(read.watch_timeout_ms(), None);
}
