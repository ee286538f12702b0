//! `castyard bot`: synthetic guests. Each accepts an invite through the API, joins the studio
//! over its signalling relay and exchanges media with the SFU; the exit code says whether
//! everybody received everybody.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use castyard_media_worker::bot::{self, BotConfig, BotReport, Synthetic};
use castyard_media_worker::sfu::signal::Source;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

#[derive(clap::Args, Debug)]
pub struct BotArgs {
    /// The Castyard server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The broadcast whose studio the bots join.
    #[arg(long)]
    pub broadcast: String,
    /// How many bots.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub count: u32,
    /// How long they stay together once all have connected, e.g. 20s or 2m.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How long the bots wait for each other to connect before their time starts anyway.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Receive only; publish nothing.
    #[arg(long)]
    pub subscribe_only: bool,
    /// An invite link (or only its token), as a host hands to guests.
    #[arg(long, env = "CASTYARD_BOT_INVITE", conflicts_with = "token")]
    pub invite: Option<String>,
    /// The host's access token instead: the bots invite themselves.
    #[arg(long, env = "CASTYARD_BOT_TOKEN")]
    pub token: Option<String>,
    /// The FFmpeg that encodes the test pattern and tone.
    #[arg(long, env = "CASTYARD_FFMPEG", default_value = "ffmpeg")]
    pub ffmpeg: PathBuf,
    /// The local address the bots send media from.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_ip: IpAddr,
}

type Http = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

fn http() -> Http {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

async fn post(
    client: &Http,
    url: &str,
    bearer: Option<&str>,
    body: Value,
) -> anyhow::Result<Value> {
    let mut req = hyper::Request::post(url).header("content-type", "application/json");
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Full::new(Bytes::from(body.to_string())))?;
    let path = url.split('?').next().unwrap_or(url);
    let res = client
        .request(req)
        .await
        .with_context(|| format!("cannot reach {path}"))?;
    let status = res.status();
    let bytes = res.into_body().collect().await?.to_bytes();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = value["error"]["message"].as_str().unwrap_or("no details");
        bail!("{path}: {status}: {msg}");
    }
    Ok(value)
}

/// The token in an invite link (`.../join/<id>?invite=<token>`), or the argument itself.
fn invite_token(invite: &str) -> String {
    url::Url::parse(invite)
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "invite")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_else(|| invite.to_owned())
}

/// Runs the bots; returns whether every bot received what it should have.
pub async fn run(args: BotArgs) -> anyhow::Result<bool> {
    let base = args.url.trim_end_matches('/').to_owned();
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        bail!("--url must start with http:// or https://, not {base}");
    };
    let client = http();
    let id = &args.broadcast;
    let invite = match (&args.invite, &args.token) {
        (Some(i), _) => invite_token(i),
        (None, Some(t)) => {
            let v = post(
                &client,
                &format!("{base}/api/broadcasts/{id}/invites"),
                Some(t),
                json!({}),
            )
            .await
            .context("inviting the bots")?;
            v["token"]
                .as_str()
                .context("the invite has no token")?
                .to_owned()
        }
        (None, None) => bail!("give --invite (a guest's invite link) or --token (the host's)"),
    };
    let mut urls = Vec::new();
    for i in 1..=args.count {
        let v = post(
            &client,
            &format!("{base}/api/auth/invite/accept"),
            None,
            json!({"token": invite, "displayName": format!("Bot {i}")}),
        )
        .await
        .with_context(|| format!("bot {i} accepting the invite"))?;
        let access = v["accessToken"].as_str().context("no access token")?;
        urls.push(format!(
            "{ws_base}/api/broadcasts/{id}/studio?token={access}"
        ));
    }
    let media = if args.subscribe_only {
        None
    } else {
        Some(Synthetic::start(&args.ffmpeg, "castyard bot").context("starting FFmpeg")?)
    };
    let together = bot::Together::new(urls.len(), args.connect_timeout);
    let runs = urls.into_iter().map(|url| {
        let cfg = BotConfig {
            url,
            duration: args.duration,
            bind_ip: args.bind_ip,
            control_token: None,
            together: Some(together.clone()),
        };
        bot::run(cfg, media.as_ref().map(|m| m.subscribe()))
    });
    let reports = futures::future::join_all(runs).await;
    let publishers: BTreeSet<&str> = if args.subscribe_only {
        BTreeSet::new()
    } else {
        reports
            .iter()
            .filter(|r| r.error.is_none())
            .map(|r| r.participant.as_str())
            .collect()
    };
    let mut ok = true;
    for (i, r) in reports.iter().enumerate() {
        let missing = missing(r, &publishers);
        let connected = match r.connected_after {
            Some(d) => format!("connected in {:.1} s", d.as_secs_f64()),
            None => "never connected (ICE/DTLS)".to_owned(),
        };
        println!(
            "bot {}: {connected}, {} tracks, {} bytes{}",
            i + 1,
            r.tracks(),
            r.bytes(),
            match (&r.error, missing.is_empty()) {
                (Some(e), _) => format!(", failed: {e}"),
                (None, false) => format!(", missing: {}", missing.join(", ")),
                (None, true) => String::new(),
            }
        );
        ok &= r.error.is_none() && missing.is_empty();
    }
    if args.subscribe_only && reports.iter().all(|r| r.offered == 0) {
        println!("nobody in the studio published anything");
        ok = false;
    }
    println!(
        "bots: {}, tracks received: {}, bytes received: {}",
        reports.len(),
        reports.iter().map(BotReport::tracks).sum::<usize>(),
        reports.iter().map(BotReport::bytes).sum::<u64>()
    );
    Ok(ok)
}

/// What a bot should have received and did not: the microphone and camera of every other
/// publishing bot, and everything it was offered.
fn missing(r: &BotReport, publishers: &BTreeSet<&str>) -> Vec<String> {
    let mut out = Vec::new();
    for p in publishers.iter().filter(|p| **p != r.participant) {
        for s in [Source::Microphone, Source::Camera] {
            if !r.has(p, s) {
                out.push(format!("{p}'s {s:?}"));
            }
        }
    }
    if r.tracks() < r.offered && out.is_empty() {
        out.push(format!(
            "{} of {} offered tracks",
            r.offered - r.tracks(),
            r.offered
        ));
    }
    out
}
