//! External labels out of the configuration Prometheus reports at `/api/v1/status/config`:
//! the YAML of its loaded configuration, as Go's yaml.v2 writes it (two-space indentation,
//! block mappings, scalars plain, single- or double-quoted). Only `global.external_labels` is
//! read; anything else in the document is skipped without being interpreted.

/// The `global.external_labels` mapping of a Prometheus configuration, sorted by name.
/// A document without it has no external labels.
pub fn external_labels(yaml: &str) -> Result<Vec<(String, String)>, String> {
    let mut in_global = false;
    let mut labels_indent: Option<usize> = None;
    let mut entry_indent: Option<usize> = None;
    let mut out = Vec::new();
    for (number, raw) in yaml.lines().enumerate() {
        let line = strip_comment(raw);
        if line.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if indent == 0 {
            if labels_indent.is_some() {
                break;
            }
            in_global = text == "global:";
            continue;
        }
        if !in_global {
            continue;
        }
        match labels_indent {
            None => {
                if text == "external_labels:" {
                    labels_indent = Some(indent);
                } else if let Some(flow) = text.strip_prefix("external_labels:") {
                    // Flow style `external_labels: {a: b}` (not what Prometheus writes).
                    let flow = flow.trim();
                    return parse_flow(flow).map_err(|e| format!("line {}: {e}", number + 1));
                }
            }
            Some(outer) => {
                if indent <= outer {
                    break;
                }
                let expected = *entry_indent.get_or_insert(indent);
                if indent != expected {
                    return Err(format!(
                        "line {}: unexpected indentation in external_labels",
                        number + 1
                    ));
                }
                let (name, value) = split_entry(text)
                    .ok_or_else(|| format!("line {}: expected `name: value`", number + 1))?;
                out.push((unquote(name)?, unquote(value)?));
            }
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out.retain(|(_, v)| !v.is_empty());
    Ok(out)
}

fn strip_comment(line: &str) -> &str {
    // A `#` starts a comment at the line start or after a space, outside quotes.
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && previous.is_whitespace() => return &line[..i],
            None => {}
        }
        previous = c;
    }
    line
}

/// Splits `name: value` at the first `: ` (or a trailing `:`) outside quotes.
fn split_entry(text: &str) -> Option<(&str, &str)> {
    let mut quote: Option<char> = None;
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == ':' && (i + 1 == bytes.len() || bytes[i + 1] == b' ') => {
                return Some((text[..i].trim(), text[i + 1..].trim()));
            }
            None => {}
        }
    }
    None
}

fn parse_flow(flow: &str) -> Result<Vec<(String, String)>, String> {
    let inner = flow
        .strip_prefix('{')
        .and_then(|f| f.strip_suffix('}'))
        .ok_or("external_labels is neither a block nor a flow mapping")?;
    let mut out = Vec::new();
    for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = split_entry(part).ok_or("expected `name: value`")?;
        out.push((unquote(name)?, unquote(value)?));
    }
    out.sort();
    Ok(out)
}

/// A YAML scalar's string value.
fn unquote(text: &str) -> Result<String, String> {
    if let Some(inner) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        return Ok(inner.replace("''", "'"));
    }
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('0') => out.push('\0'),
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some('/') => out.push('/'),
                Some('x') => out.push(hex_char(&mut chars, 2)?),
                Some('u') => out.push(hex_char(&mut chars, 4)?),
                Some('U') => out.push(hex_char(&mut chars, 8)?),
                other => return Err(format!("unsupported escape \\{other:?} in {text}")),
            }
        }
        return Ok(out);
    }
    if text == "~" || text == "null" {
        return Ok(String::new());
    }
    Ok(text.to_owned())
}

fn hex_char(chars: &mut std::str::Chars<'_>, digits: usize) -> Result<char, String> {
    let hex: String = chars.by_ref().take(digits).collect();
    u32::from_str_radix(&hex, 16)
        .ok()
        .and_then(char::from_u32)
        .ok_or_else(|| format!("bad escape \\u{hex}"))
}

#[cfg(test)]
mod tests {
    use super::external_labels;

    #[test]
    fn reads_what_prometheus_writes() {
        let yaml = "global:\n  scrape_interval: 5s\n  scrape_timeout: 5s\n  evaluation_interval: 1m\n  external_labels:\n    cluster: prometheus-node1\n    replica: \"0\"\n    quote: 'it''s'\nscrape_configs:\n- job_name: prometheus\n  external_labels:\n    no: here\n";
        assert_eq!(
            external_labels(yaml).expect("parse"),
            vec![
                ("cluster".to_owned(), "prometheus-node1".to_owned()),
                ("quote".to_owned(), "it's".to_owned()),
                ("replica".to_owned(), "0".to_owned()),
            ]
        );
    }

    #[test]
    fn no_external_labels() {
        assert!(
            external_labels("global:\n  scrape_interval: 1m\nrule_files: []\n")
                .expect("parse")
                .is_empty()
        );
        assert_eq!(
            external_labels("global:\n  external_labels: {a: \"b\\u00e9\", c: d}\n")
                .expect("parse"),
            vec![
                ("a".to_owned(), "bé".to_owned()),
                ("c".to_owned(), "d".to_owned())
            ]
        );
    }
}
