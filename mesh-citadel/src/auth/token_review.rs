//! Kubernetes service-account tokens, checked by the API server: a `TokenReview`
//! (`authentication.k8s.io/v1`) of the caller's bearer token for the CA's audience.
//!
//! Only a review that is `authenticated`, names the CA's audience in `status.audiences` (a
//! server that ignored `spec.audiences` would leave it out) and is for a user
//! `system:serviceaccount:<ns>:<sa>` gives an identity: `spiffe://<td>/ns/<ns>/sa/<sa>`.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use mesh_identity::SpiffeId;

use super::{AuthError, Authenticator, Caller};

/// Prefix of a service account's user name.
const SERVICE_ACCOUNT_USER: &str = "system:serviceaccount:";

pub struct TokenReviewAuthenticator {
    reviews: Api<TokenReview>,
    audience: String,
    trust_domain: String,
}

impl TokenReviewAuthenticator {
    pub fn new(
        client: kube::Client,
        audience: impl Into<String>,
        trust_domain: impl Into<String>,
    ) -> Self {
        Self {
            reviews: Api::all(client),
            audience: audience.into(),
            trust_domain: trust_domain.into(),
        }
    }
}

#[tonic::async_trait]
impl Authenticator for TokenReviewAuthenticator {
    fn name(&self) -> &'static str {
        "kubernetes-token-review"
    }

    async fn authenticate(&self, caller: &Caller<'_>) -> Result<Option<SpiffeId>, AuthError> {
        let Some(value) = caller.metadata.get("authorization") else {
            return Ok(None);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MalformedAuthorization)?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        // The token is a credential: errors are reported without the request.
        let answer = self
            .reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::TokenReview(e.to_string()))?;
        let status = answer
            .status
            .ok_or_else(|| AuthError::TokenReview("the review has no status".into()))?;
        identity_of_review(&status, &self.audience, &self.trust_domain).map(Some)
    }
}

/// The identity a review's status grants, or why it grants none.
pub fn identity_of_review(
    status: &TokenReviewStatus,
    audience: &str,
    trust_domain: &str,
) -> Result<SpiffeId, AuthError> {
    if status.authenticated != Some(true) {
        return Err(AuthError::TokenRejected(
            status
                .error
                .clone()
                .unwrap_or_else(|| "not authenticated".into()),
        ));
    }
    let audiences = status.audiences.clone().unwrap_or_default();
    if !audiences.iter().any(|a| a == audience) {
        return Err(AuthError::WrongAudience {
            want: audience.to_string(),
            got: audiences,
        });
    }
    let user = status
        .user
        .as_ref()
        .and_then(|u| u.username.clone())
        .unwrap_or_default();
    let (namespace, account) = user
        .strip_prefix(SERVICE_ACCOUNT_USER)
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
        .ok_or_else(|| AuthError::NotServiceAccount(user.clone()))?;
    Ok(SpiffeId::new(trust_domain, namespace, account)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(json: &str) -> TokenReviewStatus {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_service_account_for_the_audience_is_its_spiffe_id() {
        let s = status(
            r#"{"authenticated":true,"user":{"username":"system:serviceaccount:bookinfo:bookinfo-reviews","uid":"1f7e","groups":["system:serviceaccounts","system:serviceaccounts:bookinfo","system:authenticated"]},"audiences":["mesh-ca"]}"#,
        );
        let id = identity_of_review(&s, "mesh-ca", "cluster.local").unwrap();
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"
        );
    }

    #[test]
    fn anything_else_is_refused() {
        let refused = |json: &str| identity_of_review(&status(json), "mesh-ca", "cluster.local");
        assert!(matches!(
            refused(r#"{"user":{},"error":"[invalid bearer token, service account token has expired]"}"#),
            Err(AuthError::TokenRejected(e)) if e.contains("expired")
        ));
        assert!(matches!(
            refused(r#"{"authenticated":true,"user":{"username":"system:serviceaccount:a:b"}}"#),
            Err(AuthError::WrongAudience { .. })
        ));
        assert!(matches!(
            refused(
                r#"{"authenticated":true,"user":{"username":"jane@example.com"},"audiences":["mesh-ca"]}"#
            ),
            Err(AuthError::NotServiceAccount(_))
        ));
        assert!(matches!(
            refused(
                r#"{"authenticated":true,"user":{"username":"system:serviceaccount:a:b:c"},"audiences":["mesh-ca"]}"#
            ),
            Err(AuthError::NotServiceAccount(_))
        ));
    }
}
