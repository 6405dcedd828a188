//! When an X.509 certificate is valid (`validity`), so a daemon can export
//! its certificate's expiry as a metric and renew it in time.

use x509_parser::pem::parse_x509_pem;

/// The end of a DER certificate's validity, in seconds since the Unix
/// epoch; `None` if it does not parse.
pub fn not_after(der: &[u8]) -> Option<i64> {
    validity(der).map(|(_, until)| until)
}

/// A DER certificate's validity, `notBefore` and `notAfter`, in seconds
/// since the Unix epoch; `None` if it does not parse.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// [`not_after`] of the first certificate in a PEM file's text.
pub fn not_after_pem(pem: &str) -> Option<i64> {
    let (_, block) = parse_x509_pem(pem.as_bytes()).ok()?;
    if block.label != "CERTIFICATE" {
        return None;
    }
    not_after(&block.contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seconds since the Unix epoch of a UTC time, by the `time` crate.
    fn unix(year: i32, month: u8, day: u8, h: u8, m: u8, s: u8) -> i64 {
        let date = ::time::Date::from_calendar_date(year, month.try_into().unwrap(), day).unwrap();
        date.with_hms(h, m, s)
            .unwrap()
            .assume_utc()
            .unix_timestamp()
    }

    #[test]
    fn the_validity_of_real_certificates_is_read() {
        // 2049 is the last year of UTCTime; 2050 on is GeneralizedTime
        // (RFC 5280), so both encodings are read.
        for (year, month, day, h, m, s) in [
            (2030, 6, 15, 12, 30, 45),
            (2049, 12, 31, 23, 59, 59),
            (2055, 1, 2, 3, 4, 5),
        ] {
            let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
            params.not_after = rcgen::date_time_ymd(year, month, day)
                .replace_time(::time::Time::from_hms(h, m, s).unwrap());
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            let expect = unix(year, month, day, h, m, s);
            assert_eq!(not_after(cert.der()), Some(expect), "{year}");
            assert_eq!(not_after_pem(&cert.pem()), Some(expect), "{year}");
        }
    }

    #[test]
    fn what_is_not_a_certificate_has_no_expiry() {
        assert_eq!(not_after(&[0x30, 0x03, 0x02, 0x01, 0x01]), None);
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after_pem("no certificate"), None);
        let key = rcgen::KeyPair::generate().unwrap();
        assert_eq!(
            not_after_pem(&key.serialize_pem()),
            None,
            "a key is not a certificate"
        );
    }
}
