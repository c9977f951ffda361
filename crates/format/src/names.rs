//! Part names: the three spellings of one file, and the checks that keep hostile names out.
//!
//! A file has a *zip name* (OPC part name: percent-encoded, `/`-separated), a
//! *package name* (what `AppxBlockMap.xml` and `StreamMap.xml` use: decoded,
//! `\`-separated) and, once extracted or mounted, a relative path. Every name is
//! checked once, on the way in, so the rest of the crate can trust it.

use std::path::{Component, Path, PathBuf};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, utf8_percent_encode};

use crate::error::{FormatError, Result};

/// Characters left as they are in an OPC part-name segment (RFC 3986 `pchar`
/// less `%`); everything else is percent-encoded, as the MSIX packaging tools do.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// Footprint files: part of the container, not of the payload; the block map does not list them.
pub const FOOTPRINT: [&str; 4] = [
    "AppxBlockMap.xml",
    "[Content_Types].xml",
    "AppxSignature.p7x",
    "AppxMetadata\\CodeIntegrity.cat",
];

/// Whether a package name is one of the footprint files (in any letter case).
pub fn is_footprint(name: &str) -> bool {
    FOOTPRINT.iter().any(|f| same_part(f, name))
}

/// Whether two package names name the same part: equal but for letter case.
pub fn same_part(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        fold_case(a) == fold_case(b)
    }
}

/// A name with letter case folded away: two part names are the same part when
/// their folded forms are equal (OPC compares part names without regard to
/// case). ASCII and Unicode case alike: upper-casing first also folds `ß` with
/// `SS` and the Kelvin sign with `K`.
pub fn fold_case(name: &str) -> String {
    if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        name.to_uppercase().to_lowercase()
    }
}

/// Turn a raw zip entry name into a checked package name.
pub fn from_zip_name(raw: &[u8]) -> Result<String> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let hostile = |reason| FormatError::HostileName {
        name: shown.clone(),
        reason,
    };
    if raw.contains(&b'\\') {
        return Err(hostile("a zip part name must not contain a backslash"));
    }
    let raw = std::str::from_utf8(raw).map_err(|_| hostile("not valid UTF-8"))?;
    let mut out = String::with_capacity(raw.len());
    for (i, segment) in raw.split('/').enumerate() {
        let decoded = percent_decode(segment.as_bytes())
            .decode_utf8()
            .map_err(|_| hostile("percent-decodes to invalid UTF-8"))?;
        if decoded.contains(['/', '\\']) {
            return Err(hostile("a percent-encoded path separator"));
        }
        if i > 0 {
            out.push('\\');
        }
        out.push_str(&decoded);
    }
    check(&out).map_err(hostile)?;
    Ok(out)
}

/// Check a package (block-map) name; the same rules as for zip names.
pub fn check_package_name(name: &str) -> Result<()> {
    check(name).map_err(|reason| FormatError::HostileName {
        name: name.to_owned(),
        reason,
    })
}

fn check(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.chars().any(|c| c == '\0') {
        return Err("contains NUL");
    }
    if name.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    if name.starts_with('\\') || name.starts_with('/') {
        return Err("absolute path");
    }
    if name.contains('/') {
        return Err("a separator hidden inside a name segment");
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err("drive letter");
    }
    for segment in name.split('\\') {
        match segment {
            "" => return Err("empty path segment"),
            "." | ".." => return Err("`.` or `..` path segment"),
            _ => {}
        }
    }
    Ok(())
}

/// The OPC (zip) spelling of a checked package name.
pub fn to_zip_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    for (i, segment) in name.split('\\').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.extend(utf8_percent_encode(segment, SEGMENT));
    }
    out
}

/// The relative path of a checked package name, for extraction.
pub fn to_relative_path(name: &str) -> PathBuf {
    name.split('\\').collect()
}

