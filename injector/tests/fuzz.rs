//! Mutated AdmissionReviews: nothing panics, every answer is a review (200) or a reason
//! (400), and every patch that is returned applies to the object it was computed for.

mod common;

use std::time::Duration;

use k8s_openapi::ByteString;
use mesh_injector::review::{inject, validate};
use mesh_injector::{Injector, Template, Values};
use serde_json::{Value, json};

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Value> {
    let dir = format!("{}/tests/reviews", env!("CARGO_MANIFEST_DIR"));
    ["pod-create.json", "virtualservice-update.json"]
        .iter()
        .map(|f| {
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}/{f}")).unwrap()).unwrap()
        })
        .collect()
}

fn random_value(rng: &mut Rng) -> Value {
    match rng.below(9) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(""),
        4 => json!("*"),
        5 => json!([]),
        6 => json!({}),
        7 => json!({"name": "mesh-proxy"}),
        _ => json!("http"),
    }
}

/// Replaces, deletes or retypes one node somewhere in the tree.
fn mutate(v: &mut Value, rng: &mut Rng, depth: usize) {
    let stop = depth > 0 && rng.below(4) == 0;
    match v {
        Value::Object(map) if !map.is_empty() && !stop => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let k = &keys[rng.below(keys.len())];
            match rng.below(6) {
                0 => {
                    map.remove(k);
                }
                1 => {
                    map.insert(k.clone(), random_value(rng));
                }
                _ => mutate(map.get_mut(k).unwrap(), rng, depth + 1),
            }
        }
        Value::Array(items) if !items.is_empty() && !stop => {
            let i = rng.below(items.len());
            match rng.below(5) {
                0 => {
                    items.remove(i);
                }
                1 => items.push(items[i].clone()),
                _ => mutate(&mut items[i], rng, depth + 1),
            }
        }
        _ => *v = random_value(rng),
    }
}

/// Mostly inside the object, where the engine's code is; sometimes in the envelope.
fn mutate_somewhere(review: &mut Value, rng: &mut Rng) {
    let pick = rng.below(10);
    let request_ok = review.get("request").is_some_and(Value::is_object);
    let object_ok = request_ok
        && review["request"]
            .get("object")
            .is_some_and(Value::is_object);
    let target = match pick {
        1 | 2 if request_ok => &mut review["request"],
        3.. if object_ok => &mut review["request"]["object"],
        _ => review,
    };
    mutate(target, rng, 0);
}

fn check_answer(body: &[u8], original: &Value) {
    let out: Value = serde_json::from_slice(body).expect("answer is JSON");
    let resp = &out["response"];
    assert!(resp["uid"].is_string());
    assert!(resp["allowed"].is_boolean());
    if let Some(patch) = resp.get("patch") {
        let bytes: ByteString = serde_json::from_value(patch.clone()).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes.0).unwrap();
        let mut obj = original["request"]["object"].clone();
        json_patch::patch(&mut obj, &patch).expect("returned patch applies");
    }
}

#[test]
fn mutated_reviews_never_panic() {
    let injector = Injector::new(Values::default(), Template::default_template()).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut bad) = (0, 0);
    for round in 0..800 {
        let mut review = seeds()[round % 2].clone();
        for _ in 0..=rng.below(3) {
            mutate_somewhere(&mut review, &mut rng);
        }
        let mut bytes = serde_json::to_vec(&review).unwrap();
        // Some rounds also damage the bytes.
        if round % 5 == 0 && !bytes.is_empty() {
            let i = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes.truncate(i),
                1 => bytes[i] = rng.next() as u8,
                _ => bytes.insert(i, b'{'),
            }
        }
        for answer in [
            inject(&injector, &bytes).map(|a| a.0),
            validate(&bytes).map(|a| a.0),
        ] {
            match answer {
                Ok(body) => {
                    check_answer(&body, &review);
                    ok += 1;
                }
                Err(reason) => {
                    assert!(!reason.0.is_empty());
                    if std::env::var_os("FUZZ_DEBUG").is_some() {
                        eprintln!("{}", reason.0);
                    }
                    bad += 1;
                }
            }
        }
    }
    // Both paths were exercised.
    assert!(ok > 200 && bad > 100, "ok={ok} bad={bad}");
}

#[tokio::test]
async fn mutated_reviews_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let pair = common::write_pair(dir.path(), "tls");
    let s = common::start(
        &pair.cert,
        &pair.key,
        Values::default(),
        Duration::from_secs(60),
    )
    .await;
    let mut rng = Rng(42);
    for round in 0..60 {
        let mut review = seeds()[round % 2].clone();
        mutate_somewhere(&mut review, &mut rng);
        let path = if round % 3 == 0 {
            "/validate"
        } else {
            "/inject"
        };
        let body = serde_json::to_vec(&review).unwrap();
        let r = common::request(
            s.addr,
            std::slice::from_ref(&pair.der),
            round % 2 == 0,
            "POST",
            path,
            body,
        )
        .await;
        match r.status {
            200 => check_answer(&r.body, &review),
            400 => assert!(!r.body.is_empty()),
            other => panic!("status {other}: {}", String::from_utf8_lossy(&r.body)),
        }
    }
    // Still serving.
    let r = common::request(
        s.addr,
        std::slice::from_ref(&pair.der),
        false,
        "GET",
        "/healthz",
        vec![],
    )
    .await;
    assert_eq!(r.status, 200);
}
