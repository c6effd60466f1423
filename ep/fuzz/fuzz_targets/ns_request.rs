//! The namespace request decoder (and the reply decoders) on arbitrary
//! bytes: an error or a value that re-encodes to the same bytes.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sigma_ep::ns::{decode_strings, Endpoint, NsRequest, WireOpened, WireResolved, WireStat, WriteRead};

fuzz_target!(|data: &[u8]| {
    let Some((&m, payload)) = data.split_first() else { return };
    let method = 100 + u32::from(m % 40);
    let payload = Bytes::copy_from_slice(payload);
    if let Ok(req) = NsRequest::decode(method, payload.clone()) {
        let mut out = BytesMut::new();
        req.encode(&mut out);
        assert_eq!(&out[..], &payload[..]);
        assert_eq!(req.method(), method);
    }
    let _ = WireStat::decode(payload.clone());
    let _ = WireStat::decode_list(payload.clone());
    let _ = decode_strings(payload.clone());
    let _ = WireOpened::decode(payload.clone());
    let _ = Endpoint::parse(&payload);
    if let Ok(wr) = WriteRead::decode(payload.clone()) {
        let mut out = BytesMut::new();
        WriteRead::encode_head(&wr.rest, &mut out);
        out.extend_from_slice(&wr.data);
        assert_eq!(&out[..], &payload[..]);
    }
    let _ = WireResolved::decode(payload);
});
