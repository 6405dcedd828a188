//! Feeds arbitrary bytes to the tunnel frame decoder: it must never panic,
//! never allocate past its limit, and re-encode what it accepts to the same
//! frame.
#![no_main]

use bytes::BytesMut;
use ferry_common::proto::Decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoder = Decoder::new(64 * 1024);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        let mut again = BytesMut::from(&frame.to_bytes()[..]);
        assert_eq!(decoder.decode(&mut again).unwrap(), Some(frame));
    }
});
