//! Every decoder of stored bytes, fed arbitrary bytes: a value or
//! `Error::Corrupt`, never a panic; what decodes re-encodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litebus::Error;
use litebus_sql::codec::{decode_metadata, encode_metadata};

fuzz_target!(|bytes: &[u8]| {
    match decode_metadata(bytes) {
        Ok(metadata) => {
            let again = decode_metadata(encode_metadata(&metadata).as_bytes())
                .expect("encoded metadata decodes");
            assert_eq!(again, metadata);
        }
        Err(Error::Corrupt(_)) => {}
        Err(other) => panic!("decode gave {other:?}, not Corrupt"),
    }
});
