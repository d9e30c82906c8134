//! A model-based property test: random approve / deny / complete / subscribe / fetch / restart
//! sequences against a plain model of the reference (with its quirks fixed), checked after every
//! step.

use std::sync::Arc;
use std::task::Poll;

use consent_optin::{
    Category, FetchPermissions, MemoryStorage, OptIn, Permissions, Status, Subscription,
};
use proptest::prelude::*;

use crate::support::{Counter, cookie_json, optin, poll_once, stored};

/// The eight built-ins and one custom category.
const SLOTS: usize = 9;

fn category(slot: usize) -> Category {
    Category::BUILTIN
        .get(slot)
        .cloned()
        .unwrap_or_else(|| Category::custom("chat"))
}

#[derive(Clone, Debug)]
enum Op {
    Approve(Vec<usize>, bool),
    Deny(Vec<usize>, bool),
    ApproveAll,
    DenyAll,
    Complete,
    Subscribe,
    Unsubscribe(usize),
    Fetch,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let slots = || proptest::collection::vec(0..SLOTS, 0..4);
    prop_oneof![
        4 => (slots(), any::<bool>()).prop_map(|(s, w)| Op::Approve(s, w)),
        4 => (slots(), any::<bool>()).prop_map(|(s, w)| Op::Deny(s, w)),
        1 => Just(Op::ApproveAll),
        1 => Just(Op::DenyAll),
        3 => Just(Op::Complete),
        2 => Just(Op::Subscribe),
        1 => any::<usize>().prop_map(Op::Unsubscribe),
        2 => Just(Op::Fetch),
        1 => Just(Op::Restart),
    ]
}

struct Model {
    status: Status,
    committed: [bool; SLOTS],
    staged: [bool; SLOTS],
    cookie: Option<[bool; SLOTS]>,
    /// Live subscribers: what each should have seen, and what it saw.
    subscribers: Vec<(usize, Counter, Subscription)>,
    /// Pending fetches: the future and, once a completion happened, the permissions it must give.
    fetches: Vec<(FetchPermissions, Option<[bool; SLOTS]>)>,
}

impl Model {
    fn start(cookie: Option<[bool; SLOTS]>) -> Model {
        let values = cookie.unwrap_or([false; SLOTS]);
        Model {
            status: if cookie.is_some() {
                Status::Complete
            } else {
                Status::Pending
            },
            committed: values,
            staged: values,
            cookie,
            subscribers: Vec::new(),
            fetches: Vec::new(),
        }
    }

    fn commit(&mut self) {
        self.committed = self.staged;
        self.status = Status::Complete;
        self.cookie = Some(self.committed);
        for (expected, _, _) in &mut self.subscribers {
            *expected += 1;
        }
        for (_, answer) in &mut self.fetches {
            answer.get_or_insert(self.committed);
        }
    }
}

fn values(permissions: &Permissions) -> Vec<bool> {
    permissions.iter().map(|(_, v)| v).collect()
}

fn new_optin(jar: &Arc<MemoryStorage>) -> OptIn {
    optin(stored(jar).custom_category("chat"))
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let jar = Arc::new(MemoryStorage::new());
    let mut service = new_optin(&jar);
    let mut model = Model::start(None);
    for op in ops {
        let approve = matches!(op, Op::Approve(..) | Op::ApproveAll);
        match op {
            Op::Approve(slots, wait) | Op::Deny(slots, wait) => {
                let categories: Vec<Category> = slots.iter().map(|s| category(*s)).collect();
                let result = if approve {
                    service.approve(&categories, wait).map(|_| ())
                } else {
                    service.deny(&categories, wait).map(|_| ())
                };
                prop_assert_eq!(result.is_err(), slots.is_empty());
                if !slots.is_empty() {
                    model.status = Status::Changed;
                    for slot in slots {
                        model.staged[slot] = approve;
                    }
                    if !wait {
                        model.commit();
                    }
                }
            }
            Op::ApproveAll | Op::DenyAll => {
                if approve {
                    service.approve_all();
                } else {
                    service.deny_all();
                }
                model.staged = [approve; SLOTS];
                model.commit();
            }
            Op::Complete => {
                service.complete();
                if model.status == Status::Changed {
                    model.commit();
                }
            }
            Op::Subscribe => {
                let counter = Counter::default();
                let hit = counter.clone();
                let subscription = service.on_complete(move |_| hit.hit());
                model.subscribers.push((0, counter, subscription));
            }
            Op::Unsubscribe(i) => {
                if !model.subscribers.is_empty() {
                    let i = i % model.subscribers.len();
                    // Dropping the subscription is the unsubscription under test.
                    drop(model.subscribers.remove(i));
                }
            }
            Op::Fetch => {
                let answer = (model.status == Status::Complete).then_some(model.committed);
                model.fetches.push((service.fetch_permissions(), answer));
            }
            Op::Restart => {
                let cookie = model.cookie;
                model = Model::start(cookie);
                service = new_optin(&jar);
            }
        }

        prop_assert_eq!(service.status(), model.status);
        prop_assert_eq!(values(&service.permissions()), model.committed.to_vec());
        prop_assert_eq!(service.is_approved(&[]), model.committed.iter().all(|v| *v));
        prop_assert_eq!(model_cookie(&jar), model.cookie);
        for (expected, seen, _) in &model.subscribers {
            prop_assert_eq!(seen.get(), *expected);
        }
        let mut still_pending = Vec::new();
        for (mut future, answer) in std::mem::take(&mut model.fetches) {
            match (poll_once(&mut future), answer) {
                (Poll::Ready(p), Some(expected)) => prop_assert_eq!(values(&p), expected.to_vec()),
                (Poll::Pending, None) => still_pending.push((future, None)),
                (poll, answer) => {
                    return Err(TestCaseError::fail(format!(
                        "fetch: got {:?}, model {answer:?}",
                        poll.map(|p| values(&p))
                    )));
                }
            }
        }
        model.fetches = still_pending;
    }
    Ok(())
}

/// The cookie as the model sees it: one approval per slot, in declaration order.
fn model_cookie(jar: &MemoryStorage) -> Option<[bool; SLOTS]> {
    let json = cookie_json(jar)?;
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&json).ok()?;
    let mut values = [false; SLOTS];
    for (slot, value) in values.iter_mut().enumerate() {
        *value = object.get(category(slot).as_str())?.as_bool()?;
    }
    Some(values)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_service_follows_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}