/// The package name of a payload file at `rel` (relative to the packed tree),
/// under `Root\`. Names that cannot be spelled in a package are refused.
pub fn payload_name(rel: &Path) -> Result<String> {
    let mut out = String::from("Root");
    for component in rel.components() {
        let Component::Normal(part) = component else {
            return Err(unpackable(rel, "not a plain relative path"));
        };
        let part = part
            .to_str()
            .ok_or_else(|| unpackable(rel, "the name is not valid UTF-8"))?;
        if part.contains('\\') {
            return Err(unpackable(
                rel,
                "the name contains a backslash, which packages use as their separator",
            ));
        }
        out.push('\\');
        out.push_str(part);
    }
    check_package_name(&out)
        .map_err(|_| unpackable(rel, "the name is not allowed in a package"))?;
    Ok(out)
}

/// The absolute Linux path a `Root\…` package name stands for.
pub fn linux_path(name: &str) -> Option<String> {
    let rest = name.strip_prefix("Root\\")?;
    Some(format!("/{}", rest.replace('\\', "/")))
}

/// The package name for an absolute Linux path (`/opt/x` → `Root\opt\x`).
pub fn from_linux_path(path: &str) -> Result<String> {
    let rel = path.trim_start_matches('/');
    payload_name(Path::new(rel))
}

fn unpackable(path: &Path, reason: &str) -> FormatError {
    FormatError::Unpackable {
        path: path.display().to_string(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opc_encoding_round_trips() {
        let name = "Root\\opt\\my app\\lib[1]%.so";
        let zip = to_zip_name(name);
        assert_eq!(zip, "Root/opt/my%20app/lib%5B1%5D%25.so");
        assert_eq!(from_zip_name(zip.as_bytes()).unwrap(), name);
    }

    #[test]
    fn msix_double_encoded_names_decode_once() {
        // HelloWorld.appx stores "loader%255B1%255D.js" for block-map name "loader%5B1%5D.js".
        assert_eq!(
            from_zip_name(b"loader%255B1%255D.js").unwrap(),
            "loader%5B1%5D.js"
        );
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            &b"../etc/passwd"[..],
            b"a/../../b",
            b"/etc/passwd",
            b"C:/Windows/x",
            b"c:x",
            b"a\\..\\b",
            b"a/%2E%2E/b",
            b"a%5C..%5Cb",
            b"a%2Fb",
            b"a\0b",
            b"a%00b",
            b"a//b",
            b"",
            b"./a",
            b"\xff\xfe",
        ] {
            let err = from_zip_name(bad).unwrap_err();
            assert!(
                matches!(err, FormatError::HostileName { .. }),
                "{bad:?} gave {err}"
            );
        }
    }

    #[test]
    fn case_folds_for_ascii_and_unicode() {
        assert_eq!(fold_case("Root\\MakeFile"), fold_case("root\\makefile"));
        assert_eq!(fold_case("Ünïcödé"), fold_case("üNÏCÖDÉ"));
        assert_eq!(fold_case("straße"), fold_case("STRASSE"));
        assert_eq!(fold_case("\u{212A}elvin"), fold_case("kelvin"));
        assert_ne!(fold_case("a"), fold_case("b"));
    }

    #[test]
    fn payload_names_mirror_absolute_paths() {
        assert_eq!(
            payload_name(Path::new("opt/foo/bin/foo")).unwrap(),
            "Root\\opt\\foo\\bin\\foo"
        );
        assert_eq!(linux_path("Root\\opt\\foo").unwrap(), "/opt/foo");
        assert_eq!(from_linux_path("/opt/foo").unwrap(), "Root\\opt\\foo");
        assert!(payload_name(Path::new("a\\b")).is_err());
        assert!(is_footprint("appxblockmap.xml"));
        assert!(is_footprint("APPXMETADATA\\codeintegrity.CAT"));
        assert!(
            is_footprint("AppxSıgnature.p7x"),
            "dotless i upper-cases to I"
        );
        assert!(!is_footprint("VFS\\AppxBlockMap.xml"));
    }
}
