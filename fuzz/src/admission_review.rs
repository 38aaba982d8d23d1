//! AdmissionReviews sent to the injector's two webhooks (`/inject`, `/validate`). Input: the
//! request body.

use std::sync::OnceLock;

use k8s_openapi::ByteString;
use mesh_injector::review::{inject, validate};
use mesh_injector::{Injector, Template, Values};
use serde_json::Value;

fn injector() -> &'static Injector {
    static INJECTOR: OnceLock<Injector> = OnceLock::new();
    INJECTOR.get_or_init(|| {
        Injector::new(Values::default(), Template::default_template())
            .expect("the default template and values")
    })
}

pub fn run(data: &[u8]) {
    // Lossy: serde skips the fields the webhook does not read without checking their UTF-8,
    // so a review may be answered although such a field holds invalid bytes (harmless: the
    // API server sends UTF-8, and nothing read from the review is affected).
    let sent: Option<Value> = serde_json::from_str(&String::from_utf8_lossy(data)).ok();
    for answer in [
        inject(injector(), data).map(|a| a.0),
        validate(data).map(|a| a.0),
    ] {
        match answer {
            Ok(body) => {
                let sent = sent.as_ref().expect("an answer to a body that is not JSON");
                check_answer(&body, sent);
            }
            // A 400 with a reason.
            Err(reason) => assert!(!reason.0.is_empty()),
        }
    }
}

/// The answer is an AdmissionReview for the request's uid, and a patch applies to the object
/// it was computed for.
fn check_answer(body: &[u8], sent: &Value) {
    let out: Value = serde_json::from_slice(body).expect("the answer is JSON");
    assert_eq!(out["kind"], "AdmissionReview");
    assert_eq!(out["apiVersion"], sent["apiVersion"]);
    let response = &out["response"];
    assert_eq!(response["uid"], sent["request"]["uid"]);
    assert!(response["allowed"].is_boolean());
    if let Some(patch) = response.get("patch") {
        let bytes: ByteString = serde_json::from_value(patch.clone()).expect("base64");
        let patch: json_patch::Patch =
            serde_json::from_slice(&bytes.0).expect("the patch is a JSONPatch");
        let mut object = sent["request"]["object"].clone();
        json_patch::patch(&mut object, &patch).expect("the patch applies to the pod");
    }
}
