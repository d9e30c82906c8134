//! A deterministic simulation harness: the engine paired with an in-memory cookie jar, a persisted
//! snapshot, a scripted Edge server and a virtual clock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use consent_core::*;
use serde_json::{Value, json};

pub(crate) const ORG: &str = "5BFE274A5F6980A50A495C08@AdobeOrg";

/// A TC string decoder for the tests: `"GRANT…"` grants purpose 1 and the vendor, `"DENY…"` does
/// not, anything else does not decode.
#[derive(Debug)]
pub(crate) struct FakeTcf;

impl IabEvaluator for FakeTcf {
    fn grants_collection(&self, tc_string: &str, vendor_id: u16) -> Result<bool, String> {
        assert_eq!(vendor_id, DEFAULT_IAB_VENDOR_ID);
        if tc_string.starts_with("GRANT") {
            Ok(true)
        } else if tc_string.starts_with("DENY") {
            Ok(false)
        } else {
            Err("not a TC string".to_owned())
        }
    }
}

/// What the scripted server does with the next set-consent request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Accept it and write the consent cookie Edge would write, plus the identity cookie.
    Edge,
    /// Accept it without any cookie.
    NoCookie,
    /// Fail (5xx or network) without a cookie.
    Fail,
    /// Fail, but with a consent cookie `general=<value>`.
    FailWithCookie(&'static str),
    /// Accept it with the identity and cluster cookies Edge writes and this consent cookie
    /// value and max-age instead of Edge's (`"general=foo"`, `"foo=out"`, or max-age 0 to remove).
    EdgeWithConsent(&'static str, u64),
}

#[derive(Debug)]
pub(crate) struct Harness {
    pub(crate) config: Config,
    pub(crate) engine: Engine,
    pub(crate) now: Timestamp,
    pub(crate) names: CookieNames,
    /// The cookie jar: name -> (value, expiry).
    pub(crate) jar: BTreeMap<String, (String, Option<Timestamp>)>,
    pub(crate) snapshot: Option<Snapshot>,
    pub(crate) released: Vec<CommandId>,
    pub(crate) rejected: Vec<(CommandId, RejectReason)>,
    /// Set-consent requests sent, in order, with their consent arrays.
    pub(crate) sent: Vec<(RequestId, Vec<Value>, Option<Value>)>,
    pub(crate) outstanding: VecDeque<RequestId>,
    pub(crate) done: Vec<(SetConsentId, SetConsentOutcome)>,
    pub(crate) logs: Vec<(LogLevel, String)>,
    pub(crate) records: Vec<ConsentRecord>,
    pub(crate) changes: Vec<ConsentView>,
    /// Cookies written other than the consent cookie, with the state reported at the time (the
    /// last `ConsentChanged` before the write in the action stream).
    pub(crate) other_cookie_writes: Vec<(String, ConsentView)>,
    /// The state last reported through `ConsentChanged`.
    pub(crate) reported: Option<ConsentView>,
    /// Cookies the engine refused to write.
    pub(crate) refused: Vec<String>,
    /// Every action, in order.
    pub(crate) trace: Vec<Action>,
    next_command: u64,
    next_set_consent: u64,
}

impl Harness {
    pub(crate) fn config(default: &str) -> Config {
        Config::new(ORG)
            .default_consent(default.parse().unwrap())
            .iab_evaluator(Arc::new(FakeTcf))
    }

    /// A started engine with an empty jar.
    pub(crate) fn new(default: &str) -> Self {
        let mut h = Self::unstarted(Self::config(default));
        h.start();
        h
    }

    pub(crate) fn unstarted(config: Config) -> Self {
        Self {
            engine: Engine::new(config.clone()),
            names: CookieNames::new(config.org_id()),
            config,
            now: Timestamp::from_millis(1_700_000_000_000),
            jar: BTreeMap::new(),
            snapshot: None,
            released: Vec::new(),
            rejected: Vec::new(),
            sent: Vec::new(),
            outstanding: VecDeque::new(),
            done: Vec::new(),
            logs: Vec::new(),
            records: Vec::new(),
            changes: Vec::new(),
            other_cookie_writes: Vec::new(),
            reported: None,
            refused: Vec::new(),
            trace: Vec::new(),
            next_command: 1,
            next_set_consent: 1,
        }
    }

    /// A started engine whose jar holds these cookies (`consent` value, identity present or not).
    pub(crate) fn with_cookies(default: &str, consent: Option<&str>, identity: bool) -> Self {
        let mut h = Self::unstarted(Self::config(default));
        if let Some(value) = consent {
            h.jar
                .insert(h.names.consent().to_owned(), (value.to_owned(), None));
        }
        if identity {
            h.jar
                .insert(h.names.identity().to_owned(), ("CiQ...".to_owned(), None));
        }
        h.start();
        h
    }

    pub(crate) fn start(&mut self) {
        let stored = Stored {
            consent_cookie: self.jar.get(self.names.consent()).map(|(value, expires)| {
                StoredCookie {
                    value: value.clone(),
                    expires: *expires,
                }
            }),
            identity_cookie: self.jar.contains_key(self.names.identity()),
            snapshot: self.snapshot.clone(),
        };
        self.handle(Input::Start(stored));
    }

    /// A new engine over the same jar and snapshot, as after a process restart. Returns the
    /// commands that were still queued (the durable queue would submit them again).
    pub(crate) fn restart(&mut self) -> Vec<CommandId> {
        let config = self.config.clone();
        self.restart_with(config)
    }

    /// A restart with another configuration (another `defaultConsent`, say).
    pub(crate) fn restart_with(&mut self, config: Config) -> Vec<CommandId> {
        let queued: Vec<CommandId> = self.engine.queued().collect();
        self.engine = Engine::new(config.clone());
        self.config = config;
        self.outstanding.clear();
        self.reported = None;
        self.start();
        queued
    }

    pub(crate) fn advance(&mut self, millis: u64) {
        self.now = Timestamp::from_millis(self.now.as_millis() + millis);
    }

    pub(crate) fn handle(&mut self, input: Input) {
        self.engine.handle(self.now, input).unwrap();
        self.drain();
    }

    pub(crate) fn drain(&mut self) {
        while let Some(action) = self.engine.poll_action() {
            self.trace.push(action.clone());
            match action {
                Action::Release { command, .. } => {
                    assert!(
                        !self.released.contains(&command)
                            && !self.rejected.iter().any(|(c, _)| *c == command),
                        "{command:?} ended twice"
                    );
                    self.released.push(command);
                }
                Action::Reject { command, reason } => {
                    assert!(
                        !self.released.contains(&command)
                            && !self.rejected.iter().any(|(c, _)| *c == command),
                        "{command:?} ended twice"
                    );
                    self.rejected.push((command, reason));
                }
                Action::SendSetConsent {
                    request,
                    consent,
                    identity_map,
                    ..
                } => {
                    self.sent.push((request, consent, identity_map));
                    self.outstanding.push_back(request);
                }
                Action::SetConsentDone { id, outcome } => self.done.push((id, outcome)),
                Action::StoreCookie(cookie) => {
                    if cookie.name != self.names.consent() {
                        let reported = self.reported.clone().expect("a state was reported");
                        self.other_cookie_writes
                            .push((cookie.name.clone(), reported));
                    }
                    let expires = cookie.max_age.map(|s| self.now.plus_secs(s));
                    self.jar.insert(cookie.name, (cookie.value, expires));
                }
                Action::RemoveCookie { name } => {
                    self.jar.remove(&name);
                }
                Action::PersistState(snapshot) => self.snapshot = Some(snapshot),
                Action::Record(record) => self.records.push(record),
                Action::ConsentChanged(view) => {
                    self.reported = Some(view.clone());
                    self.changes.push(view);
                }
                Action::CookieRefused { name } => self.refused.push(name),
                Action::Log { level, message } => self.logs.push((level, message.into_owned())),
                other => panic!("unexpected action {other:?}"),
            }
        }
    }

    /// Submits a command that needs `general`; returns its id.
    pub(crate) fn submit(&mut self) -> CommandId {
        self.submit_with(Requirement::general(), Mode::Queue)
    }

    pub(crate) fn submit_with(&mut self, requirement: Requirement, mode: Mode) -> CommandId {
        let id = CommandId(self.next_command);
        self.next_command += 1;
        self.submit_id(id, requirement, mode);
        id
    }

    /// Submits a command with a chosen id (a command read back from the durable queue).
    pub(crate) fn submit_id(&mut self, id: CommandId, requirement: Requirement, mode: Mode) {
        self.handle(Input::Submit {
            id,
            requirement,
            mode,
        });
    }

    /// A `setConsent` call with these consent objects (as JSON).
    pub(crate) fn set_consent_json(&mut self, options: Value) -> SetConsentId {
        let options = SetConsentOptions::from_json(&options).unwrap();
        let id = SetConsentId(self.next_set_consent);
        self.next_set_consent += 1;
        self.handle(Input::SetConsent { id, options });
        id
    }

    /// Adobe 1.0 `{general: value}`.
    pub(crate) fn set_consent(&mut self, general: &str) -> SetConsentId {
        self.set_consent_json(json!({"consent": [adobe1(general)]}))
    }

    /// Answers the oldest outstanding set-consent request.
    pub(crate) fn answer(&mut self, answer: Answer) {
        let request = self
            .outstanding
            .pop_front()
            .expect("a set-consent request in flight");
        let consent = self
            .sent
            .iter()
            .find(|(r, _, _)| *r == request)
            .map(|(_, c, _)| c.clone())
            .unwrap();
        let (outcome, cookies) = match answer {
            Answer::Edge => (Outcome::Success, self.edge_cookies(&consent)),
            Answer::NoCookie => (Outcome::Success, vec![]),
            Answer::Fail => (Outcome::Failure, vec![]),
            Answer::EdgeWithConsent(value, max_age) => {
                let mut cookies = vec![Cookie::new(self.names.consent(), value, Some(max_age))];
                cookies.extend(self.identity_cookies());
                (Outcome::Success, cookies)
            }
            Answer::FailWithCookie(value) => (
                Outcome::Failure,
                vec![Cookie::new(
                    self.names.consent(),
                    format!("general={value}"),
                    Some(CONSENT_COOKIE_MAX_AGE),
                )],
            ),
        };
        self.handle(Input::Response(Response {
            origin: Origin::SetConsent(request),
            outcome,
            cookies,
        }));
    }

    /// The cookies Edge writes for a set-consent body: the consent cookie (the strictest of the
    /// objects), the identity cookie and the cluster cookie.
    pub(crate) fn edge_cookies(&self, consent: &[Value]) -> Vec<Cookie> {
        let mut general = Decision::In;
        for object in consent {
            let d = match (object["standard"].as_str(), object["version"].as_str()) {
                (Some("Adobe"), Some("1.0")) => {
                    Decision::from_wire(object["value"]["general"].as_str().unwrap()).unwrap()
                }
                (Some("Adobe"), Some("2.0")) => match object["value"]["collect"]["val"].as_str() {
                    Some("y") => Decision::In,
                    Some("n") => Decision::Out,
                    _ => Decision::Pending,
                },
                _ => {
                    let applies = object["gdprApplies"].as_bool().unwrap_or(true);
                    if !applies || object["value"].as_str().unwrap().starts_with("GRANT") {
                        Decision::In
                    } else {
                        Decision::Out
                    }
                }
            };
            general = general.stricter(d);
        }
        vec![
            Cookie::new(
                self.names.consent(),
                format!("general={general}"),
                Some(CONSENT_COOKIE_MAX_AGE),
            ),
            Cookie::new(self.names.identity(), "CiQ-ecid", Some(34_128_000)),
            Cookie::new(self.names.cluster(), "or2", Some(1_800)),
        ]
    }

    /// A response to an interact request for a released command, carrying `cookies`.
    pub(crate) fn interact_response(&mut self, outcome: Outcome, cookies: Vec<Cookie>) {
        self.handle(Input::Response(Response {
            origin: Origin::Other,
            outcome,
            cookies,
        }));
    }

    /// The identity and cluster cookies an interact response carries.
    pub(crate) fn identity_cookies(&self) -> Vec<Cookie> {
        vec![
            Cookie::new(self.names.identity(), "CiQ-ecid", Some(34_128_000)),
            Cookie::new(self.names.cluster(), "or2", Some(1_800)),
        ]
    }

    pub(crate) fn consent_cookie(&self) -> Option<&str> {
        self.jar.get(self.names.consent()).map(|(v, _)| v.as_str())
    }

    pub(crate) fn state(&self) -> (Decision, bool) {
        let view = self.engine.consent();
        (view.state, view.was_set)
    }

    pub(crate) fn log_messages(&self) -> Vec<(LogLevel, &str)> {
        self.logs.iter().map(|(l, m)| (*l, m.as_str())).collect()
    }

    pub(crate) fn reason_of(&self, command: CommandId) -> Option<RejectReason> {
        self.rejected
            .iter()
            .find(|(c, _)| *c == command)
            .map(|(_, r)| *r)
    }
}

pub(crate) fn adobe1(general: &str) -> Value {
    json!({"standard": "Adobe", "version": "1.0", "value": {"general": general}})
}

pub(crate) fn adobe2(collect: &str) -> Value {
    json!({"standard": "Adobe", "version": "2.0",
           "value": {"collect": {"val": collect}, "metadata": {"time": "2019-01-01T15:52:25+00:00"}}})
}

pub(crate) fn iab(tc: &str, gdpr_applies: bool) -> Value {
    json!({"standard": "IAB TCF", "version": "2.0", "value": tc, "gdprApplies": gdpr_applies})
}
