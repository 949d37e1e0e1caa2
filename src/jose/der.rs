//! The little DER the keys need: PEM armour off, an RSA private key (PKCS #1) put together
//! from a JWK's numbers, and an RSA public key's two numbers read back.

use base64::Engine as _;
use zeroize::Zeroizing;

/// The DER inside a PEM block, and the block's label (`PRIVATE KEY`, `EC PRIVATE KEY`,
/// `RSA PRIVATE KEY`, ...). The first block only; text around it is ignored.
pub(crate) fn pem_decode(pem: &str) -> Option<(String, Zeroizing<Vec<u8>>)> {
    let begin = pem.find("-----BEGIN ")?;
    let after_begin = &pem[begin + 11..];
    let label_end = after_begin.find("-----")?;
    let label = after_begin[..label_end].to_owned();
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let body_end = after_begin.find(&end_marker)?;
    let body: Zeroizing<String> = Zeroizing::new(
        after_begin[body_start..body_end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .ok()?;
    Some((label, Zeroizing::new(der)))
}

/// A DER length.
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// A DER INTEGER from an unsigned big-endian number (a JWK's base64url value).
fn push_uint(out: &mut Vec<u8>, value: &[u8]) {
    let value = trim_zeros(value);
    let pad = value.first().is_none_or(|b| b & 0x80 != 0);
    out.push(0x02);
    push_len(out, value.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(value);
}

/// `RSAPrivateKey` (RFC 8017 A.1.2), version 0, from n, e, d, p, q, dp, dq, qi.
pub(crate) fn rsa_private_key(parts: [&[u8]; 8]) -> Zeroizing<Vec<u8>> {
    let mut body = Zeroizing::new(vec![0x02, 0x01, 0x00]);
    for part in parts {
        push_uint(&mut body, part);
    }
    let mut out = Zeroizing::new(Vec::with_capacity(body.len() + 4));
    out.push(0x30);
    push_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// Reads a DER TLV with the given tag; returns its contents and the rest.
fn read_tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// The subject public key of an X.509 certificate (RFC 5280 §4.1): the contents of the
/// `subjectPublicKey` BIT STRING, its unused-bits octet removed.
pub(crate) fn certificate_public_key(der: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = read_tlv(der, 0x30)?;
    let (tbs, _) = read_tlv(certificate, 0x30)?;
    // The version is `[0] EXPLICIT`, absent for v1 certificates.
    let tbs = read_tlv(tbs, 0xa0).map_or(tbs, |(_, rest)| rest);
    let (_serial, rest) = read_tlv(tbs, 0x02)?;
    let (_signature, rest) = read_tlv(rest, 0x30)?;
    let (_issuer, rest) = read_tlv(rest, 0x30)?;
    let (_validity, rest) = read_tlv(rest, 0x30)?;
    let (_subject, rest) = read_tlv(rest, 0x30)?;
    let (spki, _) = read_tlv(rest, 0x30)?;
    let (_algorithm, rest) = read_tlv(spki, 0x30)?;
    let (bits, _) = read_tlv(rest, 0x03)?;
    match bits.split_first()? {
        (0, key) => Some(key),
        _ => None,
    }
}

/// `RSAPublicKey` (RFC 8017 A.1.1): the modulus and exponent, leading zeros removed.
pub(crate) fn rsa_public_key(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (seq, _) = read_tlv(der, 0x30)?;
    let (n, rest) = read_tlv(seq, 0x02)?;
    let (e, _) = read_tlv(rest, 0x02)?;
    Some((trim_zeros(n), trim_zeros(e)))
}

/// A big-endian number without its leading zero bytes (one zero stays for zero itself).
fn trim_zeros(v: &[u8]) -> &[u8] {
    let skip = v.iter().take_while(|b| **b == 0).count();
    &v[skip.min(v.len().saturating_sub(1))..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_lengths() {
        let mut out = Vec::new();
        push_uint(&mut out, &[0x00, 0x00, 0x7f]);
        assert_eq!(out, [0x02, 0x01, 0x7f]);
        let mut out = Vec::new();
        push_uint(&mut out, &[0x80]);
        assert_eq!(out, [0x02, 0x02, 0x00, 0x80]);
        let mut out = Vec::new();
        push_uint(&mut out, &[]);
        assert_eq!(out, [0x02, 0x01, 0x00]);
        let mut out = Vec::new();
        push_len(&mut out, 300);
        assert_eq!(out, [0x82, 0x01, 0x2c]);
    }

    #[test]
    fn rsa_public_key_reads_back_what_was_written() {
        let n = [0xc1u8; 256];
        let e = [0x01u8, 0x00, 0x01];
        let mut body = Vec::new();
        push_uint(&mut body, &n);
        push_uint(&mut body, &e);
        let mut der = vec![0x30];
        push_len(&mut der, body.len());
        der.extend_from_slice(&body);
        assert_eq!(rsa_public_key(&der), Some((&n[..], &e[..])));
        assert_eq!(rsa_public_key(&der[..10]), None);
        assert_eq!(rsa_public_key(b""), None);
    }

    #[test]
    fn pem_blocks() {
        let pem = "junk\n-----BEGIN TEST KEY-----\nAAEC\nAw==\n-----END TEST KEY-----\n";
        let (label, der) = pem_decode(pem).unwrap();
        assert_eq!(label, "TEST KEY");
        assert_eq!(&der[..], [0, 1, 2, 3]);
        assert!(pem_decode("-----BEGIN X-----\nAAEC\n-----END Y-----").is_none());
        assert!(pem_decode("no pem here").is_none());
        assert!(pem_decode("-----BEGIN X-----\n!!!\n-----END X-----").is_none());
    }
}
