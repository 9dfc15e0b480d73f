//! The broker's credentials Secret: generated once, never regenerated while it exists.
//!
//! Keys: `user` / `password` for workers (the values behind `SLUICE_BROKER_USER` and
//! `SLUICE_BROKER_PASSWORD`), `operator-user` / `operator-password` for the operator,
//! `route-user` / `route-password` for the servers' cluster routes (port 6222).
//! nats.conf reads all six from environment variables fed by this Secret.
//!
//! A Secret written before route authentication existed has the first four keys only. It
//! is not regenerated: [`existing_secret_action`] answers
//! [`CredentialsSecretAction::AddRouteCredentials`], and the reconciler adds just the two
//! route keys to an operator-generated Secret (a merge patch guarded by the Secret's
//! resourceVersion, existing keys untouched) or reports a user-named Secret as unusable.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rand::distr::{Alphanumeric, SampleString};
use rand::seq::IndexedRandom;
use sluice_broker::{Error, ErrorKind, Result};

use super::BrokerCluster;
use super::labels::object_meta;

/// Secret key holding the workers' user name.
pub const USER_KEY: &str = "user";
/// Secret key holding the workers' password.
pub const PASSWORD_KEY: &str = "password";
/// Secret key holding the operator's user name.
pub const OPERATOR_USER_KEY: &str = "operator-user";
/// Secret key holding the operator's password.
pub const OPERATOR_PASSWORD_KEY: &str = "operator-password";
/// Secret key holding the user name servers authenticate cluster routes with.
pub const ROUTE_USER_KEY: &str = "route-user";
/// Secret key holding the password servers authenticate cluster routes with.
pub const ROUTE_PASSWORD_KEY: &str = "route-password";
/// User name of cluster routes.
pub const ROUTE_USERNAME: &str = "sluice-route";
/// User name workers connect with.
pub const WORKER_USERNAME: &str = "sluice-worker";
/// User name the operator connects with.
pub const OPERATOR_USERNAME: &str = "sluice-operator";

const MIN_PASSWORD_LEN: usize = 16;
const GENERATED_PASSWORD_LEN: usize = 32;
const CLIENT_KEYS: [&str; 4] = [
    USER_KEY,
    PASSWORD_KEY,
    OPERATOR_USER_KEY,
    OPERATOR_PASSWORD_KEY,
];
const ROUTE_KEYS: [&str; 2] = [ROUTE_USER_KEY, ROUTE_PASSWORD_KEY];
const ALL_KEYS: [&str; 6] = [
    USER_KEY,
    PASSWORD_KEY,
    OPERATOR_USER_KEY,
    OPERATOR_PASSWORD_KEY,
    ROUTE_USER_KEY,
    ROUTE_PASSWORD_KEY,
];

/// Checks a password (or user name) can be substituted into nats.conf from an environment
/// variable. nats-server parses the variable's value as a config token, so only a letter
/// followed by letters and digits is safe: `12345` would become a number and crash the
/// server, and `a#b` would be cut at the comment sign.
pub fn validate_password(value: &str, what: &str) -> Result<()> {
    let ok = value.len() >= MIN_PASSWORD_LEN
        && value.starts_with(|c: char| c.is_ascii_alphabetic())
        && value.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidSpec,
            format!(
                "the {what} is not usable by nats-server: use at least {MIN_PASSWORD_LEN} ASCII letters and digits, starting with a letter"
            ),
        ))
    }
}

/// A fresh random password (32 characters from a CSPRNG, starting with a letter) that
/// passes [`validate_password`].
pub fn generate_password() -> String {
    let mut rng = rand::rng();
    let letters: Vec<char> = ('a'..='z').chain('A'..='Z').collect();
    let first = letters.choose(&mut rng).copied().unwrap_or('s');
    let mut password = String::with_capacity(GENERATED_PASSWORD_LEN);
    password.push(first);
    password.push_str(&Alphanumeric.sample_string(&mut rng, GENERATED_PASSWORD_LEN - 1));
    password
}

