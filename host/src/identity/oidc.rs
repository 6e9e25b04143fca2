//! OpenID Connect: an issuer's JWTs accepted as bearer tokens (`[auth] mode = "oidc"`).
//!
//! A JWT is checked against the issuer's published keys (its discovery document names the JWKS),
//! its signature with an asymmetric algorithm only, then its `iss`, `aud`, `exp` and (when
//! present) `nbf`. The user is the configured claim (`sub` by default); the role is the highest
//! one any of the user's groups maps to in `[auth.oidc.roles]`. The keys are fetched once and
//! again when a token names a key the lake does not hold (the issuer rotated them), at most every
//! [`REFETCH_EVERY`].

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde_json::Value;

use super::{Principal, Role};
use crate::config::OidcConfig;

/// The shortest time between two fetches of the issuer's keys.
pub const REFETCH_EVERY: Duration = Duration::from_secs(30);

/// The issuer's keys, as last fetched.
#[derive(Default)]
struct Keys {
    set: Option<JwkSet>,
    fetched: Option<Instant>,
}

/// Checks the JWTs of one issuer.
pub struct Verifier {
    cfg: OidcConfig,
    http: reqwest::Client,
    keys: tokio::sync::Mutex<Keys>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.cfg.issuer)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier of `cfg`'s issuer; nothing is fetched until a token arrives.
    pub fn new(cfg: OidcConfig) -> Self {
        // One crypto backend is compiled in; naming it keeps `decode` from guessing.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
        );
        Self {
            cfg,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            keys: tokio::sync::Mutex::new(Keys::default()),
        }
    }

    /// The issuer, as configured.
    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    /// Where the issuer sends a browser back after signing in, when configured
    /// (`[auth.oidc] redirect_url`).
    pub fn redirect_url(&self) -> Option<&str> {
        Some(self.cfg.redirect_url.as_str()).filter(|u| !u.is_empty())
    }

    /// The principal a JWT names, or why it is refused (the text of a 401).
    pub async fn verify(&self, jwt: &str) -> Result<Principal, String> {
        let claims = self.claims(jwt).await?;
        self.principal(jwt, &claims)
    }

    /// Where to send a browser to sign in at the issuer (the authorization code flow, with PKCE
    /// and a nonce), and what its return must match.
    pub async fn begin_sign_in(&self, redirect_uri: &str) -> Result<SignInRequest, String> {
        let doc = self.discovery().await?;
        let endpoint = endpoint(&doc, "authorization_endpoint")?;
        let random = || {
            format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )
        };
        let (state, nonce, verifier) = (random(), random(), random());
        let challenge = {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()))
        };
        let mut scopes: Vec<&str> = vec!["openid"];
        scopes.extend(
            self.cfg
                .scopes
                .iter()
                .map(String::as_str)
                .filter(|s| *s != "openid"),
        );
        let mut url = reqwest::Url::parse(&endpoint)
            .map_err(|e| format!("the issuer's authorization endpoint {endpoint:?}: {e}"))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.cfg.audience)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(SignInRequest {
            url: url.to_string(),
            state,
            nonce,
            verifier,
        })
    }

    /// Redeems the code a browser came back with at the issuer's token endpoint and checks the
    /// ID token it answers (keys, issuer, audience, expiry, and the nonce the sign-in began
    /// with): the token, to keep as the browser's session, and who it names.
    pub async fn finish_sign_in(
        &self,
        code: &str,
        redirect_uri: &str,
        begun: &SignInRequest,
    ) -> Result<(String, Principal), String> {
        let doc = self.discovery().await?;
        let endpoint = endpoint(&doc, "token_endpoint")?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", begun.verifier.as_str()),
        ];
        let mut req = self.http.post(&endpoint);
        match &self.cfg.client_secret {
            Some(secret) => req = req.basic_auth(&self.cfg.audience, Some(secret.expose())),
            None => form.push(("client_id", self.cfg.audience.as_str())),
        }
        let resp = req
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("the issuer's token endpoint did not answer: {e}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let why = body
                .get("error_description")
                .or_else(|| body.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            return Err(format!("the issuer refused the sign-in ({status}): {why}"));
        }
        let id_token = body
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or("the issuer's answer holds no ID token")?
            .to_owned();
        let claims = self.claims(&id_token).await?;
        if claims.get("nonce").and_then(Value::as_str) != Some(begun.nonce.as_str()) {
            return Err("the ID token is not for this sign-in (its nonce differs)".into());
        }
        let principal = self.principal(&id_token, &claims)?;
        Ok((id_token, principal))
    }

    /// The claims of a JWT whose signature, issuer, audience and times verify.
    async fn claims(&self, jwt: &str) -> Result<Value, String> {
        let header = jsonwebtoken::decode_header(jwt)
            .map_err(|_| "the bearer token is neither a lake token nor a JWT".to_owned())?;
        let asymmetric = !matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        );
        if !asymmetric {
            return Err(format!(
                "a JWT signed with {:?} is not accepted: the issuer's public keys are",
                header.alg
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.cfg.issuer]);
        validation.set_audience(&[&self.cfg.audience]);
        validation.validate_nbf = true;
        validation.leeway = self.cfg.leeway_secs;
        let mut refetched = false;
        let claims = loop {
            let candidates = self.candidates(header.kid.as_deref(), refetched).await?;
            let mut last = None;
            let mut found = None;
            for key in &candidates {
                match jsonwebtoken::decode::<Value>(jwt, key, &validation) {
                    Ok(data) => {
                        found = Some(data.claims);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(c) = found {
                break c;
            }
            let unknown_key = last.as_ref().is_none_or(|e| {
                matches!(
                    e.kind(),
                    jsonwebtoken::errors::ErrorKind::InvalidSignature
                        | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm
                )
            });
            if unknown_key && !refetched {
                refetched = true;
                continue;
            }
            return Err(refusal(last));
        };
        Ok(claims)
    }

    /// The keys that may have signed a token naming `kid` (every key when it names none),
    /// fetching them when none is held or when `refresh` asks for newer ones.
    async fn candidates(
        &self,
        kid: Option<&str>,
        refresh: bool,
    ) -> Result<Vec<DecodingKey>, String> {
        let mut keys = self.keys.lock().await;
        let stale = keys.set.is_none()
            || (refresh && keys.fetched.is_none_or(|t| t.elapsed() >= REFETCH_EVERY));
        if stale {
            match self.fetch().await {
                Ok(set) => {
                    keys.set = Some(set);
                    keys.fetched = Some(Instant::now());
                }
                Err(e) if keys.set.is_none() => return Err(e),
                Err(e) => {
                    tracing::warn!(issuer = %self.cfg.issuer, error = %e, "Issuer keys not refreshed")
                }
            }
        }
        let set = keys.set.as_ref().map_or(&[][..], |s| &s.keys[..]);
        Ok(set
            .iter()
            .filter(|k| kid.is_none() || k.common.key_id.as_deref() == kid)
            .filter_map(|k| DecodingKey::from_jwk(k).ok())
            .collect())
    }

    /// The issuer's discovery document.
    async fn discovery(&self) -> Result<Value, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        self.get_json(&url)
            .await
            .map_err(|e| format!("the sign-in cannot be checked now: {e}"))
    }

    /// The issuer's key set, through its discovery document.
    async fn fetch(&self) -> Result<JwkSet, String> {
        let unavailable = |e: String| format!("the sign-in cannot be checked now: {e}");
        let doc = self.discovery().await?;
        let jwks_uri = endpoint(&doc, "jwks_uri")?;
        let set: Value = self.get_json(&jwks_uri).await.map_err(unavailable)?;
        serde_json::from_value(set).map_err(|e| unavailable(format!("{jwks_uri}: {e}")))
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url} answered {}", resp.status()));
        }
        resp.json().await.map_err(|e| format!("{url}: {e}"))
    }

    /// The user and role the verified claims give.
    fn principal(&self, jwt: &str, claims: &Value) -> Result<Principal, String> {
        let user = claims
            .get(&self.cfg.user_claim)
            .and_then(Value::as_str)
            .filter(|u| !u.trim().is_empty() && !u.chars().any(char::is_control))
            .ok_or_else(|| {
                format!(
                    "the sign-in has no {:?} claim to name its user",
                    self.cfg.user_claim
                )
            })?;
        let groups: Vec<&str> = match claims.get(&self.cfg.groups_claim) {
            Some(Value::String(g)) => vec![g.as_str()],
            Some(Value::Array(gs)) => gs.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let role: Role = groups
            .iter()
            .filter_map(|g| self.cfg.roles.get(*g).copied())
            .max()
            .ok_or_else(|| {
                format!(
                    "{user}'s groups ({}) map to no role in this lake ([auth.oidc.roles])",
                    groups.join(", ")
                )
            })?;
        Ok(Principal {
            user: user.to_owned(),
            // The session: a handle on this very token, never the token itself.
            via: format!(
                "oidc:{}",
                &crate::blob::Sha256::of(jwt.as_bytes()).to_hex()[..16]
            ),
            role,
        })
    }
}

