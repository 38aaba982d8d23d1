//! Test signers: EC and Ed25519 keys generated per test with ring; RSA from a throwaway
//! 2048-bit test key (`testdata/rsa2048.pem`, used nowhere else) because ring cannot generate
//! RSA keys. Shared by the unit tests and the proxy's integration tests (`#[path]`).

#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

const RSA_TEST_KEY: &str = include_str!("testdata/rsa2048.pem");

enum Pair {
    Ec(EcdsaKeyPair, &'static str),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

pub struct Signer {
    pub alg: &'static str,
    pub kid: String,
    pair: Pair,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Signer {
    fn ec(
        kid: &str,
        alg: &'static str,
        sign: &'static signature::EcdsaSigningAlgorithm,
        crv: &'static str,
    ) -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(sign, &rng).expect("generate EC key");
        let pair = EcdsaKeyPair::from_pkcs8(sign, pkcs8.as_ref(), &rng).expect("load EC key");
        Signer {
            alg,
            kid: kid.into(),
            pair: Pair::Ec(pair, crv),
        }
    }

    pub fn es256(kid: &str) -> Signer {
        Self::ec(
            kid,
            "ES256",
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            "P-256",
        )
    }

    pub fn es384(kid: &str) -> Signer {
        Self::ec(
            kid,
            "ES384",
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            "P-384",
        )
    }

    pub fn ed25519(kid: &str) -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generate key");
        Signer {
            alg: "EdDSA",
            kid: kid.into(),
            pair: Pair::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("load key")),
        }
    }

    pub fn rs256(kid: &str) -> Signer {
        let body: String = RSA_TEST_KEY
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = STANDARD.decode(body).expect("PEM body");
        Signer {
            alg: "RS256",
            kid: kid.into(),
            pair: Pair::Rsa(RsaKeyPair::from_pkcs8(&der).expect("load RSA key")),
        }
    }

    /// The public key as one JWK.
    pub fn jwk(&self) -> Value {
        match &self.pair {
            Pair::Ec(p, crv) => {
                let point = p.public_key().as_ref();
                let size = (point.len() - 1) / 2;
                json!({"kty": "EC", "crv": crv, "kid": self.kid, "alg": self.alg,
                       "x": b64(&point[1..1 + size]), "y": b64(&point[1 + size..])})
            }
            Pair::Ed(p) => json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid,
                                   "x": b64(p.public_key().as_ref())}),
            Pair::Rsa(p) => {
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(p.public());
                json!({"kty": "RSA", "kid": self.kid, "alg": "RS256", "use": "sig",
                       "n": b64(&c.n), "e": b64(&c.e)})
            }
        }
    }

    /// A JWK set with this key only.
    pub fn jwks(&self) -> String {
        json!({"keys": [self.jwk()]}).to_string()
    }

    /// A compact JWS of `claims` with this key and its `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg, "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match &self.pair {
            Pair::Ec(p, _) => p
                .sign(&rng, input.as_bytes())
                .expect("sign")
                .as_ref()
                .to_vec(),
            Pair::Ed(p) => p.sign(input.as_bytes()).as_ref().to_vec(),
            Pair::Rsa(p) => {
                let mut sig = vec![0; p.public().modulus_len()];
                p.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .expect("sign");
                sig
            }
        };
        format!("{input}.{}", b64(&sig))
    }
}

/// Several keys as one set, as an issuer publishes during a rotation.
pub fn jwks_of(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}).to_string()
}

/// A JWKS endpoint on loopback whose document the test changes; `None` answers 503, as a
/// server that is away. Counts the fetches it served.
pub struct JwksServer {
    pub addr: std::net::SocketAddr,
    document: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _stop: tokio_util::sync::DropGuard,
}

impl JwksServer {
    pub async fn start(document: Option<String>) -> JwksServer {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let doc = std::sync::Arc::new(std::sync::Mutex::new(document));
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let (d, h, s) = (doc.clone(), hits.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    () = s.cancelled() => return,
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                };
                let (d, h) = (d.clone(), h.clone());
                let svc = hyper::service::service_fn(move |_req| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let body = d.lock().unwrap().clone();
                    async move {
                        let mut resp = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(body.clone().unwrap_or_default()),
                        ));
                        if body.is_none() {
                            *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc),
                );
            }
        });
        JwksServer {
            addr,
            document: doc,
            hits,
            _stop: stop.drop_guard(),
        }
    }

    pub fn uri(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    pub fn set(&self, document: Option<String>) {
        *self.document.lock().unwrap() = document;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}
