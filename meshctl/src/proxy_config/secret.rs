//! `proxy-config secret`: the workload certificate a proxy presents and the roots it trusts,
//! from its admin `/certs` (which never carries the key).

use serde::Deserialize;

use crate::table::Table;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Certificate {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    #[serde(default)]
    pub is_ca: bool,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Certs {
    pub identity: String,
    pub chain: Vec<Certificate>,
    pub trust_bundle: Vec<Certificate>,
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (days to civil date: H. Hinnant's
/// algorithm, valid for the proleptic Gregorian calendar).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

fn validity(c: &Certificate, now: i64) -> &'static str {
    if now < c.not_before {
        "NOT YET VALID"
    } else if now >= c.not_after {
        "EXPIRED"
    } else {
        "VALID"
    }
}

/// One row per certificate: `default` (the leaf, named by its SPIFFE identity), the rest of
/// the chain it presents, then `ROOTCA` for each trusted root, as istioctl names them.
pub fn render(certs: &Certs, now: i64) -> String {
    let mut t = Table::new(&[
        "RESOURCE",
        "IDENTITY / SUBJECT",
        "STATUS",
        "SERIAL NUMBER",
        "NOT BEFORE",
        "NOT AFTER",
    ]);
    let rows = certs
        .chain
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                ("default", certs.identity.clone(), c)
            } else {
                // Citadel sends the chain up to its root; istioctl has no name for these.
                ("chain", c.subject.clone(), c)
            }
        })
        .chain(
            certs
                .trust_bundle
                .iter()
                .map(|c| ("ROOTCA", c.subject.clone(), c)),
        );
    for (resource, name, c) in rows {
        t.row(vec![
            resource.to_owned(),
            name,
            validity(c, now).to_owned(),
            c.serial.clone(),
            rfc3339(c.not_before),
            rfc3339(c.not_after),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_utc_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_326_245), "2026-12-03T19:30:45Z");
    }

    #[test]
    fn leaf_and_roots_with_their_validity() {
        let cert = |subject: &str, nb: i64, na: i64| Certificate {
            subject: subject.into(),
            issuer: "O=mesh".into(),
            serial: "0a:1b".into(),
            subject_alt_names: vec![],
            not_before: nb,
            not_after: na,
            is_ca: false,
        };
        let certs = Certs {
            identity: "spiffe://cluster.local/ns/default/sa/reviews".into(),
            chain: vec![cert("", 100, 200), cert("O=mesh root", 0, 1_000)],
            trust_bundle: vec![cert("O=mesh root", 0, 1_000)],
        };
        let text = render(&certs, 150);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("default    spiffe://cluster.local/ns/default/sa/reviews   VALID"),
            "{text}"
        );
        assert!(
            lines[1].contains("VALID") && lines[1].contains("0a:1b"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("chain ") && lines[2].contains("O=mesh root"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("ROOTCA") && lines[3].contains("O=mesh root"),
            "{text}"
        );
        assert!(
            render(&certs, 250)
                .lines()
                .nth(1)
                .unwrap()
                .contains("EXPIRED")
        );
    }
}
