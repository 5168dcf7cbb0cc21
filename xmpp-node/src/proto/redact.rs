//! Credentials out of logs: the stanza log of a vhost (its runtime debug switch) shows
//! everything but SASL payloads and passwords.

/// Elements whose character data is a credential or derived from one.
const SECRET_ELEMENTS: &[&str] = &["auth", "response", "challenge", "success", "password"];

/// `xml` with the content of every secret element replaced by `[redacted]`.
pub fn redact(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(at) = rest.find('<') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let name_end = rest[1..]
            .find([' ', '>', '/'])
            .map(|i| i + 1)
            .unwrap_or(rest.len());
        let name = &rest[1..name_end];
        let Some(tag_end) = rest.find('>') else {
            out.push_str(rest);
            return out;
        };
        let self_closing = rest[..tag_end].ends_with('/');
        out.push_str(&rest[..=tag_end]);
        rest = &rest[tag_end + 1..];
        if SECRET_ELEMENTS.contains(&name) && !self_closing {
            let close = format!("</{name}>");
            match rest.find(&close) {
                Some(end) => {
                    if end > 0 {
                        out.push_str("[redacted]");
                    }
                    rest = &rest[end..];
                }
                None => {
                    out.push_str("[redacted]");
                    return out;
                }
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_payloads_and_passwords_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldABzZWNyZXQ=</auth>"
            ),
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>[redacted]</auth>"
        );
        assert_eq!(
            redact("<challenge xmlns='x'>cj1hYmM=</challenge><success xmlns='x'/>"),
            "<challenge xmlns='x'>[redacted]</challenge><success xmlns='x'/>"
        );
        assert_eq!(
            redact(
                "<iq type='set'><query xmlns='jabber:iq:register'><username>bill</username><password>Calliope</password></query></iq>"
            ),
            "<iq type='set'><query xmlns='jabber:iq:register'><username>bill</username><password>[redacted]</password></query></iq>"
        );
        let message = "<message to='a@b'><body>hello &lt;auth&gt;</body></message>";
        assert_eq!(redact(message), message);
    }
}
