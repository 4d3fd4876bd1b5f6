//! Authentication and access (SPEC §6.2, §8): HS256 JWTs with `sub`, `role`,
//! `csm_id` and `exp`, and the channel access matrix.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::state::view::Channel;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Executive,
    Manager,
    Analyst,
    Csm,
    Wall,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Executive, Role::Manager, Role::Analyst, Role::Csm, Role::Wall];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Executive => "executive",
            Role::Manager => "manager",
            Role::Analyst => "analyst",
            Role::Csm => "csm",
            Role::Wall => "wall",
        }
    }
}

/// The claims of a cspulse token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csm_id: Option<String>,
    pub exp: u64,
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub sub: String,
    pub role: Role,
    /// Set for (and only for) the csm role.
    pub csm_id: Option<String>,
}

impl Principal {
    /// §6.2: which channels a role may read.
    pub fn may_read(&self, channel: &Channel) -> bool {
        use Role::*;
        match channel {
            Channel::Executive | Channel::Manager => matches!(self.role, Executive | Manager | Analyst | Wall),
            Channel::Analyst => matches!(self.role, Executive | Manager | Analyst),
            Channel::Csm(id) => {
                matches!(self.role, Executive | Manager) || (self.role == Csm && self.csm_id.as_deref() == Some(id))
            }
        }
    }

    /// Whether the caller may see an account owned by `owner`.
    pub fn may_see_account(&self, owner: Option<&str>) -> bool {
        match self.role {
            Role::Csm => owner.is_some() && owner == self.csm_id.as_deref(),
            Role::Wall => false,
            _ => true,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("a bearer token is required")]
    Missing,
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

/// Verifies and mints tokens.
#[derive(Clone)]
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Anonymous requests are served as an executive (explicit operator choice).
    insecure: bool,
}

impl Auth {
    pub fn new(secret: &str, insecure: bool) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        Auth {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            insecure,
        }
    }

    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// Checks a token (or its absence) and returns who it names.
    pub fn verify(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        self.verify_until(token).map(|(who, _)| who)
    }

    /// As `verify`, with the token's `exp` (seconds since the Unix epoch;
    /// `None` for the anonymous principal of insecure mode): a WebSocket
    /// is closed when its token expires (§18).
    pub fn verify_until(&self, token: Option<&str>) -> Result<(Principal, Option<u64>), AuthError> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            if self.insecure {
                return Ok((Principal { sub: "anonymous".into(), role: Role::Executive, csm_id: None }, None));
            }
            return Err(AuthError::Missing);
        };
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let c = data.claims;
        match (c.role, &c.csm_id) {
            (Role::Csm, None) => return Err(AuthError::Invalid("a csm token needs csm_id".into())),
            (Role::Csm, Some(id)) if id.is_empty() => return Err(AuthError::Invalid("empty csm_id".into())),
            _ => {}
        }
        let csm_id = if c.role == Role::Csm { c.csm_id } else { None };
        Ok((Principal { sub: c.sub, role: c.role, csm_id }, Some(c.exp)))
    }

    /// Mints a token valid for `ttl`.
    pub fn mint(&self, sub: &str, role: Role, csm_id: Option<&str>, ttl: Duration) -> Result<String, String> {
        if role == Role::Csm && csm_id.is_none_or(str::is_empty) {
            return Err("--csm-id is required for the csm role".into());
        }
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .saturating_add(ttl)
            .as_secs();
        let claims = Claims { sub: sub.to_owned(), role, csm_id: csm_id.map(str::to_owned), exp };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn round_trip_and_rejections() {
        let auth = Auth::new("0123456789abcdef0123", false);
        let t = auth.mint("ops", Role::Csm, Some("csm-7"), HOUR).unwrap();
        let p = auth.verify(Some(&t)).unwrap();
        assert_eq!((p.role, p.csm_id.as_deref()), (Role::Csm, Some("csm-7")));
        assert_eq!(auth.verify(None), Err(AuthError::Missing));
        assert!(matches!(auth.verify(Some("garbage")), Err(AuthError::Invalid(_))));
        let other = Auth::new("another-secret-of-16", false).mint("x", Role::Executive, None, HOUR).unwrap();
        assert!(matches!(auth.verify(Some(&other)), Err(AuthError::Invalid(_))), "wrong signature");
        let expired = Claims { sub: "x".into(), role: Role::Manager, csm_id: None, exp: 1_000_000 };
        let expired = jsonwebtoken::encode(&Header::default(), &expired, &auth.encoding).unwrap();
        assert!(matches!(auth.verify(Some(&expired)), Err(AuthError::Invalid(_))), "expired");
        let no_csm = Claims { sub: "x".into(), role: Role::Csm, csm_id: None, exp: u64::MAX / 2 };
        let no_csm = jsonwebtoken::encode(&Header::default(), &no_csm, &auth.encoding).unwrap();
        assert!(auth.verify(Some(&no_csm)).is_err());
        assert!(auth.mint("x", Role::Csm, None, HOUR).is_err());
    }

    #[test]
    fn access_matrix() {
        let p = |role, csm: Option<&str>| Principal { sub: "s".into(), role, csm_id: csm.map(String::from) };
        let exec = Channel::Executive;
        let analyst = Channel::Analyst;
        let book = Channel::Csm("csm-7".into());
        assert!(p(Role::Wall, None).may_read(&exec) && p(Role::Wall, None).may_read(&Channel::Manager));
        assert!(!p(Role::Wall, None).may_read(&analyst) && !p(Role::Wall, None).may_read(&book));
        assert!(p(Role::Analyst, None).may_read(&analyst) && !p(Role::Analyst, None).may_read(&book));
        assert!(p(Role::Manager, None).may_read(&book) && p(Role::Executive, None).may_read(&book));
        let csm = p(Role::Csm, Some("csm-7"));
        assert!(csm.may_read(&book));
        assert!(!csm.may_read(&Channel::Csm("csm-8".into())));
        assert!(!csm.may_read(&exec) && !csm.may_read(&Channel::Manager) && !csm.may_read(&analyst));
        assert!(
            csm.may_see_account(Some("csm-7")) && !csm.may_see_account(Some("csm-8")) && !csm.may_see_account(None)
        );
        assert!(p(Role::Analyst, None).may_see_account(None));
        assert!(Auth::new("0123456789abcdef", true).verify(None).unwrap().role == Role::Executive);
    }
}
