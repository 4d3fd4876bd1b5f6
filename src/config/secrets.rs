//! Secrets in the configuration (SPEC §18 "Secrets"): which keys hold one,
//! masking them wherever the configuration or a store is printed or logged,
//! and `*_env` keys that name the environment variable holding a secret.
//!
//! A key is secret when its name contains `password`, `secret`, `token` or
//! `key` (any case), in every table, `kafka.properties` included
//! (`sasl.password`, `ssl.key.password`, …); everything under such a key is
//! masked. A key ending in `_env` names a variable, not a secret, and is shown.
//! In every other string, the password of a URL (`scheme://user:PASSWORD@host`)
//! and the values of secret-named query parameters (`?token=…`) are masked.

/// What a masked secret prints as.
pub const MASK: &str = "********";

/// Whether `name` names a secret (see the module docs).
pub fn is_secret_key(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !lower.ends_with("_env") && ["password", "secret", "token", "key"].iter().any(|word| lower.contains(word))
}

/// `s` with the password of every URL in it masked, and the values of
/// secret-named query parameters.
pub fn mask_url(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // One URL runs to the next space, comma or quote.
        let end = tail.find(|c: char| c.is_whitespace() || matches!(c, ',' | '"' | '\'')).unwrap_or(tail.len());
        let (url, after) = tail.split_at(end);
        out.push_str(&mask_one(url));
        rest = after;
    }
    out.push_str(rest);
    out
}

/// One URL after its `scheme://`.
fn mask_one(url: &str) -> String {
    // The authority ends at the first `/`, `?` or `#`; its user information
    // at its last `@`. A password with an unescaped `/` or `?` would end it
    // early: then any `user:…@` before an `@` further on is masked too.
    let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
    let userinfo_end = url[..authority_end].rfind('@').or_else(|| url.rfind('@').filter(|&at| url[..at].contains(':')));
    let mut out = String::with_capacity(url.len());
    let rest = match userinfo_end {
        Some(at) => {
            let userinfo = &url[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..=colon]);
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            &url[at..]
        }
        None => url,
    };
    match rest.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((name, _)) if is_secret_key(name) => format!("{name}={MASK}"),
                    _ => p.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
            if let Some(f) = fragment {
                out.push('#');
                out.push_str(f);
            }
        }
        None => out.push_str(rest),
    }
    out
}

/// A TOML document with every secret masked (order and layout kept).
pub fn mask_toml(text: &str) -> String {
    match text.parse::<toml_edit::DocumentMut>() {
        Ok(mut doc) => {
            mask_table(doc.as_table_mut(), false);
            doc.to_string()
        }
        // Never print what could not be inspected.
        Err(e) => format!("# cannot render the configuration: {e}\n"),
    }
}

fn mask_table(table: &mut toml_edit::Table, secret: bool) {
    for (key, item) in table.iter_mut() {
        let secret = secret || is_secret_key(key.get());
        match item {
            toml_edit::Item::Value(v) => mask_value(v, secret),
            toml_edit::Item::Table(t) => mask_table(t, secret),
            toml_edit::Item::ArrayOfTables(a) => a.iter_mut().for_each(|t| mask_table(t, secret)),
            toml_edit::Item::None => {}
        }
    }
}

fn mask_value(value: &mut toml_edit::Value, secret: bool) {
    use toml_edit::Value;
    match value {
        Value::String(s) => {
            let text = s.value();
            let masked = if !secret {
                mask_url(text)
            } else if text.is_empty() {
                // Shows that it is unset.
                return;
            } else {
                MASK.to_owned()
            };
            if masked != *text {
                *value = Value::from(masked);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| mask_value(v, secret)),
        Value::InlineTable(t) => {
            for (key, v) in t.iter_mut() {
                let secret = secret || is_secret_key(key.get());
                mask_value(v, secret);
            }
        }
        other if secret => *other = Value::from(MASK),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_found_by_substring_in_any_case() {
        for k in ["jwt_secret", "sasl.password", "ssl.key.password", "API_TOKEN", "ssl.key.pem", "SecretKey"] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["brokers", "group_id", "jwt_secret_env", "sasl.password_env", "session.timeout.ms"] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn url_passwords_and_secret_parameters_are_masked() {
        let cases = [
            ("redis://user:hunter2@redis.internal:6379/0", "redis://user:********@redis.internal:6379/0"),
            ("redis://:hunter2@10.0.0.1", "redis://:********@10.0.0.1"),
            ("postgres://app:p@ss@db/x", "postgres://app:********@db/x"),
            ("smtp://mailer:pa/ss?w@smtp.example.com:587", "smtp://mailer:********@smtp.example.com:587"),
            ("https://hooks.example.com/x?token=abc&team=cs", "https://hooks.example.com/x?token=********&team=cs"),
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://user@host", "redis://user@host"),
            ("127.0.0.1:9092,127.0.0.2:9092", "127.0.0.1:9092,127.0.0.2:9092"),
            ("a redis://u:x@h and smtp://v:y@k", "a redis://u:********@h and smtp://v:********@k"),
        ];
        for (given, shown) in cases {
            assert_eq!(mask_url(given), shown, "{given}");
        }
    }

    #[test]
    fn a_document_keeps_its_order_and_loses_its_secrets() {
        let doc = "[kafka]\nbrokers = \"b:9092\"\n[kafka.properties]\n\"sasl.password\" = \"pw1\"\n\"sasl.password_env\" = \"PW\"\n\
                   [auth]\njwt_secret = \"s3cr3t\"\n[state]\nstore = \"redis://u:pw2@h/0\"\n\
                   [[delivery]]\napi_key = 42\nurl = \"smtp://m:pw3@mail\"\n";
        let shown = mask_toml(doc);
        for secret in ["pw1", "s3cr3t", "pw2", "42", "pw3"] {
            assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
        }
        assert!(shown.contains("\"sasl.password_env\" = \"PW\""), "{shown}");
        assert!(shown.find("[kafka]").unwrap() < shown.find("[auth]").unwrap(), "{shown}");
    }
}
