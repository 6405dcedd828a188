//! Checksums computed while bytes stream, and the HTTP fields that carry them.
//!
//! Every object gets a CRC64/NVME (the S3 default: fast, hardware-assisted and
//! combinable across parts), sent in the `x-ferry-checksum-crc64nvme` field as
//! the base64 of its eight big-endian bytes, like S3's
//! `x-amz-checksum-crc64nvme`. SHA-256 and SHA-512 are computed only when a
//! client sends `Repr-Digest` or asks for one with `Want-Repr-Digest`
//! (RFC 9530).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The field carrying an object's CRC64/NVME.
pub const CRC64NVME_HEADER: &str = "x-ferry-checksum-crc64nvme";

/// A secure digest algorithm of RFC 9530 that ferry computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestAlgorithm {
    /// `sha-256`.
    Sha256,
    /// `sha-512`.
    Sha512,
}

impl DigestAlgorithm {
    /// The algorithm's key in `Repr-Digest`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Sha256 => "sha-256",
            Self::Sha512 => "sha-512",
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        match key {
            "sha-256" => Some(Self::Sha256),
            "sha-512" => Some(Self::Sha512),
            _ => None,
        }
    }

    fn ring(self) -> &'static ring::digest::Algorithm {
        match self {
            Self::Sha256 => &ring::digest::SHA256,
            Self::Sha512 => &ring::digest::SHA512,
        }
    }
}

/// Why a digest field could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestFieldError {
    /// The field is not a structured-field dictionary of the expected shape.
    #[error("malformed {field}: {reason}")]
    Malformed {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Encodes a CRC64/NVME value the way [`CRC64NVME_HEADER`] carries it.
pub fn encode_crc64(value: u64) -> String {
    STANDARD.encode(value.to_be_bytes())
}

/// Standard base64 whose final `=` may be left out (as RFC 4648 allows
/// when the length is known): a CRC64/NVME is always 8 bytes.
const PADDING_OPTIONAL: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Decodes a [`CRC64NVME_HEADER`] value, with or without its padding.
pub fn decode_crc64(text: &str) -> Option<u64> {
    let bytes = PADDING_OPTIONAL.decode(text.trim()).ok()?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// Parses `Repr-Digest` into the digests ferry can check; algorithms it does
/// not know are ignored, as RFC 9530 asks.
pub fn parse_repr_digest(value: &str) -> Result<Vec<(DigestAlgorithm, Vec<u8>)>, DigestFieldError> {
    let malformed = |reason: &str| DigestFieldError::Malformed {
        field: "Repr-Digest",
        reason: reason.to_owned(),
    };
    let mut out = Vec::new();
    for member in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let (key, rest) = member
            .split_once('=')
            .ok_or_else(|| malformed("member without '='"))?;
        let rest = rest.split(';').next().unwrap_or_default().trim();
        let encoded = rest
            .strip_prefix(':')
            .and_then(|r| r.strip_suffix(':'))
            .ok_or_else(|| malformed("value is not a byte sequence (:base64:)"))?;
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| malformed("value is not valid base64"))?;
        if let Some(alg) = DigestAlgorithm::from_key(key.trim().to_ascii_lowercase().as_str()) {
            if bytes.len() != alg.ring().output_len() {
                return Err(malformed(&format!(
                    "{} digest has the wrong length",
                    alg.key()
                )));
            }
            out.push((alg, bytes));
        }
    }
    Ok(out)
}

