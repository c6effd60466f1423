//! decode_frame on an arbitrary stream fed in arbitrary pieces: frames come
//! out whole or an error stops the stream; never a panic, never a payload
//! longer than announced.
#![no_main]

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else { return };
    let cut = usize::from(cut).max(1);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(cut) {
        buf.put_slice(piece);
        loop {
            match sigma_ep::decode_frame(&mut buf) {
                Ok(Some(frame)) => assert_eq!(frame.payload.len(), frame.header.len as usize),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        let _ = sigma_ep::codec::bytes_wanted(&buf);
    }
});
