//! When an X.509 certificate stops being valid, read straight from its
//! DER (the few fields on the way to `validity.notAfter`), so a daemon can
//! export its certificate's expiry without a full X.509 parser.

/// One DER element: its tag, and its content with what follows.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Seconds since the Unix epoch of a UTC civil time.
fn unix(year: i64, month: i64, day: i64, h: i64, m: i64, s: i64) -> i64 {
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + h * 3_600 + m * 60 + s
}

fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (year, rest) = match (tag, text.len()) {
        // UTCTime: YYMMDDHHMMSS; years 50–99 are 19xx (RFC 5280).
        (0x17, 12) => {
            let yy = num(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        // GeneralizedTime: YYYYMMDDHHMMSS.
        (0x18, 14) => (num(0..4)?, 4),
        _ => return None,
    };
    Some(unix(
        year,
        num(rest..rest + 2)?,
        num(rest + 2..rest + 4)?,
        num(rest + 4..rest + 6)?,
        num(rest + 6..rest + 8)?,
        num(rest + 8..rest + 10)?,
    ))
}

/// The end of a DER certificate's validity, in seconds since the Unix
/// epoch; `None` if it does not parse.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (0x30, cert, _) = element(der)? else {
        return None;
    };
    let (0x30, tbs, _) = element(cert)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] version, if present.
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2;
    }
    // serialNumber, signature, issuer.
    for _ in 0..3 {
        rest = element(rest)?.2;
    }
    let (0x30, validity, _) = element(rest)? else {
        return None;
    };
    let (_, _, after_before) = element(validity)?;
    let (tag, text, _) = element(after_before)?;
    time(tag, text)
}

/// [`not_after`] of the first certificate in a PEM file's text.
pub fn not_after_pem(pem: &str) -> Option<i64> {
    use base64::Engine as _;
    let body = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)?
        .split("-----END CERTIFICATE-----")
        .next()?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    not_after(&der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_times_convert() {
        assert_eq!(unix(1970, 1, 1, 0, 0, 0), 0);
        assert_eq!(unix(2000, 3, 1, 0, 0, 0), 951_868_800);
        assert_eq!(unix(2026, 12, 2, 13, 20, 18), 1_796_217_618);
        assert_eq!(
            time(0x17, b"491231235959Z"),
            Some(unix(2049, 12, 31, 23, 59, 59))
        );
        assert_eq!(
            time(0x17, b"500101000000Z"),
            Some(unix(1950, 1, 1, 0, 0, 0))
        );
        assert_eq!(
            time(0x18, b"20991231235959Z"),
            Some(unix(2099, 12, 31, 23, 59, 59))
        );
        assert_eq!(time(0x18, b"2099123123595Z"), None);
    }

    #[test]
    fn the_validity_of_real_certificates_is_read() {
        for (y, expect) in [
            (2030, unix(2030, 6, 15, 12, 30, 45)),
            (2055, unix(2055, 1, 2, 3, 4, 5)),
        ] {
            let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
            let (month, day, h, m, s) = if y == 2030 {
                (6, 15, 12, 30, 45)
            } else {
                (1, 2, 3, 4, 5)
            };
            params.not_after = rcgen::date_time_ymd(y, month, day).replace_time(time_of(h, m, s));
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            assert_eq!(not_after(cert.der()), Some(expect));
            assert_eq!(not_after_pem(&cert.pem()), Some(expect));
        }
        assert_eq!(not_after(&[0x30, 0x03, 0x02, 0x01, 0x01]), None);
        assert_eq!(not_after_pem("no certificate"), None);
    }

    fn time_of(h: u8, m: u8, s: u8) -> ::time::Time {
        ::time::Time::from_hms(h, m, s).unwrap()
    }
}
