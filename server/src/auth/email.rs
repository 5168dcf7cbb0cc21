//! Email addresses as people type them: trimmed, checked, and normalised for uniqueness.

/// A checked address: `display` as typed (trimmed), `normalized` for look-ups and
/// uniqueness (lower-case), so `Ada@Example.com` and `ada@example.com` are one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    pub display: String,
    pub normalized: String,
}

/// Checks the shape of an address: one `@`, a local part of printable characters, a domain
/// of at least two dot-separated labels of letters, digits and hyphens. Whether the address
/// receives mail is for the confirmation link to show.
pub fn parse(input: &str) -> Result<Email, &'static str> {
    let display = input.trim();
    if display.is_empty() {
        return Err("Enter your email address.");
    }
    if display.len() > 254 {
        return Err("This email address is too long.");
    }
    let Some((local, domain)) = display.rsplit_once('@') else {
        return Err("Enter an email address like name@example.com.");
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.chars().all(char::is_alphabetic) && tld.chars().count() >= 2);
    if !local_ok || !domain_ok {
        return Err("Enter an email address like name@example.com.");
    }
    Ok(Email {
        display: display.to_string(),
        normalized: display.to_lowercase(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_normalised_to_lower_case() {
        let e = parse("  Ada.Lovelace@Example.COM ").unwrap();
        assert_eq!(e.display, "Ada.Lovelace@Example.COM");
        assert_eq!(e.normalized, "ada.lovelace@example.com");
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada@exa mple.com",
            "ada@-example.com",
            "ada@example.c0m",
            ".ada@example.com",
            "ada..l@example.com",
            "ada@example..com",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn ordinary_addresses_are_accepted() {
        for good in [
            "ada@example.com",
            "ada+rookery@mail.example.co.uk",
            "o'brien@example.ie",
            "x@münchen.de",
        ] {
            assert!(parse(good).is_ok(), "{good:?} should be accepted");
        }
    }
}
