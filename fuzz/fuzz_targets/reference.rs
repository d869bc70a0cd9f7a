//! The reference syntax (`reference.rs`): `SecretRef::parse` and `NameRef::parse` on any text
//! never panic, and what they accept prints (`Display`) as text that parses back to the same
//! reference.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_backends::{NameRef, SecretRef};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reference) = SecretRef::parse(text) {
        let shown = reference.to_string();
        let again = SecretRef::parse(&shown).unwrap_or_else(|err| {
            panic!("{text:?} parsed, but its display {shown:?} does not: {err}")
        });
        assert_eq!(
            again, reference,
            "{text:?}: the display {shown:?} parses to another reference"
        );
    }
    if let Ok(name) = NameRef::parse(text) {
        let shown = name.to_string();
        let again = NameRef::parse(&shown).unwrap_or_else(|err| {
            panic!("{text:?} parsed, but its display {shown:?} does not: {err}")
        });
        assert_eq!(
            again, name,
            "{text:?}: the display {shown:?} parses to another name"
        );
    }
});