/// Parses `Want-Repr-Digest` and returns the most preferred algorithm that
/// ferry computes, if any (weights 1..=10; 0 means "not acceptable").
pub fn parse_want_digest(value: &str) -> Result<Option<DigestAlgorithm>, DigestFieldError> {
    let mut best: Option<(u8, DigestAlgorithm)> = None;
    for member in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let (key, weight) = member
            .split_once('=')
            .ok_or_else(|| DigestFieldError::Malformed {
                field: "Want-Repr-Digest",
                reason: "member without '='".to_owned(),
            })?;
        let weight: u8 = weight
            .trim()
            .parse()
            .ok()
            .filter(|w| *w <= 10)
            .ok_or_else(|| DigestFieldError::Malformed {
                field: "Want-Repr-Digest",
                reason: "weight is not an integer from 0 to 10".to_owned(),
            })?;
        if let Some(alg) = DigestAlgorithm::from_key(key.trim().to_ascii_lowercase().as_str()) {
            let better = match best {
                None => true,
                Some((w, b)) => weight > w || (weight == w && alg > b),
            };
            if weight > 0 && better {
                best = Some((weight, alg));
            }
        }
    }
    Ok(best.map(|(_, alg)| alg))
}

/// Formats one digest as a `Repr-Digest` value.
pub fn format_repr_digest(alg: DigestAlgorithm, digest: &[u8]) -> String {
    format!("{}=:{}:", alg.key(), STANDARD.encode(digest))
}

/// The CRC64/NVME of `data`.
pub fn crc64nvme(data: &[u8]) -> u64 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, data)
}

/// Checksums of a stream of bytes, updated chunk by chunk.
pub struct StreamChecksums {
    crc: crc_fast::Digest,
    digests: Vec<(DigestAlgorithm, ring::digest::Context)>,
    len: u64,
}

impl std::fmt::Debug for StreamChecksums {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamChecksums")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// The final values of a [`StreamChecksums`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksums {
    /// Bytes seen.
    pub len: u64,
    /// CRC64/NVME of those bytes.
    pub crc64nvme: u64,
    /// The secure digests that were asked for.
    pub digests: Vec<(DigestAlgorithm, Vec<u8>)>,
}

impl Checksums {
    /// The digest computed with `alg`, if it was asked for.
    pub fn digest(&self, alg: DigestAlgorithm) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, d)| d.as_slice())
    }
}

impl StreamChecksums {
    /// Starts checksums that also compute each algorithm in `digests`.
    pub fn new(digests: impl IntoIterator<Item = DigestAlgorithm>) -> Self {
        let mut algs: Vec<DigestAlgorithm> = digests.into_iter().collect();
        algs.sort();
        algs.dedup();
        Self {
            crc: crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme),
            digests: algs
                .into_iter()
                .map(|a| (a, ring::digest::Context::new(a.ring())))
                .collect(),
            len: 0,
        }
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.crc.update(data);
        for (_, ctx) in &mut self.digests {
            ctx.update(data);
        }
        self.len += data.len() as u64;
    }

    /// The checksums of everything fed so far.
    pub fn finish(self) -> Checksums {
        Checksums {
            len: self.len,
            crc64nvme: self.crc.finalize(),
            digests: self
                .digests
                .into_iter()
                .map(|(a, ctx)| (a, ctx.finish().as_ref().to_vec()))
                .collect(),
        }
    }
}

/// Secure digests (SHA-256, SHA-512) of a stream computed on a thread of
/// the blocking pool, beside the task that reads and writes the stream: on
/// a machine with a core to spare, hashing no longer takes turns with the
/// socket and the provider. Chunks are handed over without a copy; at most
/// [`DigestsAside::QUEUED`] wait, so a stream goes no faster than its
/// hashing, as before.
#[derive(Debug)]
pub struct DigestsAside {
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    done: tokio::task::JoinHandle<Vec<(DigestAlgorithm, Vec<u8>)>>,
}

impl DigestsAside {
    /// Chunks handed over and not yet hashed, at most.
    pub const QUEUED: usize = 4;

