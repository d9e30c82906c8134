//! The real engine drives the HTTP transport: nothing is sent, and no cookie but the consent cookie
//! is written, unless the engine allowed it.

use std::collections::VecDeque;

use consent_core::{
    Action, CommandId, Config, ConsentObject, DefaultConsent, Engine, Input, Mode, Origin,
    Requirement, SetConsentId, SetConsentOptions, SetConsentOutcome, Stored, Timestamp,
};
use consent_transport::{
    CookieJar, DataRequest, Event, HttpTransport, Request, SetConsentRequest, Transport,
    engine_response,
};
use serde_json::json;

use crate::server::{Recorded, Reply, TestServer};
use crate::{CLUSTER, CONSENT, IDENTITY, ORG, transport};

/// An Edge server in miniature: set-consent writes the consent cookie from `general`, and every
/// answer asks for the identity and cluster cookies.
fn edge(_: usize, request: &Recorded) -> Reply {
    let mut items = vec![
        json!({"key": IDENTITY, "value": "ECID42", "maxAge": 34128000}),
        json!({"key": CLUSTER, "value": "or2", "maxAge": 1800}),
    ];
    if request.path.ends_with("/privacy/set-consent") {
        let general = request.body["consent"][0]["value"]["general"]
            .as_str()
            .unwrap_or("out");
        items.push(
            json!({"key": CONSENT, "value": format!("general={general}"), "maxAge": 15552000}),
        );
    }
    Reply::store(json!(items))
}

/// The facade's loop in miniature.
struct Driver {
    engine: Engine,
    transport: HttpTransport,
    now: Timestamp,
    released: Vec<CommandId>,
    rejected: Vec<CommandId>,
    done: Vec<(SetConsentId, SetConsentOutcome)>,
}

impl Driver {
    async fn start(default: DefaultConsent, transport: HttpTransport) -> Self {
        let (consent_cookie, identity_cookie) = transport.stored_cookies();
        let mut driver = Self {
            engine: Engine::new(Config::new(ORG).default_consent(default)),
            transport,
            now: Timestamp::from_millis(1_000),
            released: Vec::new(),
            rejected: Vec::new(),
            done: Vec::new(),
        };
        driver
            .input(Input::Start(Stored {
                consent_cookie,
                identity_cookie,
                snapshot: None,
            }))
            .await;
        driver
    }

    async fn submit(&mut self, id: u64) {
        self.input(Input::Submit {
            id: CommandId(id),
            requirement: Requirement::general(),
            mode: Mode::Queue,
        })
        .await;
    }

    async fn set_consent(&mut self, id: u64, general: &str) {
        self.input(Input::SetConsent {
            id: SetConsentId(id),
            options: SetConsentOptions::new(vec![ConsentObject::adobe_v1(general).unwrap()]),
        })
        .await;
    }

    async fn input(&mut self, input: Input) {
        self.engine.handle(self.now, input).unwrap();
        let mut sends = VecDeque::new();
        loop {
            while let Some(action) = self.engine.poll_action() {
                self.transport.apply(&action).unwrap();
                match &action {
                    Action::Release { command, .. } => {
                        self.released.push(*command);
                        let event = Event::new(json!({"command": command.0}));
                        sends.push_back((
                            Origin::Other,
                            Request::Interact(DataRequest::events(vec![event])),
                        ));
                    }
                    Action::Reject { command, .. } => self.rejected.push(*command),
                    Action::SetConsentDone { id, outcome } => self.done.push((*id, *outcome)),
                    _ => {
                        if let Some((request, body)) = SetConsentRequest::from_action(&action) {
                            sends.push_back((
                                Origin::SetConsent(request),
                                Request::SetConsent(body),
                            ));
                        }
                    }
                }
            }
            let Some((origin, request)) = sends.pop_front() else {
                break;
            };
            let result = self.transport.send(request).await;
            self.engine
                .handle(self.now, Input::Response(engine_response(&result, origin)))
                .unwrap();
        }
    }
}

