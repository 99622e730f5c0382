//! Hides the secrets a command line carries before it leaves the machine:
//! a Jupyter server's `--IdentityProvider.token=...`, an `API_KEY=...`
//! handed to `env`, a database URL with a password. Kandan shows command
//! lines to everyone in the room, so every command line sent there goes
//! through a [`Redactor`]; `watch` does only with `--redact`.
//!
//! The input is the command line as it travels (`ProcessInfo.command`:
//! arguments joined by single spaces), so a word is what lies between two
//! spaces. Only the secret values change; everything else stays byte for
//! byte, and redacting twice changes nothing more (`***` is itself a value
//! that redacts to `***`).

use std::sync::Arc;

/// What a secret value becomes.
pub(crate) const MASK: &str = "***";

/// The built-in rules plus the names the user adds (the config file's
/// `redact`): option names (`--my-flag`: given with a leading dash) and
/// variable or query parameter names (`MY_VAR`) whose values are secret,
/// matched whole, ignoring ASCII case. Read once from the config and handed
/// to whoever shows a command line; cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Redactor {
    extra: Arc<Names>,
}

#[derive(Debug, Default)]
struct Names {
    options: Vec<String>,
    vars: Vec<String>,
}

impl Redactor {
    pub(crate) fn new(names: &[String]) -> Self {
        let mut out = Names::default();
        for name in names {
            match name.trim_start_matches('-') {
                "" => {}
                bare if bare.len() < name.len() => out.options.push(bare.to_ascii_lowercase()),
                bare => out.vars.push(bare.to_ascii_lowercase()),
            }
        }
        Redactor {
            extra: Arc::new(out),
        }
    }

    /// `command` with the values of secret-looking arguments replaced by
    /// `***` (see [`redact_with`] for the rules).
    pub(crate) fn command(&self, command: &str) -> String {
        redact_with(command, &self.extra)
    }
}

impl Names {
    fn option(&self, name: &str) -> bool {
        self.options.iter().any(|o| o.eq_ignore_ascii_case(name))
    }

    fn var(&self, name: &str) -> bool {
        self.vars.iter().any(|v| v.eq_ignore_ascii_case(name))
    }
}

/// `command` with the values of secret-looking arguments replaced by `***`.
/// The rules (README, "Redaction"):
/// - an option (`-NAME` or `--NAME`, NAME of two characters or more starting
///   with a letter) whose name has a secret word: `--NAME=***`, or, without
///   `=`, the next word becomes `***` unless it starts with `--`. Options
///   starting `--no-` are negations and take no value.
/// - a word `NAME=VALUE` with NAME an environment-style name (letters,
///   digits, `_`) containing `TOKEN`, `KEY`, `SECRET`, `PASSWORD` or
///   `PASSWD` (any case): `NAME=***`.
/// - in any word, URL userinfo (`scheme://user:pass@host` ->
///   `scheme://***@host`) and the values of query parameters whose name has
///   a secret word (`?token=***&page=2`).
fn redact_with(command: &str, extra: &Names) -> String {
    let is_secret = |name: &str| secret_option(name) || extra.option(name);
    let mut out = String::with_capacity(command.len());
    let mut value_follows = false;
    for (i, word) in command.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if value_follows && !word.is_empty() && !word.starts_with("--") {
            value_follows = false;
            out.push_str(MASK);
            continue;
        }
        value_follows = false;
        match option(word) {
            Some(Opt {
                name,
                value: Some(value),
            }) if is_secret(name) => {
                out.push_str(&word[..word.len() - value.len()]);
                out.push_str(MASK);
            }
            Some(Opt { name, value: None }) if is_secret(name) => {
                value_follows = true;
                out.push_str(word);
            }
            // A harmless option's value may still hold a pair or a URL
            // (`--env=API_KEY=x`, `--url=https://u:p@h`).
            Some(Opt {
                value: Some(value), ..
            }) => {
                out.push_str(&word[..word.len() - value.len()]);
                out.push_str(&redact_value(value, extra));
            }
            Some(Opt { value: None, .. }) => out.push_str(word),
            None => out.push_str(&redact_value(word, extra)),
        }
    }
    out
}

