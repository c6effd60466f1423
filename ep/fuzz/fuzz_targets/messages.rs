//! The payload decoders: error messages and typed (Pod) messages.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sigma_ep::{Message, Pod};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = sigma_ep::codec::decode_error_message(data) {
        assert!(message.len() <= sigma_ep::limits::ERROR_MESSAGE_BYTES_MAX);
    }
    let bytes = Bytes::copy_from_slice(data);
    let _ = Pod::<[u64; 2]>::decode(bytes.clone());
    let _ = Pod::<u32>::decode(bytes.clone());
    let _ = <() as Message>::decode(bytes);
});
