//! Header::decode on arbitrary bytes: an error or a header that re-encodes
//! to the same bytes; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigma_ep::limits::FRAME_HEADER_BYTES;
use sigma_ep::Header;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = Header::decode(data) {
        let mut out = [0u8; FRAME_HEADER_BYTES];
        header.encode(&mut out);
        assert_eq!(&out[..], &data[..FRAME_HEADER_BYTES]);
    }
});