    /// Starts hashing with each of `algs`; `None` when there is none.
    pub fn start(algs: impl IntoIterator<Item = DigestAlgorithm>) -> Option<Self> {
        let mut algs: Vec<DigestAlgorithm> = algs.into_iter().collect();
        algs.sort();
        algs.dedup();
        if algs.is_empty() {
            return None;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(Self::QUEUED);
        let done = tokio::task::spawn_blocking(move || {
            let mut ctxs: Vec<_> = algs
                .into_iter()
                .map(|a| (a, ring::digest::Context::new(a.ring())))
                .collect();
            while let Some(chunk) = rx.blocking_recv() {
                for (_, ctx) in &mut ctxs {
                    ctx.update(&chunk);
                }
            }
            ctxs.into_iter()
                .map(|(a, ctx)| (a, ctx.finish().as_ref().to_vec()))
                .collect()
        });
        Some(Self { tx, done })
    }

    /// Hands over the next bytes, waiting while [`Self::QUEUED`] chunks
    /// are not yet hashed.
    pub async fn feed(&self, data: bytes::Bytes) {
        // The hashing side ends only when this side is dropped or finished.
        let _ = self.tx.send(data).await;
    }

    /// The digests of everything fed.
    pub async fn finish(self) -> Vec<(DigestAlgorithm, Vec<u8>)> {
        drop(self.tx);
        self.done
            .await
            .expect("hashing bytes cannot fail or be cancelled")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn digests_computed_aside_equal_those_computed_in_line() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let algs = [DigestAlgorithm::Sha512, DigestAlgorithm::Sha256];
        let mut inline = StreamChecksums::new(algs);
        let aside = DigestsAside::start(algs).expect("two algorithms");
        for chunk in data.chunks(7_777) {
            inline.update(chunk);
            aside.feed(bytes::Bytes::copy_from_slice(chunk)).await;
        }
        assert_eq!(aside.finish().await, inline.finish().digests);
        assert!(DigestsAside::start([]).is_none());
    }

    #[test]
    fn crc64nvme_matches_the_reference_check_value() {
        // The catalogue check value of CRC-64/NVME over "123456789".
        let mut c = StreamChecksums::new([]);
        c.update(b"1234");
        c.update(b"56789");
        let sums = c.finish();
        assert_eq!(sums.crc64nvme, 0xAE8B_1486_0A79_9888);
        assert_eq!(sums.len, 9);
        let encoded = encode_crc64(sums.crc64nvme);
        assert_eq!(decode_crc64(&encoded), Some(sums.crc64nvme));
        // The padding may be left out; anything else stays malformed.
        assert_eq!(
            decode_crc64(encoded.trim_end_matches('=')),
            Some(sums.crc64nvme)
        );
        for bad in ["", "0", "AAAAAAAAAAA==", "AAAAAAAAAAB=", "AAAAAAAAAAAAAAAA"] {
            assert_eq!(decode_crc64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sha256_digest_round_trips_through_the_field() {
        let mut c = StreamChecksums::new([DigestAlgorithm::Sha256]);
        c.update(b"hello");
        let sums = c.finish();
        let field = format_repr_digest(
            DigestAlgorithm::Sha256,
            sums.digest(DigestAlgorithm::Sha256).unwrap(),
        );
        assert_eq!(
            field,
            "sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:"
        );
        let parsed = parse_repr_digest(&format!("md5=:AAAA:, {field}")).unwrap();
        assert_eq!(
            parsed,
            vec![(DigestAlgorithm::Sha256, sums.digests[0].1.clone())]
        );
    }

    #[test]
    fn malformed_digest_fields_are_errors() {
        assert!(parse_repr_digest("sha-256").is_err());
        assert!(parse_repr_digest("sha-256=abc").is_err());
        assert!(parse_repr_digest("sha-256=:!!:").is_err());
        assert!(parse_repr_digest("sha-256=:AAAA:").is_err(), "wrong length");
        assert!(parse_want_digest("sha-256=11").is_err());
    }

    #[test]
    fn want_digest_picks_the_preferred_known_algorithm() {
        assert_eq!(
            parse_want_digest("sha-256=1").unwrap(),
            Some(DigestAlgorithm::Sha256)
        );
        assert_eq!(
            parse_want_digest("sha-256=2, sha-512=5").unwrap(),
            Some(DigestAlgorithm::Sha512)
        );
        assert_eq!(parse_want_digest("sha-256=0, md5=9").unwrap(), None);
    }
}
