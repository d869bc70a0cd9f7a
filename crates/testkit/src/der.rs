//! Just enough DER reading to take the RSA public key out of an X.509 certificate, so the Entra
//! emulator can check a client assertion against the certificate an app registered (as Entra does)
//! without pulling a full X.509 parser into the tree.

use crate::error::TestkitError;

const SEQUENCE: u8 = 0x30;
const BIT_STRING: u8 = 0x03;
const EXPLICIT_VERSION: u8 = 0xA0;
/// DER of the OID 1.2.840.113549.1.1.1 (rsaEncryption), tag and length included.
const RSA_ENCRYPTION_OID: [u8; 11] = [
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

/// One DER element: its tag, its content and what follows it.
struct Element<'a> {
    tag: u8,
    content: &'a [u8],
    rest: &'a [u8],
}

fn read_element(input: &[u8]) -> Option<Element<'_>> {
    let (&tag, after_tag) = input.split_first()?;
    let (&first_len, mut after_len) = after_tag.split_first()?;
    let len = if first_len < 0x80 {
        usize::from(first_len)
    } else {
        let count = usize::from(first_len & 0x7f);
        if count == 0 || count > 4 || after_len.len() < count {
            return None;
        }
        let (len_bytes, remaining) = after_len.split_at(count);
        after_len = remaining;
        len_bytes
            .iter()
            .fold(0usize, |acc, byte| (acc << 8) | usize::from(*byte))
    };
    if after_len.len() < len {
        return None;
    }
    let (content, rest) = after_len.split_at(len);
    Some(Element { tag, content, rest })
}

/// The PKCS#1 `RSAPublicKey` DER inside a certificate's SubjectPublicKeyInfo.
pub(crate) fn rsa_public_key_from_cert(cert_der: &[u8]) -> Result<Vec<u8>, TestkitError> {
    let invalid = |what: &str| TestkitError::InvalidCertificate(what.to_owned());
    let cert = read_element(cert_der)
        .filter(|e| e.tag == SEQUENCE)
        .ok_or_else(|| invalid("not a DER certificate"))?;
    let tbs = read_element(cert.content)
        .filter(|e| e.tag == SEQUENCE)
        .ok_or_else(|| invalid("certificate has no TBSCertificate"))?;
    let mut fields = tbs.content;
    let first = read_element(fields).ok_or_else(|| invalid("empty TBSCertificate"))?;
    if first.tag == EXPLICIT_VERSION {
        fields = first.rest;
    }
    // serialNumber, signature, issuer, validity, subject come before subjectPublicKeyInfo.
    for _ in 0..5 {
        fields = read_element(fields)
            .ok_or_else(|| invalid("truncated TBSCertificate"))?
            .rest;
    }
    let spki = read_element(fields)
        .filter(|e| e.tag == SEQUENCE)
        .ok_or_else(|| invalid("certificate has no SubjectPublicKeyInfo"))?;
    let algorithm = read_element(spki.content)
        .filter(|e| e.tag == SEQUENCE)
        .ok_or_else(|| invalid("SubjectPublicKeyInfo has no algorithm"))?;
    if !algorithm.content.starts_with(&RSA_ENCRYPTION_OID) {
        return Err(invalid(
            "the certificate's key is not RSA (Entra client certificates must be RSA)",
        ));
    }
    let key = read_element(algorithm.rest)
        .filter(|e| e.tag == BIT_STRING)
        .ok_or_else(|| invalid("SubjectPublicKeyInfo has no key bits"))?;
    match key.content.split_first() {
        Some((0, pkcs1)) => Ok(pkcs1.to_vec()),
        _ => Err(invalid("malformed public key bit string")),
    }
}