/// A browser's sign-in at the issuer, begun: where to send it, and what its return must match.
#[derive(Clone, PartialEq, Eq)]
pub struct SignInRequest {
    /// The issuer's authorization URL with this sign-in's parameters.
    pub url: String,
    /// Echoed back by the issuer: ties the return to this browser.
    pub state: String,
    /// Carried in the ID token: ties the token to this sign-in.
    pub nonce: String,
    /// The PKCE verifier: only this browser can redeem the code.
    pub verifier: String,
}

impl std::fmt::Debug for SignInRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInRequest")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A URL the discovery document names.
fn endpoint(doc: &Value, name: &str) -> Result<String, String> {
    doc.get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("the issuer's discovery document names no {name}"))
}

/// The text of a 401 for a JWT that did not verify.
fn refusal(e: Option<jsonwebtoken::errors::Error>) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    let Some(e) = e else {
        return "no key of the issuer matches the JWT".into();
    };
    match e.kind() {
        K::ExpiredSignature => "the sign-in has expired".into(),
        K::ImmatureSignature => "the sign-in is not valid yet (nbf)".into(),
        K::InvalidIssuer => "the JWT is from another issuer".into(),
        K::InvalidAudience => "the JWT is for another audience".into(),
        K::InvalidSignature | K::InvalidAlgorithm => {
            "the JWT's signature matches no key of the issuer".into()
        }
        K::MissingRequiredClaim(c) => format!("the JWT has no {c} claim"),
        other => format!("the JWT is not valid: {other:?}"),
    }
}
