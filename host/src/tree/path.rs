//! Znode paths: validation as ZooKeeper's `PathUtils.validatePath` does it,
//! and the storage key that keeps each node's children next to each other.

/// Why a path is not a valid znode path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path must not end with '/'")]
    TrailingSlash,
    #[error("empty node name")]
    EmptyName,
    #[error("relative names '.' and '..' are not allowed")]
    Relative,
    #[error("invalid character U+{0:04X}")]
    BadChar(u32),
}

fn bad_char(c: char) -> bool {
    let c = c as u32;
    c == 0
        || (0x01..=0x1f).contains(&c)
        || (0x7f..=0x9f).contains(&c)
        || (0xd800..=0xf8ff).contains(&c)
        || (0xfff0..=0xffff).contains(&c)
}

/// Checks a full znode path.
pub fn validate(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(PathError::TrailingSlash);
    }
    if let Some(c) = path.chars().find(|&c| bad_char(c)) {
        return Err(PathError::BadChar(c as u32));
    }
    for name in path[1..].split('/') {
        match name {
            "" => return Err(PathError::EmptyName),
            "." | ".." => return Err(PathError::Relative),
            _ => {}
        }
    }
    Ok(())
}

/// Splits a non-root path into (parent, name): `/a/b` gives (`/a`, `b`) and
/// `/a` gives (`/`, `a`). Returns `None` for a path without a `/`.
pub fn split(path: &str) -> Option<(&str, &str)> {
    let slash = path.rfind('/')?;
    let parent = if slash == 0 { "/" } else { &path[..slash] };
    Some((parent, &path[slash + 1..]))
}

/// Joins a parent path and a child name.
pub fn join(parent: &str, name: &str) -> String {
    if parent == "/" { format!("/{name}") } else { format!("{parent}/{name}") }
}

/// The storage key of a valid path: `parent ++ 0x00 ++ name`, and the empty
/// key for the root.
///
/// A valid path holds no NUL, so the first NUL of a key marks where the
/// parent ends, and all children of one parent share the prefix
/// `parent ++ 0x00`: listing them is one ordered range scan.
pub fn key(path: &str) -> Vec<u8> {
    debug_assert!(validate(path).is_ok(), "key of invalid path {path:?}");
    match split(path) {
        None => Vec::new(),
        Some((_, "")) => Vec::new(),
        Some((parent, name)) => {
            let mut k = Vec::with_capacity(path.len() + 1);
            k.extend_from_slice(parent.as_bytes());
            k.push(0);
            k.extend_from_slice(name.as_bytes());
            k
        }
    }
}

/// The key prefix shared by all children of `path`.
pub fn children_prefix(path: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(path.len() + 1);
    k.extend_from_slice(path.as_bytes());
    k.push(0);
    k
}

/// The path a key was made from.
pub fn from_key(key: &[u8]) -> String {
    match key.iter().position(|&b| b == 0) {
        None => "/".to_owned(),
        Some(i) => {
            let parent = String::from_utf8_lossy(&key[..i]);
            let name = String::from_utf8_lossy(&key[i + 1..]);
            join(&parent, &name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_follows_zookeeper() {
        for ok in ["/", "/a", "/a/b", "/zookeeper", "/a.b", "/...", "/ü"] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate(""), Err(PathError::Empty));
        assert_eq!(validate("a"), Err(PathError::NotAbsolute));
        assert_eq!(validate("/a/"), Err(PathError::TrailingSlash));
        assert_eq!(validate("//a"), Err(PathError::EmptyName));
        assert_eq!(validate("/a/./b"), Err(PathError::Relative));
        assert_eq!(validate("/a/.."), Err(PathError::Relative));
        assert_eq!(validate("/a\0b"), Err(PathError::BadChar(0)));
        assert_eq!(validate("/a\nb"), Err(PathError::BadChar(10)));
        assert_eq!(validate("/a\u{fff0}"), Err(PathError::BadChar(0xfff0)));
    }

    #[test]
    fn keys_group_children_and_round_trip() {
        for p in ["/", "/a", "/a/b", "/a/b/c"] {
            assert_eq!(from_key(&key(p)), p);
        }
        let prefix = children_prefix("/a");
        assert!(key("/a/b").starts_with(&prefix));
        assert!(!key("/a/b/c").starts_with(&prefix));
        assert!(!key("/ab").starts_with(&prefix));
        assert_eq!(split("/a/b"), Some(("/a", "b")));
        assert_eq!(split("/a"), Some(("/", "a")));
    }
}