fn jar_names(jar: &CookieJar) -> Vec<String> {
    let mut names: Vec<String> = jar
        .lock()
        .iter_unexpired()
        .map(|c| c.name().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn while_consent_is_pending_or_out_only_set_consent_reaches_the_server() {
    let server = TestServer::start(edge).await;
    let jar = CookieJar::default();
    let (transport, _) = transport(&server.base, jar.clone());
    let mut driver = Driver::start(DefaultConsent::Pending, transport).await;

    // Pending: commands wait, nothing is sent.
    driver.submit(1).await;
    driver.submit(2).await;
    assert!(server.requests().is_empty());
    assert!(driver.released.is_empty());

    // The user declines: one set-consent; the queued commands are rejected; of the cookies the
    // answer asked for, only the consent cookie is written.
    driver.set_consent(1, "out").await;
    assert_eq!(server.paths(), ["/ee/v1/privacy/set-consent"]);
    assert_eq!(driver.rejected, [CommandId(1), CommandId(2)]);
    assert_eq!(driver.done, [(SetConsentId(1), SetConsentOutcome::Sent)]);
    assert_eq!(jar_names(&jar), [CONSENT]);
    assert_eq!(
        driver.transport.stored_cookies().0.unwrap().value,
        "general=out"
    );

    // Out: a new command is rejected and nothing is sent.
    driver.submit(3).await;
    assert_eq!(driver.rejected.last(), Some(&CommandId(3)));
    assert_eq!(server.requests().len(), 1);

    // The user consents: the set-consent carries the consent cookie; identity and cluster are now
    // written; the next command goes out with them, to the hinted cluster.
    driver.set_consent(2, "in").await;
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].path, "/ee/v1/privacy/set-consent");
    assert_eq!(
        requests[1].state_entries(),
        [(CONSENT.to_owned(), "general=out".to_owned())]
    );
    assert_eq!(jar_names(&jar), [CLUSTER, CONSENT, IDENTITY]);

    driver.submit(4).await;
    assert_eq!(driver.released, [CommandId(4)]);
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[2].path, "/ee/or2/v1/interact");
    assert_eq!(requests[2].body["events"][0]["xdm"]["command"], 4);
    assert!(
        requests[2]
            .header("cookie")
            .unwrap()
            .contains("kndctr_ORG_AdobeOrg_identity=ECID42")
    );
}

#[tokio::test]
async fn with_default_out_nothing_is_sent_until_consent_is_given() {
    let server = TestServer::start(edge).await;
    let jar = CookieJar::default();
    let (transport, _) = transport(&server.base, jar.clone());
    let mut driver = Driver::start(DefaultConsent::Out, transport).await;

    driver.submit(1).await;
    driver.submit(2).await;
    assert_eq!(driver.rejected, [CommandId(1), CommandId(2)]);
    assert!(server.requests().is_empty());
    assert!(jar_names(&jar).is_empty());

    driver.set_consent(1, "in").await;
    driver.submit(3).await;
    assert_eq!(
        server.paths(),
        ["/ee/v1/privacy/set-consent", "/ee/or2/v1/interact"]
    );
    assert_eq!(driver.released, [CommandId(3)]);
}

#[tokio::test]
async fn a_failed_set_consent_is_fed_back_as_a_failure() {
    let server = TestServer::start(|_, _| Reply::json(503, json!({}))).await;
    let jar = CookieJar::default();
    let (transport, sleep) = transport(&server.base, jar.clone());
    let mut driver = Driver::start(DefaultConsent::Pending, transport).await;

    driver.submit(1).await;
    driver.set_consent(1, "in").await;

    assert_eq!(driver.done, [(SetConsentId(1), SetConsentOutcome::Failed)]);
    assert!(driver.released.is_empty(), "consent was not set");
    assert_eq!(server.requests().len(), 4);
    assert_eq!(sleep.waits().len(), 3);
    assert!(jar_names(&jar).is_empty());
}
