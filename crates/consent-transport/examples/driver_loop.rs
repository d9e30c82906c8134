//! The lower layers by hand: the consent engine and the HTTP transport against a running
//! `consent-server` — the loop that the `consent` client runs for you.
//!
//! ```sh
//! cargo run -p consent-server -- --allow-unknown-datastreams &   # 127.0.0.1:8080, SQLite
//! cargo run -p consent-transport --example driver_loop -- http://127.0.0.1:8080
//! ```
//!
//! With `defaultConsent` "pending", a page view is queued and nothing is sent; `setConsent` goes
//! out (it is never gated); the server answers with the consent cookie; the engine releases the
//! queued event, which is sent, and only then allows the identity cookie. The cookie jar is
//! persisted with `consent-store` in a data directory (a temporary one here).

#![allow(
    clippy::print_stdout,
    reason = "the example shows what happens, step by step"
)]

use std::collections::VecDeque;
use std::error::Error;
use std::time::{SystemTime, UNIX_EPOCH};

use consent_core::*;
use consent_transport::{
    CookieJar, DataRequest, EdgeConfig, Event, HttpTransport, Request, SetConsentRequest,
    Transport, engine_response,
};

/// The organisation `consent-server` uses for datastreams it does not know (`--default-org`).
const ORG: &str = "consent@AdobeOrg";
const DATASTREAM: &str = "ebebf826-a01f-4458-8cec-ef61de241c93";

fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp::from_millis(millis)
}

enum Work {
    SetConsent(RequestId, Box<SetConsentRequest>),
    Event,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let data_dir = tempfile::tempdir()?;
    let store = consent_store::Store::open(data_dir.path())?;
    let jar = CookieJar::new(store.cookie_jar().load()?);
    let transport = HttpTransport::new(EdgeConfig::new(&base, DATASTREAM, ORG)?, jar.clone())?;

    let mut engine = Engine::new(Config::new(ORG).default_consent(DefaultConsent::Pending));
    let (consent_cookie, identity_cookie) = transport.stored_cookies();
    engine.handle(
        now(),
        Input::Start(Stored {
            consent_cookie,
            identity_cookie,
            snapshot: None,
        }),
    )?;

    let page_view = CommandId(1);
    engine.handle(
        now(),
        Input::Submit {
            id: page_view,
            requirement: Requirement::general(),
            mode: Mode::Queue,
        },
    )?;
    while let Some(action) = engine.poll_action() {
        transport.apply(&action)?;
        if let Action::Log { level, message } = &action {
            println!("   [{level:?}] {message}");
        }
    }
    println!(
        "1. page view submitted: {:?} (consent is {})",
        engine.check(Requirement::general()),
        engine.consent().state
    );

    engine.handle(
        now(),
        Input::SetConsent {
            id: SetConsentId(1),
            options: SetConsentOptions::new(vec![ConsentObject::adobe_v1("in")?]),
        },
    )?;
    println!("2. setConsent {{general: in}}");

    let mut work = VecDeque::new();
    loop {
        while let Some(action) = engine.poll_action() {
            transport.apply(&action)?;
            match &action {
                Action::SendSetConsent { request, .. } => {
                    if let Some((id, body)) = SetConsentRequest::from_action(&action) {
                        work.push_back(Work::SetConsent(id, Box::new(body)));
                    }
                    println!("   -> POST privacy/set-consent ({request:?})");
                }
                Action::Release {
                    command,
                    queued_for_ms,
                } => {
                    println!("   -> {command:?} released after {queued_for_ms} ms in the queue");
                    work.push_back(Work::Event);
                }
                Action::Reject { command, reason } => {
                    println!("   -> {command:?} rejected: {reason}")
                }
                Action::StoreCookie(cookie) => {
                    println!("   -> cookie {} = {}", cookie.name, cookie.value)
                }
                Action::CookieRefused { name } => {
                    println!("   -> cookie {name} refused: consent does not allow it")
                }
                Action::Log { level, message } => println!("   [{level:?}] {message}"),
                Action::SetConsentDone { outcome, .. } => println!("   -> setConsent: {outcome:?}"),
                _ => {}
            }
        }
        let Some(next) = work.pop_front() else { break };
        let response = match next {
            Work::SetConsent(request, body) => {
                let result = transport.send(Request::SetConsent(*body)).await;
                engine_response(&result, Origin::SetConsent(request))
            }
            Work::Event => {
                let event =
                    Event::new(serde_json::json!({"eventType": "web.webpagedetails.pageViews"}));
                let result = transport
                    .send(Request::Interact(DataRequest::events(vec![event])))
                    .await;
                println!(
                    "   -> POST interact: {}",
                    if result.is_ok() { "sent" } else { "failed" }
                );
                engine_response(&result, Origin::Other)
            }
        };
        engine.handle(now(), Input::Response(response))?;
    }

    store.cookie_jar().save(&jar.lock())?;
    let view = engine.consent();
    println!("3. consent is now {} (set: {})", view.state, view.was_set);
    let names: Vec<String> = jar.lock().iter_any().map(|c| c.name().to_owned()).collect();
    println!(
        "4. cookie jar, saved in {}: {names:?}",
        data_dir.path().display()
    );
    Ok(())
}