struct Opt<'a> {
    name: &'a str,
    /// What follows the first `=`, when there is one.
    value: Option<&'a str>,
}

/// `word` as `-NAME[=VALUE]` or `--NAME[=VALUE]`. A single letter after one
/// dash (`-p 8080`, `-k`) is not an option name here: too common to mean a
/// secret, and `-p` is the port of half the servers there are.
fn option(word: &str) -> Option<Opt<'_>> {
    let rest = word.strip_prefix("--").or_else(|| word.strip_prefix('-'))?;
    let (name, value) = match rest.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (rest, None),
    };
    let starts_with_letter = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    (starts_with_letter && name.len() >= 2).then_some(Opt { name, value })
}

/// An option name with a secret word, and not a `--no-...` negation.
fn secret_option(name: &str) -> bool {
    !name.starts_with("no-") && has_secret_word(name)
}

/// Whether one of `name`'s words (split at anything but letters and digits,
/// and where a lowercase letter or digit meets an uppercase one) is secret:
/// it ends in `token`, `secret`, `password`, `passwd` or `passphrase`, or
/// it is `key`, `keys`, `apikey`, `auth`, `credential`, `credentials` or
/// `secrets`. So `--api-key`, `--authtoken`, `--NotebookApp.token` and
/// `accessToken` are secret; `--tokenizer-path`, `--max-tokens` (a count,
/// hence no plural `tokens`), `--keyboard`, `--monkey` and `--author` are
/// not.
fn has_secret_word(name: &str) -> bool {
    words(name).iter().any(|word| {
        ["token", "secret", "password", "passwd", "passphrase"]
            .iter()
            .any(|end| word.ends_with(end))
            || [
                "key",
                "keys",
                "apikey",
                "auth",
                "credential",
                "credentials",
                "secrets",
            ]
            .contains(&word.as_str())
    })
}

/// `name` lowercased and cut into words: `IdentityProvider.token` ->
/// `identity provider token`, `api_key` -> `api key`.
fn words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut prev: Option<char> = None;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
        } else {
            let hump = c.is_ascii_uppercase()
                && prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit());
            if hump && !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            current.push(c.to_ascii_lowercase());
        }
        prev = Some(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// A word that is not an option (or an option's value): an
/// environment-style pair, else URL userinfo and query parameters.
fn redact_value(word: &str, extra: &Names) -> String {
    if let Some((name, _)) = word.split_once('=')
        && env_name(name)
        && (secret_env_name(name) || extra.var(name))
    {
        return format!("{name}={MASK}");
    }
    redact_query(&redact_userinfo(word), extra)
}

fn env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Environment names are glued together more often than option names
/// (`PGPASSWORD`, `APIKEY`), so a substring counts here.
fn secret_env_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD"]
        .iter()
        .any(|part| upper.contains(part))
}

/// Every `scheme://userinfo@host` in `word` as `scheme://***@host`. The
/// whole userinfo goes, not only the password: `https://TOKEN@github.com`
/// carries its secret as the user.
fn redact_userinfo(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail.find(['/', '?', '#']).unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(userinfo_end) => {
                out.push_str(MASK);
                out.push_str(&tail[userinfo_end..authority_end]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

/// The values of secret query parameters after the first `?` of `word`
/// (up to a `#`): `?token=abc&page=2` -> `?token=***&page=2`. A bare
/// `host:8888/?token=abc` counts too, not only full URLs.
fn redact_query(word: &str, extra: &Names) -> String {
    let Some(start) = word.find('?') else {
        return word.to_owned();
    };
    let end = word[start..].find('#').map_or(word.len(), |i| start + i);
    let params = word[start + 1..end]
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if has_secret_word(name) || extra.var(name) => {
                format!("{name}={MASK}")
            }
            _ => param.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{}{params}{}", &word[..=start], &word[end..])
}

#[cfg(test)]
mod tests;