/// Builds the credentials Secret `<name>-credentials` from the given passwords. Call it only
/// when [`existing_secret_action`] says [`CredentialsSecretAction::Create`].
pub fn credentials_secret(
    cluster: &BrokerCluster,
    worker_password: &str,
    operator_password: &str,
    route_password: &str,
) -> Result<Secret> {
    validate_password(worker_password, "workers' password")?;
    validate_password(operator_password, "operator's password")?;
    let mut data = route_data(route_password)?;
    data.extend([
        (USER_KEY.to_string(), bytes(WORKER_USERNAME)),
        (PASSWORD_KEY.to_string(), bytes(worker_password)),
        (OPERATOR_USER_KEY.to_string(), bytes(OPERATOR_USERNAME)),
        (OPERATOR_PASSWORD_KEY.to_string(), bytes(operator_password)),
    ]);
    Ok(Secret {
        metadata: object_meta(cluster, cluster.credentials_secret_name()),
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Secret::default()
    })
}

/// The two route keys (`route-user`, `route-password`) as Secret data, for adding them to
/// a Secret that predates route authentication (see
/// [`CredentialsSecretAction::AddRouteCredentials`]).
pub fn route_data(route_password: &str) -> Result<BTreeMap<String, ByteString>> {
    validate_password(route_password, "route password")?;
    Ok(BTreeMap::from([
        (ROUTE_USER_KEY.to_string(), bytes(ROUTE_USERNAME)),
        (ROUTE_PASSWORD_KEY.to_string(), bytes(route_password)),
    ]))
}

fn bytes(value: &str) -> ByteString {
    ByteString(value.as_bytes().to_vec())
}

/// What the reconciler must do about the credentials Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsSecretAction {
    /// No Secret yet: generate passwords and create it.
    Create,
    /// A usable Secret exists: keep it untouched (never regenerate, pods and workers use it).
    Keep,
    /// A Secret with usable client credentials but neither route key (written before route
    /// authentication): add `route-user` and `route-password` only, leaving every other key
    /// as it is.
    AddRouteCredentials,
    /// A Secret exists but cannot be used; it is left alone and the reason is reported so a
    /// user can fix it or delete it to have a new one generated.
    Unusable {
        /// What is wrong, for the Broker's condition message.
        reason: String,
    },
}

