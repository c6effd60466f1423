//! The proc request decoder (and the reply decoders) on arbitrary bytes:
//! an error or a value that re-encodes to the same bytes.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sigma_ep::proc::{ProcRequest, WireBin, WireLogChunk, WireProc, WireStartTimes, WireStatus};

fuzz_target!(|data: &[u8]| {
    let Some((&m, payload)) = data.split_first() else { return };
    let method = 300 + u32::from(m % 25);
    let payload = Bytes::copy_from_slice(payload);
    if let Ok(req) = ProcRequest::decode(method, payload.clone()) {
        assert!(req.check().is_ok());
        let mut out = BytesMut::new();
        req.encode(&mut out);
        assert_eq!(&out[..], &payload[..]);
        assert_eq!(req.method(), method);
    }
    if let Ok(s) = WireStatus::decode(payload.clone()) {
        let mut out = BytesMut::new();
        s.encode(&mut out);
        assert_eq!(&out[..], &payload[..]);
    }
    if let Ok(list) = WireProc::decode_list(payload.clone()) {
        let mut out = BytesMut::new();
        WireProc::encode_list(&list, &mut out);
        assert_eq!(&out[..], &payload[..]);
    }
    if let Ok(list) = WireBin::decode_list(payload.clone()) {
        let mut out = BytesMut::new();
        WireBin::encode_list(&list, &mut out);
        assert_eq!(&out[..], &payload[..]);
    }
    if let Ok(t) = WireStartTimes::decode(payload.clone()) {
        let mut out = BytesMut::new();
        t.encode(&mut out);
        assert_eq!(&out[..], &payload[..]);
    }
    if let Ok(chunk) = WireLogChunk::decode(payload.clone()) {
        let mut out = BytesMut::new();
        chunk.encode(&mut out);
        assert_eq!(&out[..], &payload[..]);
    }
});
