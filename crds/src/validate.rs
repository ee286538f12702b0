//! The CRD's schema and CEL rules as a plain function, so the API rejects a bad spec before
//! anything is stored or applied; tests hold it to the same examples as the schema.

use std::collections::HashSet;

use crate::{BroadcastSpec, MAX_DESTINATIONS, MAX_GUESTS};

/// The first rule `spec` breaks, phrased for the person who sent it.
pub fn validate_spec(spec: &BroadcastSpec) -> Result<(), String> {
    let title_len = spec.title.chars().count();
    if title_len == 0 || title_len > 200 {
        return Err("title must be 1 to 200 characters".into());
    }
    if spec.title.trim().is_empty() {
        return Err("title must not be blank".into());
    }
    if spec.description.chars().count() > 5000 {
        return Err("description must be at most 5000 characters".into());
    }
    if !(15..=60).contains(&spec.output.fps) {
        return Err("output.fps must be between 15 and 60".into());
    }
    if !(300..=20_000).contains(&spec.output.video_bitrate_kbps) {
        return Err("output.videoBitrateKbps must be between 300 and 20000".into());
    }
    if !(32..=320).contains(&spec.output.audio_bitrate_kbps) {
        return Err("output.audioBitrateKbps must be between 32 and 320".into());
    }
    if !(1..=MAX_GUESTS).contains(&spec.max_guests) {
        return Err(format!("maxGuests must be between 1 and {MAX_GUESTS}"));
    }
    if spec
        .scheduled_start
        .as_deref()
        .is_some_and(|s| !is_rfc3339(s))
    {
        return Err("scheduledStart must be an RFC 3339 date-time".into());
    }
    if spec.destinations.len() > MAX_DESTINATIONS {
        return Err(format!("at most {MAX_DESTINATIONS} destinations"));
    }
    let mut names = HashSet::new();
    for d in &spec.destinations {
        if !is_dns_label(&d.name) {
            return Err(format!(
                "destination name {:?} must be a lowercase DNS label (a-z, 0-9, '-', at most 63)",
                d.name
            ));
        }
        if !names.insert(d.name.as_str()) {
            return Err("destination names must be unique".into());
        }
        validate_rtmp_url(&d.url).map_err(|e| format!("destination {:?}: {e}", d.name))?;
    }
    Ok(())
}

/// rtmp:// or rtmps://, a host, and no whitespace; the stream key is never part of the URL.
pub fn validate_rtmp_url(url: &str) -> Result<(), String> {
    if url.len() > 2048 {
        return Err("url is longer than 2048 characters".into());
    }
    let rest = url
        .strip_prefix("rtmp://")
        .or_else(|| url.strip_prefix("rtmps://"))
        .ok_or("url must start with rtmp:// or rtmps://")?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains(['?', '#']) {
        return Err("url must name a host".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("url must not contain whitespace".into());
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// The date-time production of RFC 3339 (what the API server's `format: date-time` accepts).
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
    {
        return false;
    }
    if !matches!(b[10], b'T' | b't' | b' ')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(99);
    if !(1..=12).contains(&num(5..7))
        || !(1..=31).contains(&num(8..10))
        || num(11..13) > 23
        || num(14..16) > 59
        || num(17..19) > 60
    {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        for ok in ["2026-12-01T17:00:00Z", "2026-12-01T17:00:00.123+01:00"] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "next tuesday",
            "2026-13-01T17:00:00Z",
            "2026-12-01",
            "2026-12-01T17:00:00",
            "2026-12-01T17:00:00.Z",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn rtmp_urls() {
        assert!(validate_rtmp_url("rtmp://a.rtmp.youtube.com/live2").is_ok());
        assert!(validate_rtmp_url("rtmps://live-api-s.facebook.com:443/rtmp/").is_ok());
        for bad in [
            "http://x/live",
            "rtmp://",
            "rtmp:///live",
            "rtmp://host/li ve",
            "file:///etc/passwd",
        ] {
            assert!(validate_rtmp_url(bad).is_err(), "{bad}");
        }
    }
}