/// Decides, without side effects, what to do given the Secret currently in the cluster.
/// A present Secret is never overwritten, whatever it contains.
pub fn existing_secret_action(existing: Option<&Secret>) -> CredentialsSecretAction {
    let Some(secret) = existing else {
        return CredentialsSecretAction::Create;
    };
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let absent = |k: &&str| data.get(*k).is_none_or(|v| v.0.is_empty());
    let missing: Vec<&str> = ALL_KEYS.into_iter().filter(absent).collect();
    let predates_routes = ROUTE_KEYS.iter().all(absent) && !CLIENT_KEYS.iter().any(absent);
    if !missing.is_empty() && !predates_routes {
        return CredentialsSecretAction::Unusable {
            reason: format!(
                "secret {} lacks the keys {}; add them or delete the secret to have new credentials generated",
                secret.metadata.name.as_deref().unwrap_or("<unnamed>"),
                missing.join(", ")
            ),
        };
    }
    for key in ALL_KEYS {
        let value = data
            .get(key)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned());
        let is_user = key == USER_KEY || key == OPERATOR_USER_KEY || key == ROUTE_USER_KEY;
        let problem = match value {
            // User names may be short; they only need to survive env substitution.
            Some(v) if is_user => (!v.starts_with(|c: char| c.is_ascii_alphabetic())
                || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            .then(|| format!("key {key} must be letters, digits or '-', starting with a letter")),
            Some(v) => validate_password(&v, key)
                .err()
                .map(|e| e.message().to_string()),
            None => None,
        };
        if let Some(problem) = problem {
            return CredentialsSecretAction::Unusable {
                reason: format!(
                    "secret {}: {problem}",
                    secret.metadata.name.as_deref().unwrap_or("<unnamed>")
                ),
            };
        }
    }
    if predates_routes {
        CredentialsSecretAction::AddRouteCredentials
    } else {
        CredentialsSecretAction::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::cluster;
    use super::*;

    const WORKER_PW: &str = "wPassword0123456789";
    const OPERATOR_PW: &str = "oPassword0123456789";
    const ROUTE_PW: &str = "rPassword0123456789";

    fn secret() -> Secret {
        credentials_secret(&cluster(3), WORKER_PW, OPERATOR_PW, ROUTE_PW).unwrap()
    }

    fn value(secret: &Secret, key: &str) -> String {
        String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    #[test]
    fn builds_secret_with_all_keys() {
        let s = secret();
        assert_eq!(s.metadata.name.as_deref(), Some("main-credentials"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("sluice"));
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(value(&s, "user"), "sluice-worker");
        assert_eq!(value(&s, "password"), WORKER_PW);
        assert_eq!(value(&s, "operator-user"), "sluice-operator");
        assert_eq!(value(&s, "operator-password"), OPERATOR_PW);
        assert_eq!(value(&s, "route-user"), "sluice-route");
        assert_eq!(value(&s, "route-password"), ROUTE_PW);
        assert_eq!(s.data.as_ref().unwrap().len(), 6);
        assert!(s.string_data.is_none());
    }

    #[test]
    fn refuses_passwords_nats_conf_cannot_carry() {
        for bad in [
            "short1A",
            "1234567890123456789",
            "abc#defghijklmnopq",
            "abc defghijklmnopq",
        ] {
            let err = credentials_secret(&cluster(1), bad, OPERATOR_PW, ROUTE_PW).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{bad:?}");
            let err = credentials_secret(&cluster(1), WORKER_PW, OPERATOR_PW, bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidSpec, "route {bad:?}");
            assert!(route_data(bad).is_err(), "route {bad:?}");
        }
    }

    #[test]
    fn generated_passwords_are_valid_and_distinct() {
        let a = generate_password();
        let b = generate_password();
        assert_eq!(a.len(), 32);
        validate_password(&a, "generated").unwrap();
        validate_password(&b, "generated").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn creates_only_when_absent() {
        assert_eq!(
            existing_secret_action(None),
            CredentialsSecretAction::Create
        );
    }

    #[test]
    fn keeps_present_secret_even_with_other_passwords() {
        let existing = secret();
        assert_eq!(
            existing_secret_action(Some(&existing)),
            CredentialsSecretAction::Keep
        );
    }

    #[test]
    fn never_regenerates_a_broken_secret() {
        let mut existing = secret();
        existing.data.as_mut().unwrap().remove("password");
        match existing_secret_action(Some(&existing)) {
            CredentialsSecretAction::Unusable { reason } => {
                assert!(reason.contains("lacks the keys password"), "{reason}")
            }
            other => panic!("expected Unusable, got {other:?}"),
        }

        let mut numeric = secret();
        numeric.data.as_mut().unwrap().insert(
            "operator-password".into(),
            ByteString(b"12345678901234567".to_vec()),
        );
        assert!(matches!(
            existing_secret_action(Some(&numeric)),
            CredentialsSecretAction::Unusable { .. }
        ));

        let empty = Secret::default();
        assert!(matches!(
            existing_secret_action(Some(&empty)),
            CredentialsSecretAction::Unusable { .. }
        ));
    }

    #[test]
    fn secret_without_route_keys_gets_only_those_added() {
        let mut old = secret();
        let data = old.data.as_mut().unwrap();
        data.remove("route-user");
        data.remove("route-password");
        assert_eq!(
            existing_secret_action(Some(&old)),
            CredentialsSecretAction::AddRouteCredentials
        );
        let added = route_data(ROUTE_PW).unwrap();
        let keys: Vec<&str> = added.keys().map(String::as_str).collect();
        assert_eq!(keys, ["route-password", "route-user"]);
        assert_eq!(added["route-user"].0, b"sluice-route");
        // Once added, the Secret is kept as it is.
        old.data.as_mut().unwrap().extend(added);
        assert_eq!(
            existing_secret_action(Some(&old)),
            CredentialsSecretAction::Keep
        );
    }

    #[test]
    fn half_route_credentials_or_broken_client_keys_are_not_patched() {
        let mut half = secret();
        half.data.as_mut().unwrap().remove("route-password");
        match existing_secret_action(Some(&half)) {
            CredentialsSecretAction::Unusable { reason } => {
                assert!(reason.contains("lacks the keys route-password"), "{reason}")
            }
            other => panic!("expected Unusable, got {other:?}"),
        }

        let mut bad_route = secret();
        bad_route.data.as_mut().unwrap().insert(
            "route-password".into(),
            ByteString(b"12345678901234567".to_vec()),
        );
        assert!(matches!(
            existing_secret_action(Some(&bad_route)),
            CredentialsSecretAction::Unusable { .. }
        ));

        let mut old_and_broken = secret();
        let data = old_and_broken.data.as_mut().unwrap();
        data.remove("route-user");
        data.remove("route-password");
        data.remove("password");
        assert!(matches!(
            existing_secret_action(Some(&old_and_broken)),
            CredentialsSecretAction::Unusable { .. }
        ));
    }
}
